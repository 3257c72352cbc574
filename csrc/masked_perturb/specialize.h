// Compile-time specialisations of masked_perturb's element math and the hoisted index helpers,
// shared by the C++ CPU kernels (cpu.cpp) and the CUDA kernels (cuda.cu): every function is
// __host__ __device__, so the CPU tests execute the code the GPU runs.
//
// - PointwiseSpec: the pointwise part of the formula (math.h) with the options fixed at compile
//   time (blend add, no clamp, normalize none / before / after), or DynamicPointwise (every option
//   from ChannelConstants, the identity values of an option that is off). Both give the same bits:
//   an option that is off contributes (v - 0) * 1, min(max(v, -inf), inf) or (1 - m * 0) * u, all
//   exact (except that add with m = +-inf no longer turns u into NaN through inf * 0).
// - FastDivmod: n / d and n % d for 32-bit index values without a division instruction.
// - nearest_source / linear_tap / bilinear_value: the resize lookups of math.h with the scale
//   in / out computed once (per call on the host, per launch on the device) instead of per element.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "masked_perturb/math.h"

namespace reprogram_ext {

// ---------------------------------------------------------------------------------------------
// Pointwise variants
// ---------------------------------------------------------------------------------------------

// Blend add, no clamp, normalize N (the configurations of ILM-VP, AutoVP, SMM, Voice2Series).
template <Normalize N>
struct AddPointwise {
  static constexpr bool kDynamic = false;
  static constexpr Normalize kNormalize = N;
};
// Any blend, clamp and normalize, read from ChannelConstants.
struct DynamicPointwise {
  static constexpr bool kDynamic = true;
  static constexpr Normalize kNormalize = Normalize::kNone;
};

// a * b + c: on the device one fma (the contraction nvcc applies to these expressions anyway, made
// explicit so that hoisting a shared product -- e.g. m * a, the same for every sample of a thread --
// cannot split it into a multiply and an add and change the bits); on the host the C++ expression
// as before (no contraction: -std=c++20, ISO).
template <typename acc_t>
RX_HD acc_t mul_add(acc_t a, acc_t b, acc_t c) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<acc_t, float>) return __fmaf_rn(a, b, c);
  else return __fma_rn(a, b, c);
#else
  return a * b + c;
#endif
}

// The two halves of a fixed variant's output element (perturb_value): the placed input's term of
// a covered position, (u - mean) * inv_std under normalize before, else u; and the element from
// the term t (t = u = 0 off the copies): v = t + m * a, then (v - mean) * inv_std under normalize
// after. The CUDA window gather calls them apart (the term, then zero bits off the copy).
template <class P, typename acc_t>
RX_HD acc_t placed_term(acc_t u, const ChannelConstants<acc_t>& k) {
  if constexpr (P::kNormalize == Normalize::kBefore) return (u - k.before_mean) * k.before_inv_std;
  else return u;
}
template <class P, typename acc_t>
RX_HD acc_t perturb_from_term(acc_t t, acc_t a, acc_t m, const ChannelConstants<acc_t>& k) {
  acc_t v = mul_add<acc_t>(m, a, t);  // t + m * a
  if constexpr (P::kNormalize == Normalize::kAfter) v = (v - k.after_mean) * k.after_inv_std;
  return v;
}

// The output element (perturb_element of math.h) under pointwise variant P.
template <class P, typename acc_t>
RX_HD acc_t perturb_value(acc_t u, bool covered, acc_t a, acc_t m, const ChannelConstants<acc_t>& k) {
  if constexpr (P::kDynamic) {
    return perturb_element<acc_t>(u, covered, a, m, k);
  } else {
    return perturb_from_term<P, acc_t>(covered ? placed_term<P, acc_t>(u, k) : u, a, m, k);
  }
}

// Calls f(P{}) with the compile-time pointwise variant of these options.
template <typename F>
decltype(auto) dispatch_pointwise(const Pointwise& pw, F&& f) {
  if (pw.blend == Blend::kAdd && !pw.has_clamp) {
    if (pw.normalize_before) return f(AddPointwise<Normalize::kBefore>{});
    if (pw.normalize_after) return f(AddPointwise<Normalize::kAfter>{});
    return f(AddPointwise<Normalize::kNone>{});
  }
  return f(DynamicPointwise{});
}

// ---------------------------------------------------------------------------------------------
// Index helpers
// ---------------------------------------------------------------------------------------------

// q = n / d and r = n - q * d for 0 <= n < 2^31, 1 <= d < 2^31: q = (umulhi(n, m) + n) >> s with
// s = ceil(log2 d), m = floor(2^32 * (2^s - d) / d) + 1 (the round-up method of Granlund and
// Montgomery, as in PyTorch's IntDivider). t = umulhi(n, m) <= n, so t + n < 2^32 does not wrap.
struct FastDivmod {
  uint32_t d = 1, m = 1, s = 0;
  FastDivmod() = default;
  explicit FastDivmod(uint32_t divisor) : d(divisor) {
    while (s < 32 && (uint64_t(1) << s) < divisor) ++s;
    m = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << s) - divisor)) / divisor + 1);
  }
  RX_HD uint32_t div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t t = __umulhi(n, m);
#else
    const uint32_t t = static_cast<uint32_t>((static_cast<uint64_t>(n) * m) >> 32);
#endif
    return (t + n) >> s;
  }
  RX_HD uint32_t mod(uint32_t n, uint32_t q) const { return n - q * d; }
};

// nearest_source_index (math.h) with scale = float(in) / float(out) given.
template <typename index_t>
RX_HD index_t nearest_source(index_t dst, index_t in_size, index_t out_size, float scale) {
  if (in_size == out_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  const index_t src = static_cast<index_t>(floorf(static_cast<float>(dst) * scale));
  return src < in_size - 1 ? src : in_size - 1;
}

// linear_source (math.h) with scale = acc_t(in) / acc_t(out) given.
template <typename acc_t, typename index_t>
struct Tap {
  index_t i0, i1;
  acc_t l0, l1;
};
template <typename acc_t, typename index_t>
RX_HD Tap<acc_t, index_t> linear_tap(index_t dst, index_t in_size, acc_t scale) {
  acc_t src = scale * (static_cast<acc_t>(dst) + static_cast<acc_t>(0.5)) - static_cast<acc_t>(0.5);
  if (src < 0) src = 0;
  Tap<acc_t, index_t> t;
  t.i0 = static_cast<index_t>(src);
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.l1 = src - static_cast<acc_t>(t.i0);
  t.l0 = static_cast<acc_t>(1) - t.l1;
  return t;
}

// Bilinear value from the two source rows r0 = x_bc + ty.i0 * sh, r1 = x_bc + ty.i1 * sh
// (sample_input of math.h, same expression).
template <typename acc_t, typename x_t, typename index_t>
RX_HD acc_t bilinear_value(const x_t* r0, const x_t* r1, index_t sw, const Tap<acc_t, index_t>& ty,
                           const Tap<acc_t, index_t>& tx) {
  const acc_t v00 = load_input<acc_t>(r0, tx.i0 * sw);
  const acc_t v01 = load_input<acc_t>(r0, tx.i1 * sw);
  const acc_t v10 = load_input<acc_t>(r1, tx.i0 * sw);
  const acc_t v11 = load_input<acc_t>(r1, tx.i1 * sw);
  return ty.l0 * (tx.l0 * v00 + tx.l1 * v01) + ty.l1 * (tx.l0 * v10 + tx.l1 * v11);
}

// ---------------------------------------------------------------------------------------------
// Bilinear runs: N consecutive resized columns from a three-column window
// ---------------------------------------------------------------------------------------------
// An upscale's consecutive outputs share source columns. When the column taps i0 of any N
// consecutive resized columns take at most two consecutive values (bilinear_window_fits, checked on
// the host for the call's sizes), the N outputs of columns xw0 .. xw0 + N - 1 read only the source
// columns base, base + 1, base + 2 (base = i0 at xw0; clamped to the row's last column like i1) of
// each source row: 6 loads instead of 4 N, and each output picks its two taps with a select.
// The taps are linear_tap's (same bits); the blend runs vertically first (bilinear_run_values).

RX_HD float trunc_value(float v) { return truncf(v); }
RX_HD double trunc_value(double v) { return trunc(v); }
// max(v, 0) for v not NaN (linear_tap's `if (src < 0) src = 0`; src is never NaN or -0 there).
RX_HD float clamp_at_zero(float v) { return fmaxf(v, 0.0f); }
RX_HD double clamp_at_zero(double v) { return fmax(v, 0.0); }

// linear_tap computed with max / trunc instructions: the same values (src is never NaN or -0).
template <typename acc_t, typename index_t>
RX_HD Tap<acc_t, index_t> linear_tap_trunc(index_t dst, index_t in_size, acc_t scale) {
  const acc_t src = clamp_at_zero(scale * (static_cast<acc_t>(dst) + static_cast<acc_t>(0.5)) - static_cast<acc_t>(0.5));
  const acc_t f = trunc_value(src);
  Tap<acc_t, index_t> t;
  t.i0 = static_cast<index_t>(f);
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.l1 = src - f;
  t.l0 = static_cast<acc_t>(1) - t.l1;
  return t;
}

// Column taps of the run xw0 .. xw0 + N - 1: weights l0, l1 and whether i0 is base + 1 (hi).
template <int N, typename acc_t>
struct ColumnRun {
  acc_t l0[N], l1[N];
  bool hi[N];
};

// linear_tap for dst = xw0 + i: src = max(scale * ((xw0 + 0.5) + i) - 0.5, 0) -- (xw0 + 0.5) + i is
// float(xw0 + i) + 0.5 exactly (half-integers below 2^22 in magnitude) --, i0 = trunc(src), l1 = src - i0.
// Returns base = i0 at xw0.
template <int N, typename acc_t, typename index_t>
RX_HD index_t bilinear_columns(index_t xw0, acc_t scale, ColumnRun<N, acc_t>& run) {
  const acc_t t0 = static_cast<acc_t>(xw0) + static_cast<acc_t>(0.5);
  acc_t f0 = 0;
  for (int i = 0; i < N; ++i) {
    const acc_t src = clamp_at_zero(scale * (i == 0 ? t0 : t0 + static_cast<acc_t>(i)) - static_cast<acc_t>(0.5));
    const acc_t f = trunc_value(src);
    if (i == 0) f0 = f;
    run.l1[i] = src - f;
    run.l0[i] = static_cast<acc_t>(1) - run.l1[i];
    run.hi[i] = i == 0 ? false : f != f0;
  }
  return static_cast<index_t>(f0);
}

// v[i] = the bilinear value at resized column xw0 + i of the source rows at element offsets o0, o1 of
// x (unit column stride, in_size columns; 0 <= base < in_size), from the window base .. base + 2:
// the window's columns are blended vertically once (c_j = ty.l0 * r0[j] + ty.l1 * r1[j]), then each
// output horizontally (l0 * c_i0 + l1 * c_i1). Torch's order is horizontal first (bilinear_value);
// the two differ by float rounding only (a few ulp).
// The window's columns: base, then base + 1 and base + 2 clamped to the row's last column.
template <typename index_t>
RX_HD index_t window_column(index_t base, int j, index_t in_size) {
  return base + j < in_size - 1 ? base + j : in_size - 1;
}
// A window column blended vertically: ty.l0 * top + ty.l1 * bottom (on the device
// fma(l0, top, l1 * bottom), nvcc's contraction of it).
template <typename acc_t, typename index_t>
RX_HD acc_t blend_rows(acc_t top, acc_t bottom, const Tap<acc_t, index_t>& ty) {
  return mul_add<acc_t>(ty.l0, top, ty.l1 * bottom);
}
// v[i] from the blended window columns c0, c1, c2: l0 * c_i0 + l1 * c_i1.
template <int N, typename acc_t>
RX_HD void blend_run(acc_t c0, acc_t c1, acc_t c2, const ColumnRun<N, acc_t>& run, acc_t (&v)[N]) {
  for (int i = 0; i < N; ++i) {
    const bool hi = run.hi[i];
    v[i] = mul_add<acc_t>(run.l0[i], hi ? c1 : c0, run.l1[i] * (hi ? c2 : c1));  // l0 * c_i0 + l1 * c_i1
  }
}
template <int N, typename acc_t, typename x_t, typename index_t>
RX_HD void bilinear_run_values(const x_t* x, index_t o0, index_t o1, index_t in_size, index_t base,
                               const Tap<acc_t, index_t>& ty, const ColumnRun<N, acc_t>& run, acc_t (&v)[N]) {
  const index_t k1 = window_column<index_t>(base, 1, in_size), k2 = window_column<index_t>(base, 2, in_size);
  const acc_t c0 = blend_rows<acc_t, index_t>(load_input<acc_t>(x + (o0 + base), 0), load_input<acc_t>(x + (o1 + base), 0), ty);
  const acc_t c1 = blend_rows<acc_t, index_t>(load_input<acc_t>(x + (o0 + k1), 0), load_input<acc_t>(x + (o1 + k1), 0), ty);
  const acc_t c2 = blend_rows<acc_t, index_t>(load_input<acc_t>(x + (o0 + k2), 0), load_input<acc_t>(x + (o1 + k2), 0), ty);
  blend_run<N, acc_t>(c0, c1, c2, run, v);
}

// Whether every run of n consecutive resized columns of [0, out_size) has column taps i0 within two
// consecutive values (an upscale of more than about n - 1 times), so bilinear_run_values serves any
// alignment of the runs; a run starting left of column 0 has base 0 = i0(0) (in < out).
// i0 rises by 2 within a run only if src does by more than 1; src rises by (n - 1) * in / out over a
// run, give or take its rounding (< 4 * in * eps per value, generously), so most sizes are settled
// without the O(out_size) scan of the computed taps.
template <typename acc_t>
inline bool bilinear_window_fits(int64_t in_size, int64_t out_size, int n) {
  if (in_size <= 0 || out_size <= in_size || n < 1) return false;
  const double rise = static_cast<double>(n - 1) * static_cast<double>(in_size) / static_cast<double>(out_size);
  const double err = 4.0 * static_cast<double>(in_size) * static_cast<double>(std::numeric_limits<acc_t>::epsilon());
  if (rise + 2 * err <= 1.0) return true;
  if (rise - 2 * err > 1.0 || out_size > (int64_t(1) << 16)) return false;
  const acc_t scale = static_cast<acc_t>(in_size) / static_cast<acc_t>(out_size);
  for (int64_t w = 0; w + n - 1 < out_size; ++w) {
    const auto a = linear_tap<acc_t, int64_t>(w, in_size, scale), b = linear_tap<acc_t, int64_t>(w + n - 1, in_size, scale);
    if (b.i0 - a.i0 > 1) return false;
  }
  return true;
}

}  // namespace reprogram_ext
