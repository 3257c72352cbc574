// The CUDA batch-shared forward's batch tiling (csrc/masked_perturb/batch_tiling.h), executed on the
// host as forward_batch_shared_rows walks it: for every block along y and sample lane s, the thread
// returns when b_0 >= B, each slot's read sample lies inside the batch, and every sample of the batch
// is stored exactly once.
#include <cstdio>
#include <vector>

#include "expect.h"

#include "masked_perturb/batch_tiling.h"

using namespace reprogram_ext::batch_tiling;

void check_launch(int32_t B, int S, int VEC) {
  std::vector<int> stored(B, 0);
  const int64_t blocks = blocks_y(B, S, VEC);
  EXPECT(blocks * S * VEC >= B && (blocks - 1) * S * VEC < B, "B %d S %d VEC %d: %lld blocks", B, S, VEC,
         static_cast<long long>(blocks));
  for (unsigned y = 0; y < blocks; ++y) {
    for (int s = 0; s < VEC; ++s) {
      const int32_t b0 = sample<int32_t>(y, S, VEC, s, 0);
      if (b0 >= B) continue;  // the thread returns
      for (int j = 0; j < S; ++j) {
        const int32_t b = sample<int32_t>(y, S, VEC, s, j);
        const bool st = stores<int32_t>(j, b, B);
        const int32_t read = st ? b : b0;  // the sample whose x the slot reads
        EXPECT(read >= 0 && read < B, "B %d S %d VEC %d y %u s %d j %d reads sample %d", B, S, VEC, y, s, j, read);
        if (st) {
          EXPECT(b >= 0 && b < B, "B %d S %d VEC %d y %u s %d j %d stores sample %d", B, S, VEC, y, s, j, b);
          if (b >= 0 && b < B) ++stored[b];
        }
      }
    }
  }
  for (int32_t b = 0; b < B; ++b)
    EXPECT(stored[b] == 1, "B %d S %d VEC %d: sample %d stored %d times", B, S, VEC, b, stored[b]);
}

int main() {
  for (int VEC : {4, 8})
    for (int S : {1, 2})
      for (int32_t B = 1; B <= 70; ++B) check_launch(B, S, VEC);
  check_launch(64, 2, 4);  // AutoVP's B = 64, fp32
  return report();
}
