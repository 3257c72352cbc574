// The CUDA bilinear window forward's row tiling (csrc/masked_perturb/window_tiling.h), executed on the
// host as forward_per_thread walks it: for every thread (row group, column group) of a canvas, when
// one_mask_cell(s, VEC) holds, every canvas position the thread writes (kRows rows x VEC columns,
// those < H) has the mask cell (h / s, w / s) of the thread's first position, the one cell the kernel
// reads; and one_mask_cell is false for every s where some footprint crosses a cell edge.
#include <cstdio>
#include <initializer_list>

#include "expect.h"

#include "masked_perturb/window_tiling.h"

using namespace reprogram_ext::window_tiling;

// Whether every footprint of an H x W canvas lies in one cell; EXPECTs it when one_mask_cell says so.
bool check_canvas(int32_t H, int32_t W, int32_t s, int VEC) {
  const bool claimed = one_mask_cell(s, VEC);
  bool all_one = true;
  const int32_t row_groups = (H + kRows - 1) / kRows, column_groups = W / VEC;  // W % VEC == 0 (128-bit rows)
  for (int32_t rg = 0; rg < row_groups; ++rg) {
    for (int32_t cg = 0; cg < column_groups; ++cg) {
      const int32_t h0 = first_row<int32_t>(rg), w0 = first_column<int32_t>(cg, VEC);
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

int main() {
  for (int VEC : {4, 8}) {
    for (int32_t s = 1; s <= 40; ++s) {
      bool crosses = false;  // some canvas has a footprint over a cell edge
      for (int32_t H : {1, 3, 4, 7, 8, 17, 64, 224})
        for (int32_t W : {VEC, 2 * VEC, 7 * VEC, 28 * VEC})
          crosses = !check_canvas(H, W, s, VEC) || crosses;
      // one_mask_cell is exact on these canvases: false only where a footprint crosses
      EXPECT(one_mask_cell(s, VEC) == !crosses, "s %d VEC %d: one_mask_cell %d, a footprint crosses %d", s, VEC,
             one_mask_cell(s, VEC), crosses);
    }
  }
  check_canvas(224, 224, 8, 8);  // SMM: 224 x 224 canvas, mask 28 x 28 (s = 8), fp16
  check_canvas(224, 224, 8, 4);  // fp32
  return report();
}
