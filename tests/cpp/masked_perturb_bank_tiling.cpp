// The CUDA prompt-bank forward's work split (csrc/masked_perturb/bank_tiling.h), executed on the host as
// masked_perturb_bank_forward_kernel (cuda_bank_forward.cu) walks it: for every block, thread and program
// tile, the thread's shared-memory slot writes, the reads after the barrier, and its stores. Checks that
// every element of the [V * B, C, H, W] output is stored exactly once, by a thread whose x sample is the
// element's sample, with the activation that the block computed for the element's own program and position
// (delta element (v, c?, h, w) at delta's strides), and that every read stays inside x's batch.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "expect.h"

#include "masked_perturb/bank_tiling.h"

using namespace reprogram_ext;
using namespace reprogram_ext::bank_tiling;

namespace {

// What a shared slot holds: program v and delta element e, or nothing (v = -1).
struct Held {
  int32_t v = -1, e = -1;
};

template <int VEC>
void check_launch(int32_t V, int32_t B, int32_t C, int32_t H, int32_t W, bool one_channel_delta) {
  constexpr unsigned G = kThreads / VEC;
  const int32_t gpr = (W + VEC - 1) / VEC, groups = C * H * gpr, plane = C * H * W;
  const int32_t sd2 = W, sd1 = one_channel_delta ? 0 : H * W, sdv = (one_channel_delta ? 1 : C) * H * W;
  const FastDivmod div_gpr(static_cast<uint32_t>(gpr)), div_h(static_cast<uint32_t>(H));
  const unsigned pbs = static_cast<unsigned>(position_blocks(groups, VEC)), sbs = static_cast<unsigned>(sample_blocks(B, VEC));
  EXPECT(pbs * G >= static_cast<unsigned>(groups) && (pbs - 1) * G < static_cast<unsigned>(groups), "position blocks %u", pbs);
  EXPECT(sbs * VEC >= static_cast<unsigned>(B) && (sbs - 1) * VEC < static_cast<unsigned>(B), "sample blocks %u", sbs);
  std::vector<int> stored(static_cast<size_t>(V) * B * plane, 0);
  int bad = 0;
  for (unsigned pb = 0; pb < pbs; ++pb) {
    for (unsigned sb = 0; sb < sbs; ++sb) {
      std::vector<Thread> th(kThreads);
      for (unsigned tid = 0; tid < kThreads; ++tid) {
        th[tid] = thread_of<VEC>(sb, pb, tid, groups, B, gpr, div_gpr, H, div_h);
        const Thread& t = th[tid];
        EXPECT(t.b_read >= 0 && t.b_read < B, "B %d: thread %u of block (%u, %u) reads sample %d", B, tid, sb, pb, t.b_read);
        EXPECT(t.w0 >= 0 && t.w0 < W && t.c < C && t.h < H, "thread %u of block %u: c %d h %d w0 %d", tid, pb, t.c, t.h, t.w0);
        if (t.live) EXPECT(t.b_read == t.b, "a live thread reads sample %d, stores %d", t.b_read, t.b);
      }
      for (int32_t v0 = 0; v0 < V; v0 += kEntriesPerTile) {
        const int n = tile_entries(V, v0);
        EXPECT(n >= 1 && n <= kEntriesPerTile && v0 + n <= V, "V %d v0 %d: %d entries", V, v0, n);
        std::vector<Held> slots(kEntriesPerTile * kThreads);
        for (unsigned tid = 0; tid < kThreads; ++tid) {  // before the barrier: the activations
          const Thread& t = th[tid];
          const int32_t e = t.c * sd1 + t.h * sd2 + (t.w0 + static_cast<int32_t>(t.s));
          for (int j = 0; j < n; ++j) {
            Held& h = slots[slot<VEC>(j, t.gl, t.s)];
            EXPECT(h.v < 0, "slot (%d, %u, %u) written twice", j, t.gl, t.s);
            h = Held{v0 + j, e};
          }
        }
        for (unsigned tid = 0; tid < kThreads; ++tid) {  // after it: the outputs
          const Thread& t = th[tid];
          if (!t.live) continue;
          for (int j = 0; j < n; ++j) {
            const int32_t v = v0 + j;
            const int32_t o = out_offset(v, t.b, B, plane, t.row, W, t.w0);
            for (int i = 0; i < VEC; ++i) {
              const int32_t w = t.w0 + i;
              const Held& h = slots[slot<VEC>(j, t.gl, static_cast<unsigned>(i))];
              const int32_t want_e = t.c * sd1 + t.h * sd2 + w;
              if (h.v != v || h.e != want_e) {
                if (++bad <= 5) EXPECT(false, "V %d B %d: out (v %d, b %d, c %d, h %d, w %d) got act of (v %d, e %d), want (%d, %d)",
                                       V, B, v, t.b, t.c, t.h, w, h.v, h.e, v, want_e);
              }
              const int64_t off = static_cast<int64_t>(o) + i;
              const int64_t want_off = ((static_cast<int64_t>(v) * B + t.b) * C + t.c) * H * W + t.h * W + w;
              EXPECT(off == want_off, "out (v %d, b %d, c %d, h %d, w %d) at %lld, want %lld", v, t.b, t.c, t.h, w,
                     static_cast<long long>(off), static_cast<long long>(want_off));
              EXPECT(want_e + v * sdv < V * sdv, "delta read past the bank");
              if (off >= 0 && off < static_cast<int64_t>(stored.size())) ++stored[off];
            }
          }
        }
      }
    }
  }
  int64_t wrong = 0;
  for (int x : stored) wrong += x != 1;
  EXPECT(wrong == 0, "VEC %d V %d B %d C %d H %d W %d: %lld output elements not stored exactly once", VEC, V, B, C, H, W,
         static_cast<long long>(wrong));
}

}  // namespace

int main() {
  for (int32_t V : {1, 2, 3, 7, 8, 9, 17})
    for (int32_t B : {1, 3, 4, 5, 9})
      for (bool one : {false, true}) {
        check_launch<4>(V, B, 3, 5, 12, one);  // 45 groups: one partial block
        check_launch<8>(V, B, 2, 3, 16, one);
      }
  check_launch<4>(3, 7, 3, 20, 40, false);  // 600 groups: several blocks along x
  check_launch<4>(8, 64, 3, 16, 224, true);  // ILM-VP's rows (224 wide), B = 64: 16 blocks along y
  check_launch<8>(9, 17, 1, 7, 24, false);
  // The kernel reads a group's VEC activations as float4s at slot(j, gl, 0), slot(j, gl, 4): contiguous,
  // 16-byte aligned, inside the [kEntriesPerTile][kThreads] array.
  for (int j = 0; j < kEntriesPerTile; ++j)
    for (unsigned gl = 0; gl < kThreads / 4; ++gl)
      for (unsigned i = 0; i < 4; ++i) {
        EXPECT(slot<4>(j, gl, i) == slot<4>(j, gl, 0) + i && slot<4>(j, gl, 0) % 4 == 0 &&
               slot<4>(j, gl, i) < kEntriesPerTile * kThreads, "VEC 4 slot (%d, %u, %u)", j, gl, i);
        if (gl < kThreads / 8)
          for (unsigned i8 = i; i8 < 8; i8 += 4)
            EXPECT(slot<8>(j, gl, i8) == slot<8>(j, gl, 0) + i8 && slot<8>(j, gl, 0) % 4 == 0 &&
                   slot<8>(j, gl, i8) < kEntriesPerTile * kThreads, "VEC 8 slot (%d, %u, %u)", j, gl, i8);
      }
  EXPECT(tile_entries(8, 0) == 8 && tile_entries(9, 8) == 1 && tile_entries(3, 0) == 3, "tile_entries");
  const int64_t ilmvp_groups = 3 * 224 * 56, lim = INT32_MAX - 256;
  EXPECT(position_blocks(ilmvp_groups, 4) == 588 && sample_blocks(64, 4) == 16, "ILM-VP's grid (16, 588)");
  EXPECT(launch_fits(8, 64, 3 * 224 * 224, ilmvp_groups, 4, 8 * 3 * 224 * 224, lim), "ILM-VP's bank fits one launch");
  EXPECT(!launch_fits(8, 4096, 3 * 224 * 224, ilmvp_groups, 4, 8 * 3 * 224 * 224, lim), "V B plane >= 2^31");
  EXPECT(!launch_fits(2, 1, 3 * 4096 * 4096, 3 * 4096 * 1024, 4, 2 * 3 * 4096 * 4096, lim), "> 65535 position blocks");
  return report();
}
