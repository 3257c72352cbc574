// The directions' generator, shared by the C++ CPU kernels and the CUDA kernels (every function is
// __host__ __device__): Philox4x32-10 and the float32 transforms of its words. The definition,
// with which counter and key words make which element, is reprogram_ext/ops/perturbation_bank/
// philox.py (the reference, plain torch ops); the Triton kernels spell the same steps.
//
// Bit-identical on every backend: the float transforms use only +, -, *, / and sqrt, each rounded
// once to float32 (on the device through the _rn intrinsics, which are never contracted; on the
// host the including file turns floating-point contraction off), integer bit manipulation, and
// exact conversions.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstring>

namespace reprogram_ext {
namespace philox {

#define RX_PHX C10_HOST_DEVICE C10_ALWAYS_INLINE

constexpr uint32_t kA = 0xD2511F53u, kB = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

// float32 constants (the reference's LN2, SQRT2, HALF_PI, LOG_C, SIN_C, COS_C rounded to float32).
constexpr float kLn2 = 0.693147182464599609375f;
constexpr float kSqrt2 = 1.41421353816986083984375f;
constexpr float kHalfPi = 1.57079637050628662109375f;
constexpr float kLog0 = static_cast<float>(2.0 / 3), kLog1 = static_cast<float>(2.0 / 5),
                kLog2 = static_cast<float>(2.0 / 7), kLog3 = static_cast<float>(2.0 / 9),
                kLog4 = static_cast<float>(2.0 / 11);
constexpr float kSin1 = static_cast<float>(-1.0 / 6), kSin2 = static_cast<float>(1.0 / 120),
                kSin3 = static_cast<float>(-1.0 / 5040), kSin4 = static_cast<float>(1.0 / 362880);
constexpr float kCos1 = -0.5f, kCos2 = static_cast<float>(1.0 / 24), kCos3 = static_cast<float>(-1.0 / 720),
                kCos4 = static_cast<float>(1.0 / 40320);
constexpr float kSqScale = 4294967296.0f;  // 2^32: fixed-point scale of the squared norm

// Single-rounding float32 operations (never fused into an fma).
RX_PHX float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
RX_PHX float fsub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
RX_PHX float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
// a / b and sqrt(a), correctly rounded. On the device without the IEEE operations' out-of-line slow
// paths (subroutine calls for subnormal, huge or special operands, which the bank never has: its
// divisors and radicands are normal numbers between 2^-33 and 2^31; a dividend must not be subnormal
// or within a factor 2 of overflow, e.g. an SPSA weight near FLT_MAX): the fast paths nvcc inlines. Division: the correctly rounded reciprocal of
// reciprocal.h's step, q0 = a r, then Markstein's correction q0 + (a - b q0) r (exact remainder by
// fma). sqrt: g = a y, y = rsqrt.approx(a), then g + (a - g^2) y / 2. (Checked against the exact
// result for 2M random operands each with a 2^-22.5 relative error in the approximation.)
RX_PHX float fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
  float r0;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r0) : "f"(b));
  const float r = __fmaf_rn(r0, __fmaf_rn(-b, r0, 1.0f), r0);
  const float q0 = __fmul_rn(a, r);
  return __fmaf_rn(__fmaf_rn(-b, q0, a), r, q0);
#else
  return a / b;
#endif
}
RX_PHX float fsqrt(float a) {
#ifdef __CUDA_ARCH__
  float y;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(a));
  const float g = __fmul_rn(a, y);
  return __fmaf_rn(__fmaf_rn(-g, g, a), __fmul_rn(0.5f, y), g);
#else
  return __builtin_sqrtf(a);
#endif
}

RX_PHX uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
RX_PHX float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

struct Words {
  uint32_t r[4];
};

// Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1).
RX_PHX Words philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t pa = static_cast<uint64_t>(kA) * c0;
    const uint64_t pb = static_cast<uint64_t>(kB) * c2;
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(pb);
    c3 = static_cast<uint32_t>(pa);
    c0 = n0;
    c2 = n2;
    k0 += kW0;
    k1 += kW1;
  }
  return Words{{c0, c1, c2, c3}};
}

// The words of element group g (elements 4g .. 4g+3) of direction j under the 64-bit seed.
RX_PHX Words group_words(uint64_t seed, uint32_t j, uint64_t g) {
  return philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), j, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// ln(n * 2^-24) for an odd int n in [1, 2^24) given as an exact float (the reference's _log_u).
RX_PHX float log_u24(float n) {
  const uint32_t bits = float_bits(n);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xFFu) - 127;
  float m = bits_float((bits & 0x7FFFFFu) | 0x3F800000u);
  if (m > kSqrt2) {
    m = fmul(m, 0.5f);
    e += 1;
  }
  const float s = fdiv(fsub(m, 1.0f), fadd(m, 1.0f));
  const float s2 = fmul(s, s);
  float p = kLog4;
  p = fadd(fmul(p, s2), kLog3);
  p = fadd(fmul(p, s2), kLog2);
  p = fadd(fmul(p, s2), kLog1);
  p = fadd(fmul(p, s2), kLog0);
  const float ln_m = fadd(fadd(s, s), fmul(fmul(s, s2), p));
  return fadd(fmul(static_cast<float>(e - 24), kLn2), ln_m);
}

// (cos, sin) of 2 pi m 2^-24 for an odd int m in [1, 2^24) (the reference's _sincos_turn).
RX_PHX void sincos_turn24(int32_t m, float* c_out, float* s_out) {
  const int32_t k = (m + (1 << 21)) >> 22;
  const float a = fmul(fmul(static_cast<float>(m - (k << 22)), 2.384185791015625e-07f /* 2^-22 */), kHalfPi);
  const float a2 = fmul(a, a);
  float ps = kSin4;
  ps = fadd(fmul(ps, a2), kSin3);
  ps = fadd(fmul(ps, a2), kSin2);
  ps = fadd(fmul(ps, a2), kSin1);
  const float sn = fadd(a, fmul(fmul(a, a2), ps));
  float pc = kCos4;
  pc = fadd(fmul(pc, a2), kCos3);
  pc = fadd(fmul(pc, a2), kCos2);
  pc = fadd(fmul(pc, a2), kCos1);
  const float cs = fadd(fmul(a2, pc), 1.0f);
  const int32_t quad = k & 3;
  *c_out = quad == 0 ? cs : quad == 1 ? -sn : quad == 2 ? -cs : sn;
  *s_out = quad == 0 ? sn : quad == 1 ? cs : quad == 2 ? -sn : -cs;
}

// Box-Muller: the two normals of words (ra, rb).
RX_PHX void box_muller(uint32_t ra, uint32_t rb, float* z0, float* z1) {
  const float n = static_cast<float>(2u * (ra >> 9) + 1u);  // exact: < 2^24
  const int32_t m = static_cast<int32_t>(2u * (rb >> 9) + 1u);
  const float radius = fsqrt(fmul(log_u24(n), -2.0f));
  float c, s;
  sincos_turn24(m, &c, &s);
  *z0 = fmul(radius, c);
  *z1 = fmul(radius, s);
}

// The four normals of a group (lanes 0, 1 from (r0, r1), lanes 2, 3 from (r2, r3)).
RX_PHX void gaussian4(const Words& w, float z[4]) {
  box_muller(w.r[0], w.r[1], &z[0], &z[1]);
  box_muller(w.r[2], w.r[3], &z[2], &z[3]);
}

// A segmented entry: |Delta| = (2^23 + ((r >> 8) & 0x7FFFFF)) 2^-24, negative when bit 31 is set.
RX_PHX float segmented(uint32_t r) {
  const float mag = fmul(static_cast<float>(((r >> 8) & 0x7FFFFFu) + (1u << 23)), 5.9604644775390625e-08f /* 2^-24 */);
  return (r >> 31) ? -mag : mag;
}

// trunc(fl(z * z) * 2^32): one element's share of the fixed-point squared norm.
RX_PHX int64_t square_fixed(float z) { return static_cast<int64_t>(fmul(fmul(z, z), kSqScale)); }

// ||z|| = sqrt(fl32(max(S, 1)) * 2^-32).
RX_PHX float norm_from_fixed(int64_t s) {
  const float f = static_cast<float>(s < 1 ? int64_t(1) : s);
  return fsqrt(fmul(f, 2.3283064365386962890625e-10f /* 2^-32 */));
}

#undef RX_PHX

}  // namespace philox
}  // namespace reprogram_ext
