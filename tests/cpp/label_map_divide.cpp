// Host unit test of csrc/label_map/divide.h's reciprocal_refined (the CUDA kernels' division), run by
// tests/test_label_map_cuda_rows.py. The device seeds it with rcp.approx.ftz.f32 (relative error below
// 2^-22); here the seed is the exact 1/m pushed 2^-22 off at random, a worse seed than the hardware's.
#include "label_map/divide.h"
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
using namespace reprogram_ext::label_map;
static int fails = 0;
#define CHECK(c) do { if (!(c)) { ++fails; std::printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); } } while (0)

struct OffSeed {  // 1/m times (1 + delta)
  double delta;
  float operator()(float m) const { return static_cast<float>((1.0 / m) * (1.0 + delta)); }
};

template <typename T>
double ulps(T got, long double exact) {
  const T ex = static_cast<T>(exact);
  if (got == ex) return 0;
  const long double u = std::fabs((long double)std::nextafter(ex, std::numeric_limits<T>::infinity()) - ex);
  return static_cast<double>(std::fabs((long double)got - exact) / u);
}

int main() {
  std::mt19937_64 g(7);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  const double off = std::ldexp(1.0, -22);
  double worst_rf = 0, worst_rd = 0, worst_qf = 0, worst_qd = 0;
  for (int i = 0; i < 1000000; ++i) {
    const OffSeed seed{off * unit(g)};
    const double mant = 1.0 + 0.9999 * std::fabs(unit(g));
    const float xf = static_cast<float>((unit(g) < 0 ? -mant : mant) * std::exp2(std::floor(unit(g) * 149.0)));
    const double xd = mant * std::exp2(std::floor(unit(g) * 1070.0));
    if (xf != 0.0f) worst_rf = std::fmax(worst_rf, ulps<float>(reciprocal_refined(xf, seed), 1.0L / xf));
    worst_rd = std::fmax(worst_rd, ulps<double>(reciprocal_refined(xd, seed), 1.0L / xd));
    const float af = static_cast<float>(unit(g) * 1e3);
    const float bf = static_cast<float>(mant * std::exp2(std::floor(unit(g) * 60.0)));
    worst_qf = std::fmax(worst_qf, ulps<float>(af * reciprocal_refined(bf, seed), (long double)af / bf));
    const double ad = unit(g) * 1e3, bd = mant * std::exp2(std::floor(unit(g) * 500.0));
    worst_qd = std::fmax(worst_qd, ulps<double>(ad * reciprocal_refined(bd, seed), (long double)ad / bd));
  }
  std::printf("max ulps: reciprocal float %.3f double %.3f; quotient float %.3f double %.3f\n", worst_rf, worst_rd,
              worst_qf, worst_qd);
  CHECK(worst_rf <= 1.0 && worst_rd <= 1.0);  // the reciprocal: within 1 ulp (denormal results included)
  CHECK(worst_qf <= 1.5 && worst_qd <= 1.5);  // a * reciprocal(b): within 1.5 ulp of a / b
  const OffSeed exact{0.0};
  CHECK(reciprocal_refined(0.0f, exact) == INFINITY && reciprocal_refined(-0.0f, exact) == -INFINITY);
  CHECK(reciprocal_refined(INFINITY, exact) == 0.0f && std::signbit(reciprocal_refined(-INFINITY, exact)));
  CHECK(std::isnan(reciprocal_refined(NAN, exact)) && std::isnan(reciprocal_refined(static_cast<double>(NAN), exact)));
  CHECK(reciprocal_refined(0.0, exact) == static_cast<double>(INFINITY));
  CHECK(reciprocal_refined(std::ldexp(1.0f, 127), exact) == std::ldexp(1.0f, -127));  // a denormal result
  CHECK(reciprocal_refined(std::ldexp(1.0f, -149), exact) == INFINITY);               // 1 / smallest denormal
  CHECK(reciprocal_refined(3.0f, exact) == 1.0f / 3.0f && reciprocal_refined(10.0, exact) == 1.0 / 10.0);
  if (fails == 0) std::printf("all passed\n");
  return fails == 0 ? 0 : 1;
}
