// The Gumbel noise of vocab_map, counter-based (reprogram_ext/ops/vocab_map/noise.py states the
// formula; the Triton kernels compute the same): G[n, v] depends on (seed, n, v) only, so the
// backward regenerates the forward's noise chunk by chunk, and every backend draws the same numbers.
//   mix(x)  lowbias32 in uint32: x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
//   key = mix(seed_lo ^ mix(seed_hi)), h = mix(mix(n ^ key) ^ v), u = ((h >> 8) + 0.5) / 2^24,
//   G = -log(max(-log(u), 2^-25)) (the floor acts only in float32, which rounds the largest u to 1).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace reprogram_ext {
namespace vocab_map {

constexpr double kLogUFloor = 2.98023223876953125e-08;  // 2^-25, the smallest -log(u)

inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

inline uint32_t seed_key(int64_t seed) {
  const uint64_t s = static_cast<uint64_t>(seed);
  return mix32(static_cast<uint32_t>(s) ^ mix32(static_cast<uint32_t>(s >> 32)));
}

// The row hashes mix(n ^ key) for n in [0, N), as int64 values in [0, 2^32).
at::Tensor row_hashes(int64_t N, int64_t seed, const at::TensorOptions& device);

// G[n, c0 + c] for the rows of `row_hash` [N] and c in [0, width), as [N, width] of `dtype`.
at::Tensor gumbel_chunk(const at::Tensor& row_hash, int64_t c0, int64_t width, at::ScalarType dtype);

}  // namespace vocab_map
}  // namespace reprogram_ext
