// exp_f: a vectorisable exp for the CPU row loops of every kernel family (label maps, masked
// perturbation), and the hardware expf on the device.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace reprogram_ext {

// exp(x) for float. On the host a branch-free Cody-Waite + degree-6 polynomial (relative error
// ~1 ulp), so that row loops under `#pragma omp simd` vectorise without -ffast-math; on the
// device the hardware-backed expf. exp(-inf) = 0, exp(+inf) = inf, NaN propagates. Always inlined:
// GCC otherwise calls it out of line (through the PLT), which keeps every row loop scalar.
C10_HOST_DEVICE C10_ALWAYS_INLINE float exp_f(float x) {
#ifdef __CUDA_ARCH__
  return expf(x);
#else
  const float hi = 88.0f, lo = -87.33654f;
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const float t = xc * 1.44269504088896341f + 12582912.0f;  // round to nearest via the magic number
  const float n = t - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  union { int32_t i; float f; } scale;
  scale.i = (static_cast<int32_t>(n) + 127) << 23;
  float out = y * scale.f;
  out = x > 88.72283f ? INFINITY : out;
  out = x < lo ? 0.0f : out;
  return x != x ? x : out;
#endif
}
C10_HOST_DEVICE C10_ALWAYS_INLINE double exp_f(double x) { return exp(x); }

}  // namespace reprogram_ext
