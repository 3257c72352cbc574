// The fused CUDA backward's tiling for a per-sample mask coarser than the canvas
// (csrc/masked_perturb/cell_tiling.h, masked_perturb_cell_backward_kernel), executed on the host: every
// block and thread of a launch runs the kernel's three passes (row_pass, cell_pass, delta_pass) as the
// kernel calls them, with functors that count and check instead of computing gradients. Checked:
// - every grad_out element is read exactly once, by the thread whose footprint row holds it, its samples
//   in increasing order;
// - every row slot and delta partial slot of a block is written exactly once, and each one the cell /
//   delta pass reads was written for that cell's row / that position;
// - every mask cell and every delta position is written exactly once;
// - the dataflow: with grad_out[e] = small integers (exact in double), the cells are the footprint sums
//   (rows top to bottom) and the delta positions the batch sums.
// Also the channel-summed launch (a one-channel mask: a block holds the C channels of its cells, each with
// its own slots, and its 256 C threads write the [B, 1, Hm, Wm] cells, each the sum over the channels of
// the footprint sums): every cell written once, reading every channel's row slots of that cell.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "expect.h"

#include "masked_perturb/cell_tiling.h"

using namespace reprogram_ext::cell_tiling;

// A synthetic grad_out value (an integer, so every sum below is exact).
static double value_of(int64_t e) { return static_cast<double>((e * 7919) % 13) - 6.0; }

template <int S>
void check_launch(int32_t B, int32_t C, int32_t H, int32_t W, bool summed = false) {
  constexpr int R = kCells<S>;
  const int32_t Hm = (H + S - 1) / S, Wm = (W + S - 1) / S;
  const Geometry g{B, C, H, W, Hm, Wm};
  const int64_t n = static_cast<int64_t>(B) * C * H * W;
  const int32_t out_C = summed ? 1 : C;                      // channels of the mask gradient
  const int32_t grid_z = summed ? 1 : C, block_c = summed ? C : 1;  // blocks along z, channels per block
  std::vector<int> reads(n, 0), cell_writes(static_cast<size_t>(B) * out_C * Hm * Wm, 0);
  std::vector<int> delta_writes(static_cast<size_t>(C) * H * W, 0);
  std::vector<double> cells(cell_writes.size(), 0), delta(delta_writes.size(), 0);
  // who wrote each slot of the block: row slots -> (b, h, r); partial slots -> (h, w) of an on-canvas row
  struct RowSlot { int writes = 0; int32_t b = -1, h = -1, r = -1; double v = 0; };
  struct PartSlot { int writes = 0; bool ok = false; int32_t h = -1, w = -1; double v = 0; };
  for (int32_t bz = 0; bz < grid_z; ++bz) {
    for (int32_t by = 0; by < Hm; ++by) {
      for (int32_t bx = 0; bx < strips<S>(Wm); ++bx) {
        // the block's channel groups (one, or C on a channel-summed launch), each with its own slots
        std::vector<std::vector<RowSlot>> rows_of(block_c, std::vector<RowSlot>(row_slots<S>(B)));
        std::vector<std::vector<PartSlot>> parts_of(block_c, std::vector<PartSlot>(partial_slots<S>()));
        for (int32_t cz = 0; cz < block_c; ++cz) {
        const Block blk = block<S>(bx, by, summed ? cz : bz);
        std::vector<RowSlot>& rows = rows_of[cz];
        std::vector<PartSlot>& parts = parts_of[cz];
        for (int j = 0; j < kChunks; ++j) {
          for (int tx = 0; tx < kRowThreads; ++tx) {
            const RowThread t = row_thread<S>(g, blk, tx);
            double sum_d[S] = {};
            int32_t last_b = -1;
            row_pass<S>(g, blk, t, j, [&](int32_t b, int32_t off, int32_t slot) {
              EXPECT(b > last_b && b < B, "S %d: thread (%d, %d) sample %d after %d", S, tx, j, b, last_b);
              last_b = b;
              EXPECT(t.h < H && t.r < Wm && t.w + S <= W, "S %d: row (%d, %d, %d) off the canvas", S, t.h, t.r, t.w);
              const int64_t first = ((static_cast<int64_t>(b) * C + blk.c) * H + t.h) * W + t.w;
              EXPECT(off == first, "S %d: offset %d, expected %lld", S, off, static_cast<long long>(first));
              EXPECT(off % 4 == 0, "S %d: row offset %d not 16-byte aligned (fp32)", S, off);
              double row = 0;
              for (int i = 0; i < S; ++i) {
                ++reads[off + i];
                row += value_of(off + i);
                sum_d[i] += value_of(off + i);
              }
              EXPECT(slot >= 0 && slot < row_slots<S>(B), "S %d: row slot %d", S, slot);
              RowSlot& rs = rows[slot];
              ++rs.writes;
              rs.b = b, rs.h = t.h, rs.r = t.r, rs.v = row;
            });
            for (int i = 0; i < S; ++i) {  // the kernel stores every thread's S partials
              const int32_t slot = partial_slot<S>(j, t, i);
              EXPECT(slot >= 0 && slot < partial_slots<S>(), "S %d: partial slot %d", S, slot);
              PartSlot& ps = parts[slot];
              ++ps.writes;
              ps.ok = t.ok, ps.h = t.h, ps.w = t.w + i, ps.v = sum_d[i];
            }
          }
        }
        for (const PartSlot& ps : parts) EXPECT(ps.writes == 1, "S %d: partial slot written %d times", S, ps.writes);
        }
        // after the barrier: the cell pass of every thread of the block (c 256 + tid on a summed launch)
        for (int32_t cz = 0; cz < block_c; ++cz)
        for (int tid = 0; tid < kThreads; ++tid) {
          const Block blk = block<S>(bx, by, summed ? cz : bz);
          cell_pass<S>(g, blk, summed ? cz * kThreads + tid : tid, summed,
                       [&](int32_t b, int32_t cell, int32_t first, int32_t nrows) {
            EXPECT(nrows >= 1 && nrows <= S && blk.q * S + nrows == (H < blk.q * S + S ? H : blk.q * S + S),
                   "S %d: %d footprint rows at q %d", S, nrows, blk.q);
            const int32_t r = cell % Wm;
            const int32_t want_c = summed ? 0 : blk.c;
            EXPECT(cell / Wm == (b * out_C + want_c) * Hm + blk.q, "S %d: cell %d of (b %d, c %d, q %d)", S, cell, b,
                   want_c, blk.q);
            double total = 0;
            for (int32_t c = 0; c < block_c; ++c) {  // a summed cell reads every channel group's slots
              for (int32_t i = 0; i < nrows; ++i) {
                const RowSlot& rs = rows_of[c][first + i * R];
                EXPECT(rs.writes == 1 && rs.b == b && rs.h == blk.q * S + i && rs.r == r,
                       "S %d: row slot %d (b %d h %d r %d, written %d) read for cell (b %d, row %d, r %d)", S,
                       first + i * R, rs.b, rs.h, rs.r, rs.writes, b, blk.q * S + i, r);
                total += rs.v;
              }
            }
            ++cell_writes[cell];
            cells[cell] = total;
          });
        }
        for (int32_t cz = 0; cz < block_c; ++cz)
        for (int tid = 0; tid < kThreads; ++tid) {
          const Block blk = block<S>(bx, by, summed ? cz : bz);
          const std::vector<PartSlot>& parts = parts_of[cz];
          delta_pass<S>(g, blk, tid, [&](int32_t h, int32_t w, int32_t pos, int32_t first) {
            EXPECT(pos == (blk.c * H + h) * W + w, "S %d: position %d of (%d, %d)", S, pos, h, w);
            double total = 0;
            for (int jj = 0; jj < kChunks; ++jj) {
              const PartSlot& ps = parts[first + jj * S * kStripColumns];
              EXPECT(ps.ok && ps.h == h && ps.w == w, "S %d: partial of (%d, %d) read for (%d, %d)", S, ps.h, ps.w, h, w);
              total += ps.v;
            }
            ++delta_writes[pos];
            delta[pos] = total;
          });
        }
      }
    }
  }
  for (int64_t e = 0; e < n; ++e) EXPECT(reads[e] == 1, "S %d B %d C %d H %d W %d: element %lld read %d times", S, B, C, H, W, static_cast<long long>(e), reads[e]);
  // reference sums: cell = footprint sum, delta = batch sum
  std::vector<double> ref_cells(cells.size(), 0), ref_delta(delta.size(), 0);
  for (int32_t b = 0; b < B; ++b)
    for (int32_t c = 0; c < C; ++c)
      for (int32_t h = 0; h < H; ++h)
        for (int32_t w = 0; w < W; ++w) {
          const int64_t e = ((static_cast<int64_t>(b) * C + c) * H + h) * W + w;
          ref_cells[((b * out_C + (summed ? 0 : c)) * Hm + h / S) * Wm + w / S] += value_of(e);
          ref_delta[(c * H + h) * W + w] += value_of(e);
        }
  for (size_t i = 0; i < cells.size(); ++i) {
    EXPECT(cell_writes[i] == 1, "S %d B %d C %d H %d W %d: cell %zu written %d times", S, B, C, H, W, i, cell_writes[i]);
    EXPECT(cells[i] == ref_cells[i], "S %d: cell %zu = %g, expected %g", S, i, cells[i], ref_cells[i]);
  }
  for (size_t i = 0; i < delta.size(); ++i) {
    EXPECT(delta_writes[i] == 1, "S %d B %d C %d H %d W %d: delta position %zu written %d times", S, B, C, H, W, i, delta_writes[i]);
    EXPECT(delta[i] == ref_delta[i], "S %d: delta %zu = %g, expected %g", S, i, delta[i], ref_delta[i]);
  }
}

int main() {
  // SMM's benchmark shape (B 64, 3 x 224 x 224, mask_scale 8), then batches around the chunk count,
  // heights ending inside a footprint, widths of a partial strip.
  check_launch<8>(64, 3, 224, 224);
  const int32_t batches[] = {1, 2, 7, 8, 9, 17};
  for (int32_t B : batches) {
    check_launch<4>(B, 1, 13, 36);
    check_launch<4>(B, 3, 32, 32);
    check_launch<8>(B, 1, 21, 40);
    check_launch<8>(B, 2, 24, 224);
    check_launch<16>(B, 1, 35, 48);
    check_launch<16>(B, 3, 16, 16);
    check_launch<4>(B, 3, 13, 36, true);  // channel-summed launches (one-channel mask)
    check_launch<8>(B, 2, 21, 40, true);
    check_launch<16>(B, 3, 35, 48, true);
  }
  check_launch<8>(64, 3, 224, 224, true);
  // more cells than 256 (B R > 256): the cell pass reaches the threads of channel groups 1 and 2
  check_launch<4>(40, 3, 13, 36, true);
  check_launch<8>(100, 2, 16, 64, true);
  return report();
}
