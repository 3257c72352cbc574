// Every schema of the reprogram_ext op library, forward and backward, in one TORCH_LIBRARY block.
// Each op's kernels are registered per device in csrc/<op>/cpu.cpp and csrc/<op>/cuda.cu
// (TORCH_LIBRARY_IMPL), its autograd in csrc/<op>/autograd.cpp; fake (meta) kernels come from
// Python (reprogram_ext/ops/<op>/autograd.py).
#include <torch/library.h>

#include "runtime/cpu_block_cache.h"


TORCH_LIBRARY(reprogram_ext, m) {
  // Frees the C++ CPU kernels' cache of large output blocks (csrc/runtime/cpu_block_cache.h).
  m.def("empty_cpu_cache() -> ()", &reprogram_ext::empty_cpu_cache);
  // Caps that cache at `megabytes` MiB; 0 (the default) turns it off.
  m.def("set_cpu_cache_limit(int megabytes) -> ()", &reprogram_ext::set_cpu_cache_limit);
  m.def("cpu_cache_bytes() -> int", &reprogram_ext::cpu_cache_bytes);

  // ---- masked_perturb (docs/ops/masked_perturb.md; options: csrc/masked_perturb/options.h and
  // reprogram_ext/ops/masked_perturb/options.py, which holds the same schemas for the Triton ops).
  // Canonical 4-D layout [B, C, H, W]; 1-D signals use H = 1. offsets: (oy, ox) of every copy,
  // flattened; norm: [2, C] = (mean, 1 / std) in the accumulation dtype (float64 for float64 delta,
  // else float32); resize_mode "none" / "nearest" / "bilinear"; normalize "none" / "before" / "after";
  // clamp (lo, hi) or None; bank (last, default False): delta [V, Cd, H, W] holds V programs, each
  // applied to every sample (output [V * B, C, H, W], program-major).
  m.def(
      "masked_perturb_forward(Tensor x, Tensor delta, Tensor? mask, int[] offsets, Tensor norm, int[] resized_size, "
      "str resize_mode, str activation, str blend, str normalize, float[]? clamp, int mask_scale, "
      "bool bank=False) -> Tensor");
  // Returns, in the accumulation dtype,
  //         (grad_delta [Bd, C, H, W] summed over the batch when Bd == 1 or bank (Bd = V),
  //          grad_mask  [Bm, C, H, W] at canvas resolution, summed over the batch when Bm == 1 (and
  //                     over the V programs of a bank),
  //          grad_placed [B, C, H, W]: gradient w.r.t. the raw placed input u, summed over V);
  // an output not asked for by needs = [delta, mask, input] is an empty tensor.
  m.def(
      "masked_perturb_backward(Tensor grad_out, Tensor x, Tensor delta, Tensor? mask, int[] offsets, Tensor norm, "
      "int[] resized_size, str resize_mode, str activation, str blend, str normalize, float[]? clamp, "
      "int mask_scale, bool[3] needs, bool bank=False) -> (Tensor, Tensor, Tensor)");

  // ---- label_map / mapped_cross_entropy (docs/ops/label_map.md): schemas below this line.
  // Canonical form: logits [N, S] contiguous; index int64 [T, K] (-1 pads ragged groups); weight
  // [T, K] in the accumulation dtype (float32, float64 for float64 logits) or None.
  // reduce, pre: option names ("mean", "softmax", ...; the lists: csrc/label_map/options.h and
  // reprogram_ext/ops/label_map/options.py).
  // Forward returns (out [N, T] in logits' dtype, row_lse [N, 2] accumulation dtype: each row's
  // log-sum-exp as (max, log sum exp(x - max)), or [0] when pre is none). Backward returns (grad_logits [N, S] in logits' dtype,
  // grad_weight [T, K] accumulation dtype, or [0] unless need_weight_grad and weight is given).
  // topk: the k of reduce "topk_mean" (>= 1; no weight), 0 for the other reduces.
  m.def(
      "label_map_forward(Tensor logits, Tensor index, Tensor? weight, str reduce, str pre, int topk=0) "
      "-> (Tensor, Tensor)");
  m.def(
      "label_map_backward(Tensor grad_out, Tensor logits, Tensor index, Tensor? weight, Tensor row_lse, "
      "str reduce, str pre, bool need_weight_grad, int topk=0) -> (Tensor, Tensor)");
  // Per-row cross-entropy on the mapped logits. Forward returns (loss [N], 0 where target ==
  // ignore_index; unit_grad [N, T, K]: d loss_n / d x[n, index[t, k]] through entry (t, k) for a
  // unit upstream gradient; dense [N, 3] = (row max, row log-sum, D) with d loss_n / d x[n, j] including
  // -D * softmax(x[n])_j, or [0] when that term vanishes), all in the accumulation dtype.
  // The backward scales them by grad_loss [N]; it reads logits only for the weight gradient or
  // the dense term.
  m.def(
      "mapped_cross_entropy_forward(Tensor logits, Tensor target, Tensor index, Tensor? weight, str reduce, "
      "str pre, float label_smoothing, int ignore_index, int topk=0) -> (Tensor, Tensor, Tensor)");
  m.def(
      "mapped_cross_entropy_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor index, "
      "Tensor? weight, Tensor unit_grad, Tensor dense, str reduce, str pre, float label_smoothing, "
      "int ignore_index, bool need_weight_grad, int topk=0) -> (Tensor, Tensor)");
}
