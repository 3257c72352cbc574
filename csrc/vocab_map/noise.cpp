// The Gumbel noise of vocab_map (the formula: noise.h) as ATen ops, for the device path (chunked.cpp;
// the CPU kernels hash in their row loops: cpu.cpp), on int64 tensors holding values in [0, 2^32),
// where each product is split at bit 16 of the constant so that no int64 product overflows:
// (x * m) mod 2^32 = (x * m_lo + ((x * m_hi) mod 2^16) << 16) mod 2^32.
#include "vocab_map/noise.h"

namespace reprogram_ext {
namespace vocab_map {
namespace {

constexpr int64_t kMask32 = 0xFFFFFFFFLL;

at::Tensor mul32(const at::Tensor& x, int64_t m) {
  at::Tensor lo = x * (m & 0xFFFF);
  at::Tensor hi = at::bitwise_left_shift(at::bitwise_and(x * (m >> 16), 0xFFFF), 16);
  return at::bitwise_and(lo.add_(hi), kMask32);
}

at::Tensor mix32_tensor(at::Tensor x) {
  x = at::bitwise_xor(x, at::bitwise_right_shift(x, 16));
  x = mul32(x, 0x7feb352dLL);
  x = at::bitwise_xor(x, at::bitwise_right_shift(x, 15));
  x = mul32(x, 0x846ca68bLL);
  return at::bitwise_xor(x, at::bitwise_right_shift(x, 16));
}

}  // namespace

at::Tensor row_hashes(int64_t N, int64_t seed, const at::TensorOptions& device) {
  at::Tensor rows = at::bitwise_and(at::arange(N, device.dtype(at::kLong)), kMask32);
  return mix32_tensor(at::bitwise_xor(rows, static_cast<int64_t>(seed_key(seed))));
}

at::Tensor gumbel_chunk(const at::Tensor& row_hash, int64_t c0, int64_t width, at::ScalarType dtype) {
  at::Tensor cols = at::bitwise_and(at::arange(c0, c0 + width, row_hash.options()), kMask32);
  at::Tensor h = mix32_tensor(at::bitwise_xor(row_hash.unsqueeze(1), cols.unsqueeze(0)));
  at::Tensor u = at::bitwise_right_shift(h, 8).to(dtype).add_(0.5).mul_(1.0 / 16777216.0);
  return u.log_().neg_().clamp_min_(kLogUFloor).log_().neg_();
}

}  // namespace vocab_map
}  // namespace reprogram_ext
