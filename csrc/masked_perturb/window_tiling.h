// The row tiling of the CUDA per-thread bilinear window forward (the kBilinearRuns layouts of cuda.cu
// without a batch-shared delta): a thread writes a VEC x VEC tile, the kRows = VEC canvas rows
// h0 .. h0 + VEC - 1 (h0 = VEC * row group, those < H) of the VEC columns w0 .. w0 + VEC - 1 (w0 = VEC *
// column group), and -- for SMM's per-sample mask at 1 / s of the canvas resolution -- reads that mask
// once: when s is a multiple of VEC (one_mask_cell), the tile lies in the single mask cell
// (h0 / s, w0 / s), since no multiple of s falls strictly inside [h0, h0 + VEC) or [w0, w0 + VEC); and it reads its rows' source rows from a
// window of three (window_rows). __host__ __device__, so that tests/cpp/masked_perturb_window_tiling.cpp
// runs it on the host and checks that every position of every footprint maps to the thread's cell and
// every row's taps are the window rows it picks.
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>

#include "masked_perturb/specialize.h"

namespace reprogram_ext {
namespace window_tiling {

template <int VEC>
constexpr int kRows = VEC;  // canvas rows per thread

// Whether every thread's tile lies in one mask cell of side s (VEC columns and rows per thread).
C10_HOST_DEVICE inline bool one_mask_cell(int64_t s, int vec) { return s >= 1 && s % vec == 0; }

// The thread's first canvas row and column.
template <int VEC, typename index_t>
C10_HOST_DEVICE inline index_t first_row(index_t row_group) { return row_group * kRows<VEC>; }
template <typename index_t>
C10_HOST_DEVICE inline index_t first_column(index_t column_group, int vec) { return column_group * vec; }

// The resized row a canvas row reads in the batch-shared window forward, y = h - oy clamped to
// [0, Hr - 1] (a row off the copy reads a valid row, its outputs masked out).
template <typename index_t>
C10_HOST_DEVICE inline index_t clamped_row(index_t y, index_t Hr) { return y < 0 ? 0 : y < Hr - 1 ? y : Hr - 1; }

// The per-thread window forward reads its rows' source rows from a window of three, rbase .. rbase + 2
// (window_column of specialize.h: clamped to the last row): the row taps of the N resized rows
// y0 .. y0 + N - 1 are bilinear_columns' (unclamped y: linear_tap's values for the rows 0 <= y < Hr,
// any values for the others, whose outputs are masked out), rbase = their first i0 clamped to Hin - 1.
// When bilinear_window_fits(Hin, Hr, N) holds, a row y inside [0, Hr) has taps (i0, i1) = window rows
// (rows.hi, rows.hi + 1); a row outside reads window rows 0 .. 2 all the same.
template <int N, typename acc_t, typename index_t>
C10_HOST_DEVICE inline index_t window_rows(index_t y0, index_t Hin, acc_t scale, ColumnRun<N, acc_t>& rows) {
  const index_t base = bilinear_columns<N, acc_t, index_t>(y0, scale, rows);
  return base < Hin - 1 ? base : Hin - 1;
}

}  // namespace window_tiling
}  // namespace reprogram_ext
