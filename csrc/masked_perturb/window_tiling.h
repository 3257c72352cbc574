// The row tiling of the CUDA bilinear window forward (the kBilinearRuns layouts of cuda.cu): a thread
// writes kRows canvas rows h0 .. h0 + kRows - 1 (h0 = kRows * row group, those < H) of the VEC columns
// w0 .. w0 + VEC - 1 (w0 = VEC * column group), and -- for SMM's per-sample mask at 1 / s of the canvas
// resolution -- reads that mask once: when s is a multiple of both VEC and kRows (one_mask_cell), the
// kRows x VEC footprint lies in the single mask cell (h0 / s, w0 / s), since no multiple of s falls
// strictly inside [h0, h0 + kRows) or [w0, w0 + VEC). __host__ __device__, so that
// tests/cpp/masked_perturb_window_tiling.cpp runs it on the host and checks that every position of
// every footprint maps to the thread's cell.
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>

namespace reprogram_ext {
namespace window_tiling {

constexpr int kRows = 4;  // canvas rows per thread

// Whether every thread's footprint lies in one mask cell of side s (VEC columns per thread).
C10_HOST_DEVICE inline bool one_mask_cell(int64_t s, int vec) { return s >= 1 && s % vec == 0 && s % kRows == 0; }

// The thread's first canvas row and column.
template <typename index_t>
C10_HOST_DEVICE inline index_t first_row(index_t row_group) { return row_group * kRows; }
template <typename index_t>
C10_HOST_DEVICE inline index_t first_column(index_t column_group, int vec) { return column_group * vec; }

}  // namespace window_tiling
}  // namespace reprogram_ext
