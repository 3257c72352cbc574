// Host-side checks of masked_perturb's canonical 4-D arguments and their unpacking into the
// plain structs the CPU and CUDA kernels take. The Python front end (reprogram_ext/ops/masked_perturb/
// args.py) validates the user's arguments; these checks guard direct C++ / torch.ops callers against
// out-of-bounds access (the Triton launcher has the same guards in Python).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <array>
#include <tuple>

#include "masked_perturb/specialize.h"

namespace reprogram_ext {

struct MaskedPerturbArgs {
  int64_t B, C, H, W;  // canvas (B samples; the output has V * B rows)
  int64_t Cx;          // input channels (1 = grey, repeated over C)
  int64_t Bd, Bm;      // delta / mask batch size (1 = shared by the batch; Bd = V for a prompt bank)
  int64_t Cm;          // mask channels (1 = one mask for every channel, or C; 1 without a mask)
  int64_t V;           // programs of a prompt bank (1 without one): output row v * B + b
  bool delta_per_sample;  // delta [B, Cd, H, W], one program per sample (Bd > 1 and no bank)
  bool has_mask;
  Strides4 sx, sd, sm;  // element strides, 0 on broadcast dimensions
  Placement pl;
  Pointwise pw;
};

// The dtype masked_perturb computes, normalises and accumulates in (norm's and the gradient
// partials' dtype): float64 for float64 tensors, float32 for float32 / float16 / bfloat16.
inline at::ScalarType masked_perturb_acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline Strides4 broadcast_strides(const at::Tensor& t) {
  auto st = [&](int d) { return t.size(d) == 1 ? int64_t(0) : t.stride(d); };
  return Strides4{st(0), st(1), st(2), st(3)};
}

inline MaskedPerturbArgs make_masked_perturb_args(const at::Tensor& x, const at::Tensor& delta,
                                                  const std::optional<at::Tensor>& mask, const at::Tensor& norm,
                                                  const MaskedPerturbOptions& o) {
  const int64_t mask_scale = o.mask_scale;
  TORCH_CHECK(x.dim() == 4, "masked_perturb: x must be [B, Cx, H, W], got ", x.sizes());
  TORCH_CHECK(delta.dim() == 4, "masked_perturb: delta must be [Bd, Cd, H, W], got ", delta.sizes());
  TORCH_CHECK(at::isFloatingType(delta.scalar_type()), "masked_perturb: delta must be floating, got ",
              delta.scalar_type());
  TORCH_CHECK(x.scalar_type() == delta.scalar_type() || x.scalar_type() == at::kByte,
              "masked_perturb: x must have delta's dtype (", delta.scalar_type(), ") or uint8, got ",
              x.scalar_type());
  TORCH_CHECK(x.device() == delta.device(), "masked_perturb: x and delta are on different devices");

  MaskedPerturbArgs a;
  a.B = x.size(0);
  a.Cx = x.size(1);
  a.Bd = delta.size(0);
  a.C = delta.size(1);
  a.H = delta.size(2);
  a.W = delta.size(3);
  if (a.C == 1) a.C = a.Cx;
  TORCH_CHECK(a.Cx == 1 || a.Cx == a.C, "masked_perturb: x has ", a.Cx, " channels, expected 1 or ", a.C);
  TORCH_CHECK(o.bank || a.Bd == 1 || a.Bd == a.B, "masked_perturb: delta batch must be 1 or ", a.B, ", got ", a.Bd,
              " (a prompt bank of V programs takes bank=True)");
  a.V = o.bank ? a.Bd : 1;
  a.delta_per_sample = !o.bank && a.Bd > 1;
  a.sx = broadcast_strides(x);
  a.sd = broadcast_strides(delta);
  a.has_mask = mask.has_value();
  a.Bm = 1;
  a.Cm = 1;
  a.sm = Strides4{0, 0, 0, 0};
  if (a.has_mask) {
    const at::Tensor& mk = *mask;
    TORCH_CHECK(mk.dim() == 4, "masked_perturb: mask must be [Bm, Cm, Hm, Wm], got ", mk.sizes());
    TORCH_CHECK(mk.scalar_type() == delta.scalar_type(), "masked_perturb: mask must have delta's dtype");
    TORCH_CHECK(mk.device() == delta.device(), "masked_perturb: mask and delta are on different devices");
    const int64_t Hm = (a.H + mask_scale - 1) / mask_scale, Wm = (a.W + mask_scale - 1) / mask_scale;
    TORCH_CHECK((mk.size(0) == 1 || mk.size(0) == a.B) && (mk.size(1) == 1 || mk.size(1) == a.C) &&
                    (mk.size(2) == 1 || mk.size(2) == Hm) && (mk.size(3) == 1 || mk.size(3) == Wm),
                "masked_perturb: mask ", mk.sizes(), " does not broadcast to [", a.B, ", ", a.C, ", ", Hm, ", ", Wm,
                "]");
    a.Bm = mk.size(0);
    a.Cm = mk.size(1);
    a.sm = broadcast_strides(mk);
  }
  const at::ScalarType acc = masked_perturb_acc_type(delta.scalar_type());
  TORCH_CHECK(norm.scalar_type() == acc && norm.dim() == 2 && norm.size(0) == 2 && norm.size(1) == a.C &&
                  norm.is_contiguous() && norm.device() == delta.device(),
              "masked_perturb: norm must be a contiguous ", acc, " [2, ", a.C, "] tensor on delta's device, got ",
              norm.scalar_type(), " ", norm.sizes());
  a.pl.Hin = x.size(2);
  a.pl.Win = x.size(3);
  a.pl.Hr = o.resized_size[0];
  a.pl.Wr = o.resized_size[1];
  TORCH_CHECK(a.pl.Hr >= 0 && a.pl.Wr >= 0, "masked_perturb: negative resized_size");
  if (o.resize_mode == ResizeMode::kNone) {
    TORCH_CHECK(a.pl.Hr == a.pl.Hin && a.pl.Wr == a.pl.Win, "masked_perturb: resized_size must equal x's size "
                "when resize_mode is none");
  } else {
    TORCH_CHECK(a.pl.Hin > 0 && a.pl.Win > 0, "masked_perturb: cannot resize an empty input");
  }
  a.pl.resize_mode = o.resize_mode;
  a.pl.bilinear_runs = o.resize_mode == ResizeMode::kBilinear && a.sx.w == 1 &&
                       (acc == at::kDouble ? bilinear_window_fits<double>(a.pl.Win, a.pl.Wr, kBilinearRun)
                                           : bilinear_window_fits<float>(a.pl.Win, a.pl.Wr, kBilinearRun));
  a.pl.num_copies = static_cast<int64_t>(o.offsets.size() / 2);
  a.pl.offsets = o.offsets.data();  // host memory owned by o: the CUDA op points this at a device copy
  a.pw.activation = o.activation;
  a.pw.blend = o.blend;
  a.pw.normalize_before = o.normalize == Normalize::kBefore;
  a.pw.normalize_after = o.normalize == Normalize::kAfter;
  a.pw.has_clamp = o.clamp.has_value();
  a.pw.clamp_lo = o.clamp ? (*o.clamp)[0] : 0.0;
  a.pw.clamp_hi = o.clamp ? (*o.clamp)[1] : 0.0;
  a.pw.mask_scale = mask_scale;
  return a;
}

// Calls f(scalar_t{}, x_t{}) for delta's dtype scalar_t (float16/bfloat16/float32/float64) and
// x_t = scalar_t or uint8: the dtype pairs every masked_perturb kernel is instantiated for.
template <typename F>
void dispatch_masked_perturb_types(const at::Tensor& x, const at::Tensor& delta, F&& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, delta.scalar_type(), "masked_perturb", [&] {
    if (x.scalar_type() == at::kByte) {
      f(scalar_t(), uint8_t());
    } else {
      f(scalar_t(), scalar_t());
    }
  });
}

// The outputs of masked_perturb_backward, in the accumulation dtype acc_t (masked_perturb_acc_type:
// float32, or float64 for float64 tensors), as the kernels fill them:
//   delta  [delta_per_sample ? B : V * chunks, C, H, W]  per-sample gradient, or one partial sum per
//                                           (program v, batch chunk j) at row v * chunks + j
//   mask   per-sample mask (Bm > 1): [B, C, Hm, Wm] at mask resolution (Hm = ceil(H / s),
//          Wm = ceil(W / s), s = mask_scale), each cell the sum over its canvas footprint
//          (mask_footprint, math.h), summed over V; shared mask (Bm == 1): [chunks, C, H, W] partial
//          sums at canvas resolution, which finish_masked_perturb_grads sums over the chunks and then
//          over each footprint (mask_patch_sums)
//   placed [B, C, H, W]                    gradient w.r.t. the raw placed input u, summed over V
// An output not asked for is an empty tensor (and its pointer for the kernel is null). The op returns
// the mask gradient at mask resolution with the mask's channels, [Bm, Cm, Hm, Wm]: a one-channel mask's
// (Cm = 1 < C) summed over the canvas channels in order (sum_mask_channels; CUDA's fused cell kernel
// writes that sum itself, in the same order).
struct MaskedPerturbGrads {
  at::Tensor delta, mask, placed;
  int64_t chunks;  // reduction_chunks(B, C * H * W): batch chunks of the delta / mask sums

  template <typename acc_t> acc_t* delta_ptr() { return delta.numel() ? delta.mutable_data_ptr<acc_t>() : nullptr; }
  template <typename acc_t> acc_t* mask_ptr() { return mask.numel() ? mask.mutable_data_ptr<acc_t>() : nullptr; }
  template <typename acc_t> acc_t* placed_ptr() { return placed.numel() ? placed.mutable_data_ptr<acc_t>() : nullptr; }
};

// Whether the output is empty (no sample, or a bank of no program): every gradient is zero.
inline bool masked_perturb_grads_empty(const MaskedPerturbArgs& A) { return A.B == 0 || A.V == 0; }

// Mask resolution of the canvas: (ceil(H / s), ceil(W / s)), s = mask_scale.
inline std::array<int64_t, 2> mask_resolution(const MaskedPerturbArgs& A) {
  const int64_t s = A.pw.mask_scale;
  return {(A.H + s - 1) / s, (A.W + s - 1) / s};
}

// [N, C, H, W] canvas-resolution mask gradient -> [N, C, ceil(H / s), ceil(W / s)]: each cell the sum
// over its s x s footprint (cropped at the canvas edge). A fixed aten reduction: deterministic.
inline at::Tensor mask_patch_sums(at::Tensor gm, int64_t s) {
  if (s == 1) return gm;
  const int64_t H = gm.size(2), W = gm.size(3), Hm = (H + s - 1) / s, Wm = (W + s - 1) / s;
  gm = at::constant_pad_nd(gm, {0, Wm * s - W, 0, Hm * s - H});
  return gm.reshape({gm.size(0), gm.size(1), Hm, s, Wm, s}).sum({3, 5});
}

// Whether the mask gradient is summed over the canvas channels: a one-channel mask on a canvas of C > 1.
inline bool mask_channel_sum(const MaskedPerturbArgs& A) { return A.has_mask && A.Cm == 1 && A.C > 1; }

// [N, C, ...] -> [N, 1, ...]: g[:, 0] + g[:, 1] + ... + g[:, C - 1], added in channel order from channel 0
// (the order masked_perturb_cell_backward_kernel uses: the same bits). Deterministic.
inline at::Tensor sum_channels_in_order(const at::Tensor& g) {
  at::Tensor total = g.narrow(1, 0, 1);
  for (int64_t c = 1; c < g.size(1); ++c) total = total + g.narrow(1, c, 1);
  return total.contiguous();
}

// The op's mask gradient with the mask's channels: sum_channels_in_order when mask_channel_sum(A) and g
// still has the canvas's C channels (empty / already summed: unchanged).
inline at::Tensor sum_mask_channels(const MaskedPerturbArgs& A, at::Tensor g) {
  return mask_channel_sum(A) && g.dim() == 4 && g.size(1) == A.C ? sum_channels_in_order(g) : g;
}

// Checks grad_out against the canvas and allocates the gradients the kernels write (zeros of the
// final shape when the batch or the bank is empty: masked_perturb_grads_empty, no kernel runs).
inline MaskedPerturbGrads allocate_masked_perturb_grads(const MaskedPerturbArgs& A, const at::Tensor& grad_out,
                                                        const at::Tensor& delta, std::array<bool, 3> needs) {
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({A.V * A.B, A.C, A.H, A.W}) &&
                  grad_out.scalar_type() == delta.scalar_type() && grad_out.device() == delta.device(),
              "masked_perturb_backward: grad_out must be [", A.V * A.B, ", ", A.C, ", ", A.H, ", ", A.W,
              "] of delta's dtype on delta's device, got ", grad_out.sizes(), " ", grad_out.scalar_type());
  const auto f32 = delta.options().dtype(masked_perturb_acc_type(delta.scalar_type()));
  const bool need_mask = needs[1] && A.has_mask;
  MaskedPerturbGrads g;
  g.chunks = reduction_chunks(A.B, A.C * A.H * A.W);
  g.delta = needs[0] ? at::empty({A.delta_per_sample ? A.B : A.V * g.chunks, A.C, A.H, A.W}, f32)
                     : at::empty({0}, f32);
  const auto [Hm, Wm] = mask_resolution(A);
  if (!need_mask) {
    g.mask = at::empty({0}, f32);
  } else if (A.Bm > 1) {
    g.mask = at::empty({A.B, A.C, Hm, Wm}, f32);
  } else {
    g.mask = at::empty({g.chunks, A.C, A.H, A.W}, f32);
  }
  g.placed = needs[2] ? at::empty({A.B, A.C, A.H, A.W}, f32) : at::empty({0}, f32);
  if (masked_perturb_grads_empty(A)) {
    if (needs[0]) g.delta = at::zeros({A.Bd, A.C, A.H, A.W}, f32);
    if (need_mask) g.mask = at::zeros({A.Bm, A.Cm, Hm, Wm}, f32);
    if (needs[2]) g.placed = at::zeros({A.B, A.C, A.H, A.W}, f32);
  }
  return g;
}

// After the kernel: sums the batch-chunk partials of a shared (batch-1) delta / mask gradient
// in a fixed order (deterministic), giving [1, C, H, W] ([V, C, H, W] for a prompt bank), and takes
// a shared mask's gradient to mask resolution [1, C, Hm, Wm] (mask_patch_sums); a one-channel mask's
// then summed over the channels (sum_mask_channels): [Bm, Cm, Hm, Wm].
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> finish_masked_perturb_grads(const MaskedPerturbArgs& A,
                                                                                  MaskedPerturbGrads g) {
  if (masked_perturb_grads_empty(A)) return {g.delta, g.mask, g.placed};
  if (g.chunks > 1) {
    if (g.delta.numel() && A.V > 1) g.delta = g.delta.view({A.V, g.chunks, A.C, A.H, A.W}).sum(1);
    if (g.delta.numel() && A.Bd == 1) g.delta = g.delta.sum(0, /*keepdim=*/true);
    if (g.mask.numel() && A.Bm == 1) g.mask = g.mask.sum(0, /*keepdim=*/true);
  }
  if (g.mask.dim() == 4 && A.Bm == 1) g.mask = mask_patch_sums(g.mask, A.pw.mask_scale);  // not asked for: 1-D
  return {g.delta, sum_mask_channels(A, g.mask), g.placed};
}

}  // namespace reprogram_ext
