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

// The output element (perturb_element of math.h) under pointwise variant P.
template <class P, typename acc_t>
RX_HD acc_t perturb_value(acc_t u, bool covered, acc_t a, acc_t m, const ChannelConstants<acc_t>& k) {
  if constexpr (P::kDynamic) {
    return perturb_element<acc_t>(u, covered, a, m, k);
  } else {
    if constexpr (P::kNormalize == Normalize::kBefore) u = covered ? (u - k.before_mean) * k.before_inv_std : u;
    acc_t v = u + m * a;
    if constexpr (P::kNormalize == Normalize::kAfter) v = (v - k.after_mean) * k.after_inv_std;
    return v;
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

}  // namespace reprogram_ext
