// The batch tiling of the CUDA batch-shared forward (forward_batch_shared_rows in cuda.cu): which
// samples thread (group, s) of block y writes. __host__ __device__, so that
// tests/cpp/masked_perturb_batch_tiling.cpp runs it on the host and checks that every sample of a
// launch is written exactly once and every read stays inside the batch.
//
// Block y holds S * VEC samples: its thread with sample lane s < VEC writes, for j < S, sample
// b_j = y * S * VEC + j * VEC + s. The thread returns when b_0 >= B; a slot j > 0 past the batch reads
// sample b_0's x (a valid row) and stores nothing.
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>

namespace reprogram_ext {
namespace batch_tiling {

// Blocks along y for B samples, S * VEC per block: ceil(B / (S * VEC)).
inline int64_t blocks_y(int64_t B, int S, int VEC) { return (B + S * VEC - 1) / (S * VEC); }

// b_j of the thread with sample lane s in block y.
template <typename index_t>
C10_HOST_DEVICE inline index_t sample(unsigned y, int S, int VEC, int s, int j) {
  return static_cast<index_t>(y * static_cast<unsigned>(S * VEC) + static_cast<unsigned>(j * VEC + s));
}

// Whether slot j stores its sample b (b_0 < B holds: the thread returned otherwise).
template <typename index_t>
C10_HOST_DEVICE inline bool stores(int j, index_t b, index_t B) { return j == 0 || b < B; }

}  // namespace batch_tiling
}  // namespace reprogram_ext
