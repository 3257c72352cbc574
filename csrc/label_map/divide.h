// Division without the IEEE-division subroutine on the GPU, for the label_map kernels.
//
// On the device, `a / b` in float or double compiles to a fast path plus a CALL to a slow-path
// subroutine (denormal or huge operands), so every kernel that divides has a CALL site and the
// registers it pins. reciprocal(x) here has none: x = m * 2^e with |m| in [0.5, 1), a seed for 1/m
// from the hardware approximation (rcp.approx.ftz.f32, relative error below 2^-22) refined by
// Newton steps r <- r + r (1 - m r) (one for float, two for double: the error squares each step),
// then ldexp(1/m, -e), which rounds correctly into the denormal range and overflows to inf where
// 1/x does; zero and infinity are selected explicitly (1/±0 = ±inf, 1/±inf = ±0), NaN stays NaN.
// divide(a, b) = a * reciprocal(b), within 1.5 ulp of the IEEE quotient: reciprocal_refined() is
// host-callable, and tests/cpp/label_map_divide.cpp runs it on the host with seeds 2^-22 off over
// operands across the whole exponent range (measured: the reciprocal within 0.75 ulp, denormal
// results included, the quotient within 1.46 ulp, float and double). The callers' tolerances: float32 results are compared at
// 1e-5 relative, float64 at 1e-12.
//
// On the host, reciprocal and divide are the IEEE operations (1 / x, a / b): the CPU kernels keep
// their bits.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

namespace reprogram_ext {
namespace label_map {

// 1/x from `seed(m)` ~ 1/m (a float function of the mantissa m in [0.5, 1)).
template <typename A, typename Seed>
C10_HOST_DEVICE inline A reciprocal_refined(A x, Seed seed) {
  using std::copysign;
  using std::fma;
  using std::frexp;
  using std::isinf;
  using std::ldexp;
  int e = 0;
  const A m = frexp(x, &e);
  const A one = static_cast<A>(1);
  A r = static_cast<A>(seed(static_cast<float>(m)));
  r = fma(r, fma(-m, r, one), r);
  if constexpr (sizeof(A) > sizeof(float)) r = fma(r, fma(-m, r, one), r);
  r = ldexp(r, -e);
  return x == static_cast<A>(0) ? copysign(static_cast<A>(INFINITY), x)
                                : (isinf(x) ? copysign(static_cast<A>(0), x) : r);
}

#ifdef __CUDA_ARCH__
struct HardwareReciprocal {  // rcp.approx.ftz.f32: relative error below 2^-22 for m in [0.5, 1)
  __device__ __forceinline__ float operator()(float m) const {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(m));
    return r;
  }
};

template <typename A>
__device__ __forceinline__ A reciprocal(A x) {
  return reciprocal_refined(x, HardwareReciprocal{});
}

template <typename A>
__device__ __forceinline__ A divide(A a, A b) {
  return a * reciprocal(b);
}
#else
template <typename A>
inline A reciprocal(A x) {
  return static_cast<A>(1) / x;
}

template <typename A>
inline A divide(A a, A b) {
  return a / b;
}
#endif

}  // namespace label_map
}  // namespace reprogram_ext
