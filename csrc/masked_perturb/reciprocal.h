// reciprocal(x) = 1 / x for the activations (activation.h), without the out-of-line slow path that
// an IEEE float division compiles to on the device.
#pragma once

#include <c10/macros/Macros.h>

namespace reprogram_ext {

// Device float: r0 = rcp.approx.ftz(x), then one Newton step r0 + r0 * (1 - x * r0) -- the inline
// fast path nvcc emits for 1.0f / x, correctly rounded while 2^-126 <= |x| < 2^126. Outside that
// range nvcc calls a subroutine; here r0 == 0 (|x| >= 2^126, +-inf: a result in the subnormal range
// flushed to 0) is returned as is, and NaN stays NaN. (|x| < 2^-126 is not handled: the activations
// only take reciprocals of 1 + e^t >= 1.) Host, double: the division.
C10_HOST_DEVICE C10_ALWAYS_INLINE float reciprocal(float x) {
#ifdef __CUDA_ARCH__
  float r0;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r0) : "f"(x));
  const float r = fmaf(r0, fmaf(-x, r0, 1.0f), r0);
  return r0 == 0.0f ? r0 : r;
#else
  return 1.0f / x;
#endif
}
C10_HOST_DEVICE C10_ALWAYS_INLINE double reciprocal(double x) { return 1.0 / x; }

}  // namespace reprogram_ext
