// Per-element math and index arithmetic of masked_perturb, shared by the C++ CPU kernels and the
// CUDA kernels (every function is __host__ __device__), so the CPU build executes the code the GPU
// runs (docs/ops/masked_perturb.md has the formula; options: options.h, activation.h).
//
// For output element (b, c, h, w) of the canvas [B, C, H, W] (1-D signals use H = 1):
//   u  = sum over copies k covering (h, w) of  X[b, c, h - oy_k, w - ox_k]
//        where X = resize(x / (255 if uint8), (Hr, Wr)) with the input channel c (or 0 if Cx = 1)
//   u  = (u - mean_c) * inv_std_c   if normalize_before and some copy covers (h, w)
//   a  = act(delta[b?, c?, h, w]),   m = mask[b?, c?, h / s, w / s]   (s = mask_scale)
//   v  = u + m*a                     (blend add)
//   v  = (1 - m)*u + m*a             (blend replace)
//   v  = min(max(v, lo), hi)         (clamp)
//   out = (v - mean_c) * inv_std_c   if normalize_after, else v
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>

#include "masked_perturb/options.h"

namespace reprogram_ext {

#define RX_HD C10_HOST_DEVICE inline

// Accumulation type: float for float/half/bfloat16, double for double.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_type_t = typename AccType<T>::type;

// Element strides of a [B, C, H, W] view; a size-1 (broadcast) dimension gets stride 0.
struct Strides4 {
  int64_t b, c, h, w;
  RX_HD int64_t at(int64_t ib, int64_t ic, int64_t ih, int64_t iw) const {
    return ib * b + ic * c + ih * h + iw * w;
  }
};

// Where and how the input is placed on the canvas.
struct Placement {
  int64_t Hin, Win;        // input spatial size
  int64_t Hr, Wr;          // size after resize (== Hin, Win without resize)
  ResizeMode resize_mode;
  int64_t num_copies;      // offsets holds num_copies (oy, ox) pairs
  const int64_t* offsets;  // canvas position of each copy's element (0, 0)
  // Bilinear: x columns of unit stride, and every kBilinearRun consecutive resized columns take their
  // taps from a three-column window (bilinear_window_fits of specialize.h): the CPU rows then
  // gather runs of kBilinearRun columns with bilinear_run_values, as the CUDA kernels do.
  bool bilinear_runs = false;
};
// Columns per CPU bilinear run (the CUDA kernels' VEC for float32).
constexpr int kBilinearRun = 4;

// Options of the pointwise part (steps 1-5 of the SPEC formula).
struct Pointwise {
  Activation activation;
  Blend blend;
  bool normalize_before;
  bool normalize_after;
  bool has_clamp;
  double clamp_lo, clamp_hi;
  int64_t mask_scale;
};

template <typename acc_t, typename x_t>
RX_HD acc_t load_input(const x_t* p, int64_t i) {
  return static_cast<acc_t>(p[i]);
}
// uint8 input: float(x) / 255 correctly rounded (torch: uint8 -> float32, then / 255). The host
// divides; the device computes the same quotient without the IEEE division's slow-path subroutine:
// q = RN(x * r) with r = RN(1 / 255), e = x - q * 255 (exact in one fma), q + e * r in one fma.
// Correctly rounded for all 256 inputs (tests/test_masked_perturb_uint8_exact.py checks each one
// in exact rational arithmetic).
template <>
RX_HD float load_input<float, uint8_t>(const uint8_t* p, int64_t i) {
  const float x = static_cast<float>(p[i]);
#ifdef __CUDA_ARCH__
  const float r = 1.0f / 255.0f;  // a constant: 0x3b808081
  const float q = __fmul_rn(x, r);
  return __fmaf_rn(__fmaf_rn(-q, 255.0f, x), r, q);
#else
  return x / 255.0f;
#endif
}
template <>
RX_HD double load_input<double, uint8_t>(const uint8_t* p, int64_t i) {
  return static_cast<double>(p[i]) / 255.0;
}

// torch.nn.functional.interpolate(mode="nearest") source index: floor(dst * (in / out)) in float.
RX_HD int64_t nearest_source_index(int64_t dst, int64_t in_size, int64_t out_size) {
  if (in_size == out_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const int64_t src = static_cast<int64_t>(floorf(static_cast<float>(dst) * scale));
  return src < in_size - 1 ? src : in_size - 1;
}

// torch.nn.functional.interpolate(mode="bilinear", align_corners=False) along one axis:
// src = max((dst + 0.5) * in / out - 0.5, 0); i0 = floor(src); i1 = i0 + (i0 < in - 1);
// weights (1 - l, l) with l = src - i0.
template <typename acc_t>
struct LinearTap {
  int64_t i0, i1;
  acc_t l0, l1;
};
template <typename acc_t>
RX_HD LinearTap<acc_t> linear_source(int64_t dst, int64_t in_size, int64_t out_size) {
  const acc_t scale = static_cast<acc_t>(in_size) / static_cast<acc_t>(out_size);
  acc_t src = scale * (static_cast<acc_t>(dst) + static_cast<acc_t>(0.5)) - static_cast<acc_t>(0.5);
  if (src < 0) src = 0;
  LinearTap<acc_t> t;
  t.i0 = static_cast<int64_t>(src);
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.l1 = src - static_cast<acc_t>(t.i0);
  t.l0 = static_cast<acc_t>(1) - t.l1;
  return t;
}

// Value of the resized input at (y, x), 0 <= y < Hr, 0 <= x < Wr; x_bc points at x[b, c_in].
template <typename acc_t, typename x_t>
RX_HD acc_t sample_input(const x_t* x_bc, const Strides4& sx, const Placement& pl, int64_t y, int64_t x) {
  if (pl.resize_mode == ResizeMode::kNone) {
    return load_input<acc_t>(x_bc, y * sx.h + x * sx.w);
  }
  if (pl.resize_mode == ResizeMode::kNearest) {
    const int64_t sy = nearest_source_index(y, pl.Hin, pl.Hr);
    const int64_t sxi = nearest_source_index(x, pl.Win, pl.Wr);
    return load_input<acc_t>(x_bc, sy * sx.h + sxi * sx.w);
  }
  const LinearTap<acc_t> ty = linear_source<acc_t>(y, pl.Hin, pl.Hr);
  const LinearTap<acc_t> tx = linear_source<acc_t>(x, pl.Win, pl.Wr);
  const acc_t v00 = load_input<acc_t>(x_bc, ty.i0 * sx.h + tx.i0 * sx.w);
  const acc_t v01 = load_input<acc_t>(x_bc, ty.i0 * sx.h + tx.i1 * sx.w);
  const acc_t v10 = load_input<acc_t>(x_bc, ty.i1 * sx.h + tx.i0 * sx.w);
  const acc_t v11 = load_input<acc_t>(x_bc, ty.i1 * sx.h + tx.i1 * sx.w);
  return ty.l0 * (tx.l0 * v00 + tx.l1 * v01) + ty.l1 * (tx.l0 * v10 + tx.l1 * v11);
}

// u at canvas (h, w): the sum of every copy covering it; *covered tells whether any does.
template <typename acc_t, typename x_t>
RX_HD acc_t placed_input(const x_t* x_bc, const Strides4& sx, const Placement& pl, int64_t h, int64_t w,
                         bool* covered) {
  acc_t u = 0;
  bool any = false;
  for (int64_t k = 0; k < pl.num_copies; ++k) {
    const int64_t y = h - pl.offsets[2 * k];
    const int64_t x = w - pl.offsets[2 * k + 1];
    if (y >= 0 && y < pl.Hr && x >= 0 && x < pl.Wr) {
      u += sample_input<acc_t>(x_bc, sx, pl, y, x);
      any = true;
    }
  }
  *covered = any;
  return u;
}

// Per-channel constants of the pointwise formula (identity values when an option is off, so the
// element functions are branch-free: (v - 0) * 1 == v exactly).
template <typename acc_t>
struct ChannelConstants {
  acc_t before_mean, before_inv_std;  // normalize_before
  acc_t after_mean, after_inv_std;    // normalize_after
  acc_t lo, hi;                       // clamp (-inf, +inf when off)
  acc_t replace;                      // 1 for blend replace, 0 for add
};

// norm: [2, C] = (mean, 1 / std) in the accumulation dtype (float64 for float64 tensors: the
// constants are never rounded to float32 there).
template <typename acc_t>
RX_HD ChannelConstants<acc_t> channel_constants(const Pointwise& pw, const acc_t* norm, int64_t C, int64_t c) {
  ChannelConstants<acc_t> k;
  const acc_t mean = norm[c];
  const acc_t inv_std = norm[C + c];
  k.before_mean = pw.normalize_before ? mean : static_cast<acc_t>(0);
  k.before_inv_std = pw.normalize_before ? inv_std : static_cast<acc_t>(1);
  k.after_mean = pw.normalize_after ? mean : static_cast<acc_t>(0);
  k.after_inv_std = pw.normalize_after ? inv_std : static_cast<acc_t>(1);
  k.lo = pw.has_clamp ? static_cast<acc_t>(pw.clamp_lo) : -static_cast<acc_t>(INFINITY);
  k.hi = pw.has_clamp ? static_cast<acc_t>(pw.clamp_hi) : static_cast<acc_t>(INFINITY);
  k.replace = pw.blend == Blend::kReplace ? static_cast<acc_t>(1) : static_cast<acc_t>(0);
  return k;
}

// Input value after normalize_before (applied only where a copy covers the position).
template <typename acc_t>
RX_HD acc_t normalized_input(acc_t u, bool covered, const ChannelConstants<acc_t>& k) {
  return covered ? (u - k.before_mean) * k.before_inv_std : u;
}

// v of steps 3-4: blend then clamp (NaN passes through, as torch.clamp does).
template <typename acc_t>
RX_HD acc_t blend_clamp(acc_t u, acc_t a, acc_t m, const ChannelConstants<acc_t>& k) {
  acc_t v = (static_cast<acc_t>(1) - m * k.replace) * u + m * a;
  v = v < k.lo ? k.lo : v;
  v = v > k.hi ? k.hi : v;
  return v;
}

// The output element, from the raw placed input u, activated delta a and mask value m.
template <typename acc_t>
RX_HD acc_t perturb_element(acc_t u, bool covered, acc_t a, acc_t m, const ChannelConstants<acc_t>& k) {
  const acc_t v = blend_clamp(normalized_input(u, covered, k), a, m, k);
  return (v - k.after_mean) * k.after_inv_std;
}

// Gradients of one output element with respect to a (before the activation derivative), m and
// the raw placed input u. Clamp passes gradient only where lo <= v <= hi (torch.clamp's rule).
template <typename acc_t>
struct ElementGrads {
  acc_t ga, gm, gu;
};
template <typename acc_t>
RX_HD ElementGrads<acc_t> perturb_element_backward(acc_t g, acc_t u, bool covered, acc_t a, acc_t m,
                                                   const ChannelConstants<acc_t>& k) {
  const acc_t un = normalized_input(u, covered, k);
  acc_t gv = g * k.after_inv_std;
  const acc_t v = (static_cast<acc_t>(1) - m * k.replace) * un + m * a;
  if (!(v >= k.lo && v <= k.hi)) gv = 0;
  ElementGrads<acc_t> r;
  r.ga = gv * m;
  r.gm = gv * (a - un * k.replace);
  const acc_t gun = gv * (static_cast<acc_t>(1) - m * k.replace);
  r.gu = covered ? gun * k.before_inv_std : static_cast<acc_t>(0);
  return r;
}

// The gradients of the linear case (blend add, no clamp, delta and mask shared by the batch, no input
// gradient), from G = the batch sum of grad_out at a position: grad_delta = inv_std * G * m * act'(delta)
// (y = m, z = act'(delta)), grad_mask = inv_std * G * act(delta) (y = act(delta), z = 1); inv_std = 1
// without normalize="after". Left to right, the same products on every compiled backend's linear path.
template <typename acc_t>
RX_HD acc_t linear_gradient(acc_t inv_std, acc_t G, acc_t y, acc_t z) {
  return inv_std * G * y * z;
}

// The canvas positions [begin, end) of mask index q along an axis of n canvas positions, mask_scale s:
// the footprint of a mask cell is begin = q * s .. end = min(n, q * s + s) - 1 on each axis. A mask cell's
// gradient is the sum of the element mask gradients over its footprint, in one fixed order on every
// compiled backend: each footprint row left to right from 0, then the row sums top to bottom from 0.
template <typename index_t>
struct Footprint {
  index_t begin, end;
};
template <typename index_t>
RX_HD Footprint<index_t> mask_footprint(index_t q, index_t s, index_t n) {
  const index_t begin = q * s;
  return Footprint<index_t>{begin, begin + s < n ? begin + s : n};
}

// Batch chunks of the deterministic batch reduction in the backward pass: a function of the
// shape only (never of the thread count), so CPU and CUDA reduce in the same order.
RX_HD int64_t reduction_chunks(int64_t B, int64_t positions) {
  if (B <= 1 || positions <= 0) return 1;
  const int64_t target = 1 << 16;  // aim for ~64k independent (chunk, position) work items
  int64_t n = (target + positions - 1) / positions;
  if (n > B) n = B;
  return n < 1 ? 1 : n;
}
RX_HD int64_t chunk_begin(int64_t B, int64_t chunks, int64_t j) { return (B * j) / chunks; }

}  // namespace reprogram_ext
