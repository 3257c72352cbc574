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
  //          grad_mask  [Bm, Cm, ceil(H / s), ceil(W / s)] at mask resolution with the mask's channels
  //                     (Cm = 1: summed over the C canvas channels in order), summed over the batch when
  //                     Bm == 1 (and over the V programs of a bank),
  //          grad_placed [B, C, H, W]: gradient w.r.t. the raw placed input u, summed over V);
  // an output not asked for by needs = [delta, mask, input] is an empty tensor.
  m.def(
      "masked_perturb_backward(Tensor grad_out, Tensor x, Tensor delta, Tensor? mask, int[] offsets, Tensor norm, "
      "int[] resized_size, str resize_mode, str activation, str blend, str normalize, float[]? clamp, "
      "int mask_scale, bool[3] needs, bool bank=False) -> (Tensor, Tensor, Tensor)");

  // ---- perturbation_bank (docs/blackbox.md; options: csrc/perturbation_bank/options.h and
  // reprogram_ext/ops/perturbation_bank/options.py, which holds the same schemas for the Triton ops).
  // Returns [query_stop - query_start, B, C, H, W] in theta's dtype (float32 or float64, the compute
  // dtype): query k applies act(theta + sign_k beta u_{j_k}) through masked_perturb's options (after
  // the bank's own). seed: the 64-bit key as a signed int64.
  m.def(
      "perturbation_bank(Tensor x, Tensor theta, Tensor? mask, int seed, int q, float beta, str directions, "
      "bool antithetic, int query_start, int query_stop, int[] offsets, Tensor norm, int[] resized_size, "
      "str resize_mode, str activation, str blend, str normalize, float[]? clamp, int mask_scale) -> Tensor");
  // out [numel] in weights' dtype: sum_{j=1..q} weights[j-1] u_j (segmented: weights[j-1] / Delta_j).
  m.def("perturbation_bank_combine(Tensor weights, int seed, int numel, str directions) -> Tensor");

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
  // forward_out: the forward's out (optional; the CUDA kernel of reduce sum / mean with pre softmax
  // uses it instead of the mapped logits).
  m.def(
      "label_map_backward(Tensor grad_out, Tensor logits, Tensor index, Tensor? weight, Tensor row_lse, "
      "str reduce, str pre, bool need_weight_grad, int topk=0, Tensor? forward_out=None) -> (Tensor, Tensor)");
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

  // ---- tokens_to_canvas (docs/ops/tokens_to_canvas.md; options: csrc/tokens_to_canvas/options.h and
  // reprogram_ext/ops/tokens_to_canvas/options.py, which holds the same schemas for the Triton ops).
  // cells int64 [B, G] (the token of every grid cell); table [V, C, Ph, Pw]; program / program_mask /
  // base [1|B, 1|C, H, W] in table's dtype or None; norm [4, C] accumulation dtype = (mean, 1 / std,
  // base_weight, patch_weight); geometry (Gh, Gw, oy, ox); canvas (H, W). Forward returns
  // [B, C, H, W] in table's dtype; backward (grad_table [V, C, Ph, Pw], grad_program [Bp, C, H, W],
  // grad_base [Bb, C, H, W]) in the accumulation dtype, an output not asked for by needs an empty tensor.
  m.def(
      "tokens_to_canvas_forward(Tensor cells, Tensor table, Tensor? program, Tensor? program_mask, Tensor? base, "
      "Tensor norm, int[] geometry, int[] canvas, str activation, str normalize, float[]? clamp) -> Tensor");
  m.def(
      "tokens_to_canvas_backward(Tensor grad_out, Tensor cells, Tensor table, Tensor? program, Tensor? program_mask, "
      "Tensor? base, Tensor norm, int[] geometry, int[] canvas, str activation, str normalize, float[]? clamp, "
      "bool[3] needs) -> (Tensor, Tensor, Tensor)");

  // ---- vocab_map (docs/ops/vocab_map.md; options: csrc/vocab_map/options.h and
  // reprogram_ext/ops/vocab_map/options.py). tokens int64 [B, L]; theta [w, V_t, V_s] (odd w);
  // embedding [V_s, D], theta's dtype (float32 / float64); mode "softmax" / "gumbel" /
  // "gumbel_hard" / "none"; seed keys the Gumbel noise; chunk: V_s columns per step.
  // Forward returns (out [B, L, D], stats [N, 2] = (row max of s, Σ exp(s − max)) or [0] for mode
  // none, soft [N, D] (the soft output) or [0] unless gumbel_hard, hard_index int64 [N] or [0]
  // unless gumbel_hard), N = B·L. Backward returns (grad_theta [w, V_t, V_s], grad_embedding
  // [V_s, D] or [0] unless need_embedding_grad).
  m.def(
      "vocab_map_forward(Tensor tokens, Tensor theta, Tensor embedding, float tau, str mode, int seed, int chunk) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "vocab_map_backward(Tensor grad_out, Tensor tokens, Tensor theta, Tensor embedding, Tensor out, "
      "Tensor stats, Tensor soft, Tensor hard_index, float tau, str mode, int seed, int chunk, "
      "bool need_embedding_grad) -> (Tensor, Tensor)");
}
