// The sizes of one vocab_map call and the checks of its inputs, shared by the CPU kernels (cpu.cpp)
// and the ATen device path (chunked.cpp). Rows n = b·L + i; w the (odd) window, V_t / V_s the target
// and source vocabularies, D the embedding width.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace reprogram_ext {
namespace vocab_map {

struct Shape {
  int64_t B, L, N, w, V_t, V_s, D;
};

inline Shape check(const at::Tensor& tokens, const at::Tensor& theta, const at::Tensor& embedding, double tau,
                   int64_t chunk) {
  TORCH_CHECK_VALUE(tokens.dim() == 2 && tokens.scalar_type() == at::kLong && tokens.numel() > 0,
                    "vocab_map: tokens must be a non-empty int64 [B, L], got ", tokens.sizes(), " ",
                    tokens.scalar_type());
  TORCH_CHECK_VALUE(theta.dim() == 3 && theta.size(0) % 2 == 1, "vocab_map: theta must be [w, V_t, V_s] with odd w, "
                    "got ", theta.sizes());
  TORCH_CHECK_VALUE(embedding.dim() == 2 && embedding.size(0) == theta.size(2),
                    "vocab_map: embedding must be [V_s=", theta.size(2), ", D], got ", embedding.sizes());
  TORCH_CHECK_TYPE(embedding.scalar_type() == theta.scalar_type() &&
                       (theta.scalar_type() == at::kFloat || theta.scalar_type() == at::kDouble),
                   "vocab_map: theta and embedding must both be float32 or both float64, got ", theta.scalar_type(),
                   " and ", embedding.scalar_type());
  TORCH_CHECK_VALUE(tau > 0 && std::isfinite(tau), "vocab_map: tau must be a positive finite temperature, got ", tau);
  TORCH_CHECK_VALUE(chunk >= 1, "vocab_map: chunk must be >= 1, got ", chunk);
  return {tokens.size(0), tokens.size(1), tokens.numel(), theta.size(0), theta.size(1), theta.size(2),
          embedding.size(1)};
}

}  // namespace vocab_map
}  // namespace reprogram_ext
