// The CUDA bilinear window forward's row tiling (csrc/masked_perturb/window_tiling.h), executed on the
// host as forward_per_thread walks it: for every thread (row group, column group) of a canvas, when
// one_mask_cell(s, VEC) holds, every canvas position the thread writes (kRows = VEC rows x VEC columns,
// those < H) has the mask cell (h / s, w / s) of the thread's first position, the one cell the kernel
// reads; and one_mask_cell is false for every s where some footprint crosses a cell edge. And the
// three-row window: for every upscale with bilinear_window_fits(Hin, Hr, VEC) and copy row offsets
// around the canvas, each row inside the copy has window_rows' weights equal to linear_tap's and its
// taps' rows in the window rows (hi, hi + 1) it picks -- checked to fail for sizes that do not fit.
#include <cstdio>
#include <initializer_list>

#include "expect.h"

#include "masked_perturb/specialize.h"
#include "masked_perturb/window_tiling.h"

using namespace reprogram_ext;
using namespace reprogram_ext::window_tiling;

// Whether every footprint of an H x W canvas lies in one cell; EXPECTs it when one_mask_cell says so.
template <int VEC>
bool check_canvas(int32_t H, int32_t W, int32_t s) {
  constexpr int kRows = reprogram_ext::window_tiling::kRows<VEC>;
  const bool claimed = one_mask_cell(s, VEC);
  bool all_one = true;
  const int32_t row_groups = (H + kRows - 1) / kRows, column_groups = W / VEC;  // W % VEC == 0 (128-bit rows)
  for (int32_t rg = 0; rg < row_groups; ++rg) {
    for (int32_t cg = 0; cg < column_groups; ++cg) {
      const int32_t h0 = first_row<VEC, int32_t>(rg), w0 = first_column<int32_t>(cg, VEC);
      EXPECT(h0 < H && w0 + VEC <= W, "H %d W %d VEC %d: thread (%d, %d) starts at (%d, %d)", H, W, VEC, rg, cg, h0, w0);
      for (int32_t h = h0; h < h0 + kRows && h < H; ++h) {
        for (int32_t w = w0; w < w0 + VEC; ++w) {
          const bool same = h / s == h0 / s && w / s == w0 / s;
          all_one = all_one && same;
          if (claimed)
            EXPECT(same, "H %d W %d s %d VEC %d: (%d, %d) in cell (%d, %d), the thread reads (%d, %d)", H, W, s, VEC, h, w,
                   h / s, w / s, h0 / s, w0 / s);
        }
      }
    }
  }
  return all_one;
}

// Whether every thread's rows of an H-row canvas (copy row offset oy, Hin -> Hr rows) inside the copy
// have window_rows' taps equal to linear_tap's and those taps' rows in the window rows they pick;
// EXPECTs it when `expect`.
template <int VEC>
bool check_rows(int32_t Hin, int32_t Hr, int32_t H, int32_t oy, bool expect) {
  constexpr int kRows = reprogram_ext::window_tiling::kRows<VEC>;
  const float scale = static_cast<float>(Hin) / static_cast<float>(Hr);
  bool all = true;
  for (int32_t h0 = first_row<VEC, int32_t>(0); h0 < H; h0 += kRows) {
    ColumnRun<kRows, float> rows;
    const int32_t y0 = h0 - oy;
    const int32_t rbase = window_rows<kRows, float, int32_t>(y0, Hin, scale, rows);
    EXPECT(rbase >= 0 && rbase < Hin, "VEC %d Hin %d Hr %d: window base %d", VEC, Hin, Hr, rbase);
    for (int r = 0; r < kRows && h0 + r < H; ++r) {
      const int32_t y = y0 + r;
      if (y < 0 || y >= Hr) continue;  // masked out (rm = 0): any window row
      const auto ref = linear_tap<float, int32_t>(y, Hin, scale);
      const int slot = rows.hi[r] ? 1 : 0;
      const bool ok = rows.l0[r] == ref.l0 && rows.l1[r] == ref.l1 && window_column<int32_t>(rbase, slot, Hin) == ref.i0 &&
                      window_column<int32_t>(rbase, slot + 1, Hin) == ref.i1;
      all = all && ok;
      if (expect)
        EXPECT(ok, "VEC %d Hin %d Hr %d H %d oy %d: row %d (y %d) taps %d, %d (%g, %g); window base %d slot %d (%g, %g)", VEC, Hin, Hr, H,
               oy, h0 + r, y, ref.i0, ref.i1, ref.l0, ref.l1, rbase, slot, rows.l0[r], rows.l1[r]);
    }
  }
  return all;
}

template <int VEC>
void check_all_rows() {
  constexpr int kRows = reprogram_ext::window_tiling::kRows<VEC>;
  int fitting = 0, not_fitting_caught = 0;
  for (int32_t Hin = 1; Hin <= 24; ++Hin) {
    for (int32_t Hr : {Hin + 1, Hin + 2, 2 * Hin, 3 * Hin, 3 * Hin + 1, 4 * Hin - 1, 4 * Hin, 5 * Hin + 3, 7 * Hin, 8 * Hin,
                       9 * Hin + 2, 224}) {
      if (Hr <= Hin) continue;
      const bool fits = bilinear_window_fits<float>(Hin, Hr, kRows);
      bool all = true;
      for (int32_t oy : {0, 1, 3, -1, -2, -5})
        for (int32_t H : {Hr, Hr + 3, Hr + 8}) all = check_rows<VEC>(Hin, Hr, H, oy, fits) && all;
      fitting += fits;
      not_fitting_caught += !fits && !all;
    }
  }
  EXPECT(fitting > 30 && not_fitting_caught > 20, "VEC %d: %d fitting sizes, %d non-fitting ones caught", VEC, fitting,
         not_fitting_caught);
}

template <int VEC>
void check_all_cells() {
  for (int32_t s = 1; s <= 40; ++s) {
    bool crosses = false;  // some canvas has a footprint over a cell edge
    for (int32_t H : {1, 3, 4, 7, 8, 17, 64, 224})
      for (int32_t W : {VEC, 2 * VEC, 7 * VEC, 28 * VEC}) crosses = !check_canvas<VEC>(H, W, s) || crosses;
    // one_mask_cell is exact on these canvases: false only where a footprint crosses
    EXPECT(one_mask_cell(s, VEC) == !crosses, "s %d VEC %d: one_mask_cell %d, a footprint crosses %d", s, VEC,
           one_mask_cell(s, VEC), crosses);
  }
}

int main() {
  check_all_rows<4>();
  check_all_rows<8>();
  EXPECT(bilinear_window_fits<float>(32, 224, 8) && check_rows<8>(32, 224, 224, 0, true), "SMM's 32 -> 224 rows, fp16");
  EXPECT(check_rows<4>(32, 224, 224, 0, true), "SMM's 32 -> 224 rows, fp32");
  check_all_cells<4>();
  check_all_cells<8>();
  EXPECT(one_mask_cell(8, 8) && check_canvas<8>(224, 224, 8), "SMM: 224 x 224 canvas, mask 28 x 28 (s = 8), fp16");
  EXPECT(one_mask_cell(8, 4) && check_canvas<4>(224, 224, 8), "SMM fp32");
  return report();
}
