// The CUDA flat forward's tiling (csrc/masked_perturb/flat_tiling.h), executed on the host: for every
// block, thread and pass of a launch, as masked_perturb_forward_flat_kernel walks them, the group's
// window slots stay inside the block's window, its first element is 16-byte aligned in the output,
// its positions are the window's, and every (sample, plane position) is written exactly once.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "expect.h"

#include "masked_perturb/flat_tiling.h"

using namespace reprogram_ext::flat_tiling;

template <int VEC>
void check_launch(int32_t plane, int32_t B) {
  constexpr int G = kGroups<VEC>;
  std::vector<int> writes(static_cast<size_t>(plane) * B, 0);
  const int64_t bx_n = blocks_x<VEC>(plane), by_n = blocks_y<VEC>(B);
  for (int32_t by = 0; by < by_n; ++by) {
    for (int32_t bx = 0; bx < bx_n; ++bx) {
      const int32_t Q = window_start<VEC>(bx);
      for (int t = 0; t < kThreads; ++t) {
        const int gl = t % G, s = t / G;
        if (gl == G - 1) continue;  // the idle group slot
        const int nj = passes<VEC>(by, s, B);  // the kernel's passes
        for (int j = 0; j < kPasses<VEC>; ++j) {
          const int32_t b = sample<VEC>(by, j, s);
          EXPECT((j < nj) == (b < B), "VEC %d B %d by %d s %d: pass %d of %d for sample %d", VEC, B, by, s, j, nj, b);
          if (j >= nj) break;
          const int t0 = group_slot<VEC>(gl, b, plane);
          // The kernel reads its window slots once, from pass 0's slot.
          EXPECT(t0 == group_slot<VEC>(gl, sample<VEC>(by, 0, s), plane), "VEC %d plane %d b %d gl %d: slot %d differs from pass 0's",
                 VEC, plane, b, gl, t0);
          EXPECT(t0 >= 1 && t0 + VEC <= kThreads, "VEC %d plane %d b %d gl %d: slot %d", VEC, plane, b, gl, t0);
          const int64_t first = static_cast<int64_t>(b) * plane + Q + t0;
          EXPECT(((first % VEC) + VEC) % VEC == 0, "VEC %d plane %d b %d gl %d: flat index %lld", VEC, plane, b, gl,
                static_cast<long long>(first));
          for (int i = 0; i < VEC; ++i) {
            const int32_t q = Q + t0 + i;  // the position of window slot t0 + i
            if (q >= 0 && q < plane) ++writes[static_cast<size_t>(b) * plane + q];
          }
        }
      }
    }
  }
  for (int32_t b = 0; b < B; ++b)
    for (int32_t q = 0; q < plane; ++q)
      EXPECT(writes[static_cast<size_t>(b) * plane + q] == 1, "VEC %d plane %d B %d: (b %d, q %d) written %d times",
            VEC, plane, B, b, q, writes[static_cast<size_t>(b) * plane + q]);
}

int main() {
  // planes: tiny, one block, block edges (per_block = 252 for VEC 4, 248 for VEC 8), Elsayed's 3 x 223 x 225
  const int32_t planes[] = {1, 3, 5, 7, 251, 252, 253, 255, 496, 497, 1000, 2 * 223 * 225 + 1, 3 * 223 * 225};
  const int32_t batches[] = {1, 2, 7, 8, 9, 16, 17, 33};
  for (int32_t plane : planes) {
    for (int32_t B : batches) {
      check_launch<4>(plane, B);
      check_launch<8>(plane, B);
    }
  }
  return report();
}
