// The bank's query layout and the directions' element values, shared by the C++ CPU kernels and
// the CUDA kernels (__host__ __device__). Formulas: reprogram_ext/ops/perturbation_bank/philox.py
// (the generator) and docs/blackbox.md.
//
//   query k of a bank: j = k, sign + (one-sided; j = 0 is theta itself), or
//                      j = k / 2 + 1, sign + for even k, - for odd k (antithetic);
//   program_k = act(theta + sign * fl(beta * u_j))        (act: masked_perturb's activation)
//   u_j[i] = z_j[i] (gaussian), z_j[i] / ||z_j|| (sphere), Delta_j[i] (segmented), float32.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "perturbation_bank/options.h"
#include "perturbation_bank/philox.h"

namespace reprogram_ext {

constexpr int64_t kMaxSphereNumel = int64_t(1) << 25;  // the fixed-point squared norm stays below 2^63

struct BankQuery {
  uint32_t j;     // direction (0: the centre)
  bool negative;  // theta - beta u_j
};

C10_HOST_DEVICE inline BankQuery bank_query(int64_t k, bool antithetic) {
  if (antithetic) return BankQuery{static_cast<uint32_t>(k / 2 + 1), (k % 2) != 0};
  return BankQuery{static_cast<uint32_t>(k), false};
}

// The four raw values of element group g of direction j: z (gaussian and sphere, before the
// sphere's normalisation) or Delta (segmented).
C10_HOST_DEVICE inline void raw_direction4(Directions kind, uint64_t seed, uint32_t j, uint64_t g, float v[4]) {
  const philox::Words w = philox::group_words(seed, j, g);
  if (kind == Directions::kSegmented) {
    for (int l = 0; l < 4; ++l) v[l] = philox::segmented(w.r[l]);
  } else {
    philox::gaussian4(w, v);
  }
}

}  // namespace reprogram_ext
