// The CUDA flat backward's tiling (csrc/masked_perturb/flat_backward_tiling.h), executed on the host: for
// every block, warp, lane and sample of a launch, as masked_perturb_backward_flat_kernel walks them,
// - each 128-bit group read starts 16-byte aligned in grad_out, every element read (a lane's whole group or
//   its one extra element, lane_step) lies in the warp's slice and the plane, every offset formed lies below
//   offset_bound, and every grad_out element (b, q) is read exactly once (the fetches kDepth steps ahead
//   included: past the chunk they read nothing); at most one lane besides lane 0 leaves its group to the
//   extra lanes; no staging slot is stored twice in a step;
// - step n is summed from buffer buffer_of(n), fetched for step n; lane l's position S + VEC * l + m takes
//   the element of that position from the staging row (stage_slot, staged_index: group l or l + 1,
//   group 32's and lane 0's split group's elements staged by the extra lanes), one that was read, or 0 past
//   the plane's end;
// - the chunks of each slice cover the batch once, in increasing order; each shared-memory partial slot
//   is written once per block; every plane position is finished exactly once, from the J partials of its
//   own slice and offset, and its total equals the batch sum of the values placed at it.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "expect.h"
#include "masked_perturb/flat_backward_tiling.h"

using namespace reprogram_ext::flat_backward_tiling;

// grad_out[f] = f + 1 (exact in int64), so a sum names the elements it took.
template <int VEC>
void check_launch(int32_t plane, int32_t B) {
  const int64_t n_slices = slices<VEC>(plane);
  const int log2J = log2_chunks(B, n_slices), J = 1 << log2J;
  const int spb = slices_per_block(log2J), threads = block_threads(log2J), warps = threads / kLanes;
  EXPECT(J <= B || J == 1, "J %d for B %d", J, B);
  EXPECT(threads <= 1024 && threads % kLanes == 0 && warps == spb * J, "block of %d threads", threads);
  std::vector<int> reads(static_cast<size_t>(plane) * B, 0), finished(plane, 0);
  const int64_t n_blocks = blocks(n_slices, log2J);
  for (int32_t bx = 0; bx < n_blocks; ++bx) {
    std::vector<int64_t> part(static_cast<size_t>(spb) * J * kSlice<VEC>, 0);
    std::vector<int> written(part.size(), 0);
    for (int w = 0; w < warps; ++w) {
      const int32_t slice = slice_of<int32_t>(bx, w, log2J);
      const int j = chunk_of(w, log2J), sl = w >> log2J;
      EXPECT(slice == bx * spb + sl, "slice %d of warp %d", slice, w);
      const int32_t S = slice * kSlice<VEC>;
      const int32_t b0 = chunk_begin<int32_t>(B, j, log2J), b1 = chunk_begin<int32_t>(B, j + 1, log2J);
      EXPECT(b0 <= b1 && (j > 0 || b0 == 0) && (j < J - 1 || b1 == B), "chunk %d: %d .. %d of %d", j, b0, b1, B);
      EXPECT(b1 - b0 <= max_chunk<int32_t>(B, log2J), "chunk %d: %d samples, max_chunk %d", j, b1 - b0,
             max_chunk<int32_t>(B, log2J));
      const int32_t steps = max_chunk<int32_t>(B, log2J);
      // One fetched batch step of the warp, as the kernel's register buffers hold it: lane k's group (VEC
      // values, 0 where it reads nothing), whether it stages them, its extra element and that one's slot.
      struct Fetched {
        int32_t step;
        int r;
        int64_t v[kLanes][VEC];
        bool staged[kLanes];
        int64_t extra[kLanes];
        int slot[kLanes];
      };
      // An element read: its value (its flat index + 1) and its staging slot (its position - S + r).
      auto read = [&](int32_t b, int32_t q, int k, const char* how) {
        EXPECT(q >= S && q < S + kSlice<VEC> && q >= 0 && q < plane, "VEC %d plane %d b %d lane %d (%s): q %d", VEC, plane,
               b, k, how, q);
        if (q >= 0 && q < plane) ++reads[static_cast<size_t>(b) * plane + q];
        return static_cast<int64_t>(b) * plane + q + 1;
      };
      // fetch_groups: sample b0 + n's elements of the slice for every lane (lane_step), counting the reads
      auto fetch = [&](int32_t n) {
        Fetched f{n, 0, {}, {}, {}, {}};
        const int32_t b = b0 + n;
        const bool in_chunk = b < b1;
        f.r = shift<VEC>(b, plane, S);
        const int32_t pos0 = group_position<VEC>(S, f.r, 0), left = plane - pos0;
        const int64_t flat0 = static_cast<int64_t>(b) * plane + pos0;  // the kernel's int32 offset of group 0
        EXPECT(flat0 >= 0, "VEC %d plane %d b %d: group 0 at %lld", VEC, plane, b, static_cast<long long>(flat0));
        int crossing_lanes = 0;
        for (int k = 0; k < kLanes; ++k) {
          const LaneStep st = lane_step<VEC>(k, f.r, left);
          const int32_t pos = group_position<VEC>(S, f.r, k);
          EXPECT(st.whole == (k > 0 && whole_group<VEC>(k, f.r, pos, plane)), "VEC %d plane %d b %d k %d: whole", VEC, plane,
                 b, k);
          f.staged[k] = st.staged;
          f.slot[k] = st.slot;
          EXPECT(st.slot < 0 || (k < 2 * VEC && st.slot < kStage<VEC>), "VEC %d plane %d b %d k %d: slot %d", VEC, plane, b,
                 k, st.slot);
          if (!st.staged && k != 0) ++crossing_lanes;
          if (in_chunk && st.whole) {
            const int64_t flat = flat0 + VEC * k;
            EXPECT(flat % VEC == 0 && flat + VEC <= offset_bound<VEC>(B, plane), "VEC %d plane %d b %d k %d: 128-bit group at %lld",
                   VEC, plane, b, k, static_cast<long long>(flat));
            for (int i = 0; i < VEC; ++i) f.v[k][i] = read(b, pos + i, k, "group");
          }
          if (st.slot >= 0) {
            EXPECT(flat0 + st.slot < offset_bound<VEC>(B, plane), "VEC %d plane %d b %d k %d: offset %lld + %d", VEC, plane, b,
                   k, static_cast<long long>(flat0), st.slot);
            if (in_chunk && st.slot < left) f.extra[k] = read(b, pos0 + st.slot, k, "extra");
          }
        }
        EXPECT(crossing_lanes <= 1, "VEC %d plane %d b %d: %d lanes leave their group to the extra lanes", VEC, plane, b,
               crossing_lanes);
        return f;
      };
      int64_t sums[kLanes][VEC] = {};
      // the kernel's loop: buffers d = 0 .. kDepth - 1 fetched ahead, steps in rounds of kDepth
      std::vector<Fetched> buf;
      for (int d = 0; d < kDepth; ++d) buf.push_back(d < steps ? fetch(d) : Fetched{-1, 0, {}, {}, {}, {}});
      for (int32_t n0 = 0; n0 < steps; n0 += kDepth) {
        for (int d = 0; d < kDepth; ++d) {
          const int32_t n = n0 + d;
          if (d > 0 && n >= steps) break;
          EXPECT(buffer_of(n) == d && buf[d].step == n, "step %d in buffer %d holds step %d", n, d, buf[d].step);
          const int32_t b = b0 + n;
          const int r = buf[d].r;
          EXPECT(r == shift<VEC>(b, plane, S), "step %d: shift", n);
          for (int k = 0; k < kLanes; ++k)
            for (int i = 0; i < VEC; ++i) {
              const int slot = stage_slot<VEC>(k, i, r);
              EXPECT(slot == k * VEC + i || (k == 0 && slot == kSlice<VEC> + i), "VEC %d k %d i %d r %d: slot %d", VEC,
                     k, i, r, slot);
            }
          // staging: the staged lanes' groups at k * VEC, then the extra elements at their slots; no slot twice
          std::vector<int64_t> stage(kStage<VEC>, -1);
          std::vector<int> stores(kStage<VEC>, 0);
          for (int k = 0; k < kLanes; ++k)
            if (buf[d].staged[k])
              for (int i = 0; i < VEC; ++i) stage[k * VEC + i] = buf[d].v[k][i], ++stores[k * VEC + i];
          for (int k = 0; k < kLanes; ++k)
            if (buf[d].slot[k] >= 0 && buf[d].slot[k] < kStage<VEC>)
              stage[buf[d].slot[k]] = buf[d].extra[k], ++stores[buf[d].slot[k]];
          for (int e = 0; e < kStage<VEC>; ++e)
            EXPECT(stores[e] <= 1, "VEC %d plane %d b %d r %d: stage slot %d stored %d times", VEC, plane, b, r, e, stores[e]);
          for (int l = 0; l < kLanes; ++l) {
            for (int m = 0; m < VEC; ++m) {
              const int32_t q = S + VEC * l + m;
              const int idx = staged_index<VEC>(l, m, r);
              EXPECT(idx >= 0 && idx < kStage<VEC>, "VEC %d l %d m %d r %d: staged at %d", VEC, l, m, r, idx);
              const int64_t want = b < b1 && q < plane ? static_cast<int64_t>(b) * plane + q + 1 : 0;
              EXPECT(stage[idx] == want, "VEC %d plane %d b %d l %d m %d: holds %lld, want %lld", VEC, plane, b, l, m,
                     static_cast<long long>(stage[idx]), static_cast<long long>(want));
              sums[l][m] += stage[idx];
            }
          }
          if (fetch_step(n) < steps) buf[d] = fetch(fetch_step(n));  // reads nothing past the chunk
        }
      }
      for (int l = 0; l < kLanes; ++l) {
        for (int m = 0; m < VEC; ++m) {
          const int slot = partial_slot<VEC>(sl, j, l * VEC + m, log2J);
          EXPECT(slot >= 0 && slot < static_cast<int>(part.size()), "slot %d", slot);
          EXPECT(slot == w * kSlice<VEC> + l * VEC + m, "slot %d of warp %d", slot, w);  // the kernel's 128-bit store
          if (slot < 0 || slot >= static_cast<int>(part.size())) continue;
          ++written[slot];
          part[slot] = sums[l][m];
        }
      }
    }
    for (size_t s = 0; s < written.size(); ++s) EXPECT(written[s] == 1, "block %d slot %zu written %d", bx, s, written[s]);
    for (int s = 0; s < spb * kSlice<VEC>; ++s) {
      const int32_t q = epilogue_position<VEC>(bx, s, log2J);
      if (q >= plane) continue;
      ++finished[q];
      int64_t total = 0;
      for (int j = 0; j < J; ++j) total += part[partial_slot<VEC>(s / kSlice<VEC>, j, s % kSlice<VEC>, log2J)];
      // sum over b of (b * plane + q + 1)
      const int64_t want = static_cast<int64_t>(plane) * B * (B - 1) / 2 + static_cast<int64_t>(q + 1) * B;
      EXPECT(total == want, "VEC %d plane %d B %d q %d: total %lld, want %lld", VEC, plane, B, q,
             static_cast<long long>(total), static_cast<long long>(want));
    }
  }
  for (int32_t b = 0; b < B; ++b)
    for (int32_t q = 0; q < plane; ++q)
      EXPECT(reads[static_cast<size_t>(b) * plane + q] == 1, "VEC %d plane %d B %d: (b %d, q %d) read %d times", VEC,
             plane, B, b, q, reads[static_cast<size_t>(b) * plane + q]);
  for (int32_t q = 0; q < plane; ++q) EXPECT(finished[q] == 1, "VEC %d plane %d: q %d finished %d times", VEC, plane, q, finished[q]);
}

int main() {
  // J: Elsayed's B = 17 on 3 x 223 x 225 (1176 slices of 128 at VEC 4) takes 4 chunks of >= 4 samples (4 waves
  // would want 16); small planes take up to 32 when B has 4 samples per chunk; B < 8: one chunk
  EXPECT(log2_chunks(17, slices<4>(3 * 223 * 225)) == 2, "Elsayed J = %d", 1 << log2_chunks(17, slices<4>(3 * 223 * 225)));
  EXPECT(log2_chunks(1, 5) == 0 && log2_chunks(7, 5) == 0 && log2_chunks(8, 5) == 1 && log2_chunks(64, 5) == 4 &&
             log2_chunks(128, 5) == 5 && log2_chunks(1024, 5) == 5 && log2_chunks(1024, 1 << 20) == 0,
         "J rule");
  // planes: tiny, odd, one slice (128 / 256), slice and block edges, Elsayed's 3 x 223 x 225
  const int32_t planes[] = {1, 3, 5, 7, 127, 128, 129, 255, 257, 429, 1023, 1025, 2049, 3 * 31 * 29, 3 * 223 * 225};
  const int32_t batches[] = {1, 2, 3, 5, 8, 9, 16, 17, 33, 64, 130};
  for (int32_t plane : planes) {
    for (int32_t B : batches) {
      if (static_cast<int64_t>(plane) * B > 3000000) continue;  // Elsayed's plane up to B = 17
      check_launch<4>(plane, B);
      check_launch<8>(plane, B);
    }
  }
  return report();
}
