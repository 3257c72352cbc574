// The tiling of the CUDA flat forward (masked_perturb_forward_flat_kernel, cuda.cu), for rows that are
// not 16-byte aligned: which sample and which plane positions each (block, thread, pass) writes.
// __host__ __device__, so that tests/cpp/masked_perturb_flat_tiling.cpp runs the kernel's index
// arithmetic on the host and checks that every output element is written exactly once, from the
// block's window, with 16-byte aligned groups.
//
// A block (bx, by) holds a window of kThreads plane positions q = Q + t, Q = bx * per_block - VEC,
// per_block = VEC * (G - 1), G = kThreads / VEC; thread t = s * G + gl (gl < G - 1 writes) writes,
// in pass j, sample b = by * kPasses * VEC + j * VEC + s at positions Q + t0 .. Q + t0 + VEC - 1,
// t0 = VEC + VEC * gl - (b * plane) % VEC, so that b * plane + Q + t0 is a multiple of VEC.
#pragma once

#include <cstdint>
#include <type_traits>

#include <c10/macros/Macros.h>

namespace reprogram_ext {
namespace flat_tiling {

constexpr int kThreads = 256;  // threads per block = window positions per block
// Passes of VEC samples per block: 4 (4 VEC samples share a block's window; the thread's window
// slots and the block's activations serve 4 samples).
template <int VEC>
constexpr int kPasses = 4;

template <int VEC>
constexpr int kGroups = kThreads / VEC;  // G: group slots per sample row of threads (the last one idle)

template <int VEC>
constexpr int64_t kPerBlock = VEC * (kGroups<VEC> - 1);  // plane positions a block writes per sample

// Blocks along the plane: ceil((plane + VEC - 1) / per_block), enough for the shifted groups.
template <int VEC>
C10_HOST_DEVICE inline int64_t blocks_x(int64_t plane) { return (plane + VEC - 1 + kPerBlock<VEC> - 1) / kPerBlock<VEC>; }

// Blocks along the batch: ceil(B / (kPasses * VEC)).
template <int VEC>
C10_HOST_DEVICE inline int64_t blocks_y(int64_t B) { return (B + kPasses<VEC> * VEC - 1) / (kPasses<VEC> * VEC); }

// Q: the plane position of window slot 0 of block bx.
template <int VEC, typename index_t>
C10_HOST_DEVICE inline index_t window_start(index_t bx) { return bx * static_cast<index_t>(kPerBlock<VEC>) - VEC; }

// The sample that thread row s writes in pass j of block by.
template <int VEC, typename index_t>
C10_HOST_DEVICE inline index_t sample(index_t by, int j, int s) { return by * (kPasses<VEC> * VEC) + j * VEC + s; }

// The passes of thread row s in block by that hold a sample (b < B): the kernel runs passes
// j = 0 .. passes - 1 (0 when the row's first sample is past the batch).
template <int VEC, typename index_t>
C10_HOST_DEVICE inline int passes(index_t by, int s, index_t B) {
  const index_t left = B - sample<VEC>(by, 0, s);  // samples from the row's first on
  if (left <= 0) return 0;
  const index_t n = (left + VEC - 1) / VEC;  // pass j holds a sample when j * VEC < left
  return n < kPasses<VEC> ? static_cast<int>(n) : kPasses<VEC>;
}

// t0: the window slot of the first position of group gl of sample b (in [1, kThreads - VEC]).
template <int VEC, typename index_t>
C10_HOST_DEVICE inline int group_slot(int gl, index_t b, index_t plane) {
  using uindex_t = std::make_unsigned_t<index_t>;
  return VEC + VEC * gl - static_cast<int>(static_cast<uindex_t>(b * plane) % VEC);
}

}  // namespace flat_tiling
}  // namespace reprogram_ext
