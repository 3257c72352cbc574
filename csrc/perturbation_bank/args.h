// Host-side checks of the bank's own arguments (the Python front end, reprogram_ext/ops/
// perturbation_bank/args.py, validates the user's; these guard direct torch.ops callers), shared by
// the CPU and CUDA ops.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "perturbation_bank/math.h"

namespace reprogram_ext {

struct BankSpec {
  uint64_t seed;
  int64_t q;
  double beta;
  Directions kind;
  bool antithetic;
  int64_t start, stop;  // the queries built
};

inline void check_bank_spec(const BankSpec& s, int64_t numel) {
  TORCH_CHECK(s.q >= 1, "perturbation_bank: q must be a positive int, got ", s.q);
  TORCH_CHECK(s.q < (int64_t(1) << 31), "perturbation_bank: q must be below 2^31, got ", s.q);
  TORCH_CHECK(std::isfinite(s.beta) && s.beta > 0, "perturbation_bank: beta must be a finite real number > 0, got ",
              s.beta);
  const int64_t total = s.antithetic ? 2 * s.q : s.q + 1;
  TORCH_CHECK(0 <= s.start && s.start < s.stop && s.stop <= total, "perturbation_bank: queries must be a non-empty "
              "range within [0, Q=", total, "], got [", s.start, ", ", s.stop, ")");
  TORCH_CHECK(numel > 0, "perturbation_bank: theta must be non-empty");
  TORCH_CHECK(s.kind != Directions::kSphere || numel <= kMaxSphereNumel,
              "perturbation_bank: theta must have at most 2^25 elements for sphere directions, got ", numel);
}

inline void check_bank_theta(const at::Tensor& theta) {
  TORCH_CHECK(theta.scalar_type() == at::kFloat || theta.scalar_type() == at::kDouble,
              "perturbation_bank: theta must be float32 or float64 (the compute dtype), got ", theta.scalar_type());
}

inline void check_combine_weights(const at::Tensor& weights) {
  TORCH_CHECK(weights.dim() == 1 && weights.numel() >= 1 &&
                  (weights.scalar_type() == at::kFloat || weights.scalar_type() == at::kDouble),
              "perturbation_bank_combine: weights must be a float32/float64 [q] tensor, q >= 1, got ",
              weights.sizes(), " ", weights.scalar_type());
}

inline void check_combine_numel(Directions kind, int64_t numel) {
  TORCH_CHECK(numel > 0 && (kind != Directions::kSphere || numel <= kMaxSphereNumel),
              "perturbation_bank_combine: numel must be in [1, 2^25] for sphere directions and >= 1 otherwise, got ",
              numel);
}

// The directions a query range needs: js (distinct, ascending) and, per query, its index in js (-1:
// the centre).
inline void query_directions(const BankSpec& s, std::vector<uint32_t>* js, std::vector<int64_t>* slot) {
  for (int64_t k = s.start; k < s.stop; ++k) {
    const BankQuery qk = bank_query(k, s.antithetic);
    if (qk.j == 0) {
      slot->push_back(-1);
      continue;
    }
    if (js->empty() || js->back() != qk.j) js->push_back(qk.j);
    slot->push_back(static_cast<int64_t>(js->size()) - 1);
  }
}

}  // namespace reprogram_ext
