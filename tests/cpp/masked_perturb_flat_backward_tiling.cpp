// The CUDA flat backward's tiling (csrc/masked_perturb/flat_backward_tiling.h), executed on the host: for
// every block, warp, lane and sample of a launch, as masked_perturb_backward_flat_kernel walks them,
// - each 128-bit group read starts 16-byte aligned in grad_out, every element read lies in the warp's slice
//   and the plane, every offset formed lies below offset_bound, and every grad_out element (b, q) is read
//   exactly once (the fetches kDepth steps ahead included: past the chunk they read nothing);
// - step n is summed from buffer buffer_of(n), fetched for step n; lane l's position S + VEC * l + m takes
//   the element of that position from the staging row (stage_slot, staged_index: group l or l + 1,
//   group 32 staged by lane 0), one that was read, or nothing past the plane's end;
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
      // One fetched batch step of the warp, as the kernel's register buffers hold it: lane k's VEC values
      // (0 where it reads nothing).
      struct Fetched {
        int32_t step;
        int r;
        int64_t v[kLanes][VEC];
      };
      // fetch_groups: sample b0 + n's elements of the slice for every lane, counting the reads
      auto fetch = [&](int32_t n) {
        Fetched f{n, 0, {}};
        const int32_t b = b0 + n;
        const bool in_chunk = b < b1;
        f.r = shift<VEC>(b, plane, S);
        for (int k = 0; k < kLanes; ++k) {
          const int32_t pos = group_position<VEC>(S, f.r, k);
          const int64_t flat = static_cast<int64_t>(b) * plane + pos;  // the kernel's int32 offset of group k
          for (int i = 0; i < VEC; ++i)
            EXPECT(flat >= 0 && flat + element_offset<VEC>(k, i, f.r) < offset_bound<VEC>(B, plane),
                   "VEC %d plane %d B %d b %d k %d i %d: offset %lld + %d outside [0, %lld)", VEC, plane, B, b, k, i,
                   static_cast<long long>(flat), element_offset<VEC>(k, i, f.r),
                   static_cast<long long>(offset_bound<VEC>(B, plane)));
          const bool whole = in_chunk && whole_group<VEC>(k, f.r, pos, plane);
          if (whole) EXPECT(flat % VEC == 0, "VEC %d plane %d b %d k %d: 128-bit group at %lld", VEC, plane, b, k,
                            static_cast<long long>(flat));
          const int32_t left = in_chunk ? plane - pos : 0;
          for (int i = 0; i < VEC; ++i) {
            const int o = element_offset<VEC>(k, i, f.r);
            if (whole) EXPECT(o == i, "VEC %d k %d i %d r %d: whole group with offset %d", VEC, k, i, f.r, o);
            if (!whole && o >= left) continue;  // not read: 0
            const int32_t q = pos + o;
            EXPECT(q >= S && q < S + kSlice<VEC> && q >= 0 && q < plane, "VEC %d plane %d b %d k %d i %d: q %d", VEC,
                   plane, b, k, i, q);
            if (q >= 0 && q < plane) ++reads[static_cast<size_t>(b) * plane + q];
            f.v[k][i] = flat + o + 1;
          }
        }
        return f;
      };
      int64_t sums[kLanes][VEC] = {};
      // the kernel's loop: buffers d = 0 .. kDepth - 1 fetched ahead, steps in rounds of kDepth
      std::vector<Fetched> buf;
      for (int d = 0; d < kDepth; ++d) buf.push_back(d < steps ? fetch(d) : Fetched{-1, 0, {}});
      for (int32_t n0 = 0; n0 < steps; n0 += kDepth) {
        for (int d = 0; d < kDepth; ++d) {
          const int32_t n = n0 + d;
          if (d > 0 && n >= steps) break;
          EXPECT(buffer_of(n) == d && buf[d].step == n, "step %d in buffer %d holds step %d", n, d, buf[d].step);
          const int32_t b = b0 + n;
          const int r = buf[d].r;
          EXPECT(r == shift<VEC>(b, plane, S), "step %d: shift", n);
          // staging: lane k's values at k * VEC, lane 0's also at kSlice
          std::vector<int64_t> stage(kStage<VEC>, -1);
          for (int k = 0; k < kLanes; ++k)
            for (int i = 0; i < VEC; ++i) {
              stage[k * VEC + i] = buf[d].v[k][i];
              const int slot = stage_slot<VEC>(k, i, r);
              EXPECT(slot == k * VEC + i || (k == 0 && slot == kSlice<VEC> + i), "VEC %d k %d i %d r %d: slot %d", VEC,
                     k, i, r, slot);
            }
          for (int i = 0; i < VEC; ++i) stage[kSlice<VEC> + i] = buf[d].v[0][i];
          for (int k = 0; k < kLanes; ++k)  // each element at its stage_slot
            for (int i = 0; i < VEC; ++i) {
              const int slot = stage_slot<VEC>(k, i, r);
              if (slot >= kSlice<VEC> + r || slot < r) continue;  // lane 0's copies nobody reads
              EXPECT(stage[slot] == buf[d].v[k][i], "VEC %d k %d i %d r %d: slot %d holds another", VEC, k, i, r, slot);
            }
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
