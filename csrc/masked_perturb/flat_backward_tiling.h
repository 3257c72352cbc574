// The tiling of the CUDA flat backward (masked_perturb_backward_flat_kernel, cuda_flat_backward.cu) for
// rows that are not 16-byte aligned: which grad_out elements each (block, warp, lane, sample) reads, which
// lane sums each plane position, and where the chunk partials meet. __host__ __device__, so that
// tests/cpp/masked_perturb_flat_backward_tiling.cpp runs the kernel's index arithmetic on the host and
// checks that every grad_out element is read exactly once, from 16-byte aligned groups, that each lane's
// sums are those of its own positions, and that each partial slot and each output position is written once.
//
// The plane (C * H * W positions of one sample) is cut into slices of kSlice = 32 * VEC positions; a warp
// sums one slice over one chunk of the batch. Lane l owns positions S + VEC * l + m, m < VEC (S = the
// slice's first position). For sample b the flat grad_out index of S is e = b * plane + S, and with
// r = e % VEC the aligned groups that cover the slice start at e - r + VEC * k, k = 0 .. 32: group k
// holds the positions S - r + VEC * k + i, i < VEC. Lane k > 0 reads group k in one 128-bit load when it
// lies in the plane whole; group 0 from S on and, in the places of the r before S, group 32's first r
// (element_offset: "lane 0's split group"), and the group that holds the plane's end, are read one element
// per lane by the lanes l < 2 VEC (lane_step), only inside the plane, so each element is read once, by the
// warp whose slice holds its position, and no lane reads element by element. Lane l's position
// S + VEC * l + m is element m + r of group l when m + r < VEC, else element m + r - VEC of group l + 1;
// the lanes exchange them through a per-warp staging row of shared memory (stage_slot, staged_index).
//
// A block is J warps per slice (J = 2^log2_chunks(B, slices), a power of two: warp w of the slice sums the samples
// chunk_begin(j) .. chunk_begin(j + 1) - 1 in increasing order, j = w % J) times slices_per_block slices;
// the J partial sums of each position go to shared memory (partial_slot) and one thread per position adds
// them for j = 0 .. J - 1 (epilogue_position). A function of the shape only: the same bits every run.
//
// Loads in flight: a warp's batch steps n = 0 .. max_chunk - 1 run in rounds of kDepth; step n's groups
// (sample chunk_begin(j) + n) are held in register buffer n % kDepth, fetched kDepth steps ahead: the
// prologue fetches steps 0 .. kDepth - 1, and step n, once its values are staged, fetches step
// n + kDepth (if < max_chunk) into the buffer it frees (fetch_step), before its barriers. So kDepth
// 16-byte loads per thread are in flight while a step is summed; a fetch past the chunk's end reads
// nothing. The sums still take the steps in increasing order.
#pragma once

#include <cstdint>
#include <climits>
#include <type_traits>

#include <c10/macros/Macros.h>

namespace reprogram_ext {
namespace flat_backward_tiling {

constexpr int kLanes = 32;       // lanes of a warp = groups of VEC positions per slice
constexpr int kMinWarps = 8;     // warps per block at least (256 threads)
constexpr int kMaxLog2Chunks = 5;  // at most 32 batch chunks (a block of 1024 threads)
// Threads for 4 waves of 8 resident blocks of 256 threads on the 132 SMs of an H100 / H200.
constexpr int64_t kTargetThreads = int64_t(4) * 8 * 132 * 256;

template <int VEC>
constexpr int kSlice = kLanes * VEC;  // plane positions per slice

template <int VEC>
C10_HOST_DEVICE inline int64_t slices(int64_t plane) { return (plane + kSlice<VEC> - 1) / kSlice<VEC>; }

// Batch steps fetched ahead (register buffers per thread): step n's buffer n % kDepth is refilled with
// step fetch_step(n) = n + kDepth when that is < max_chunk (the prologue fetches the steps d < kDepth
// that are < max_chunk).
constexpr int kDepth = 2;
C10_HOST_DEVICE constexpr int buffer_of(int n) { return n % kDepth; }
template <typename index_t>
C10_HOST_DEVICE constexpr index_t fetch_step(index_t n) { return n + static_cast<index_t>(kDepth); }

// offset_bound: above every grad_out offset the kernel forms; it must fit int32. A warp fetches the steps
// n < max_chunk only, samples up to chunk_begin(j) + max_chunk - 1 <= B - 1 (a fetch past the chunk reads
// nothing but forms its offsets b * plane + group position + element offset); its slice starts before
// plane + (slices_per_block - 1) * kSlice (a block's last slices may lie past the plane), and lane 0's
// wrapped elements lie within kSlice + VEC of the slice's start.
template <int VEC>
C10_HOST_DEVICE inline int64_t offset_bound(int64_t B, int64_t plane) { return B * plane + (kMinWarps + 1) * kSlice<VEC>; }
template <int VEC>
C10_HOST_DEVICE inline bool offsets_fit_int32(int64_t B, int64_t plane) { return offset_bound<VEC>(B, plane) < INT32_MAX; }

// Samples per chunk at least (when B allows): a warp's fixed work (its index set-up and first kDepth
// fetches, the chunk sum and the epilogue, ~240 instructions) is then spread over >= 4 batch steps of
// ~72 instructions each.
constexpr int64_t kMinSteps = 4;

// log2 of the batch chunks J: the smallest power of two <= 32 that gives kTargetThreads threads, but no
// more than leaves kMinSteps samples per chunk (B >= kMinSteps * J), and 1 for B < 2 * kMinSteps.
C10_HOST_DEVICE inline int log2_chunks(int64_t B, int64_t slices) {
  int l = 0;
  while (l < kMaxLog2Chunks && kMinSteps * (int64_t(2) << l) <= B && slices * kLanes * (int64_t(1) << l) < kTargetThreads)
    ++l;
  return l;
}

// Slices per block: kMinWarps / J, at least 1.
C10_HOST_DEVICE inline int slices_per_block(int log2J) { return log2J >= 3 ? 1 : kMinWarps >> log2J; }

C10_HOST_DEVICE inline int block_threads(int log2J) { return kLanes * (1 << log2J) * slices_per_block(log2J); }

C10_HOST_DEVICE inline int64_t blocks(int64_t slices, int log2J) {
  const int spb = slices_per_block(log2J);
  return (slices + spb - 1) / spb;
}

// Warp w of block bx: its slice and its batch chunk.
template <typename index_t>
C10_HOST_DEVICE inline index_t slice_of(index_t bx, int warp, int log2J) {
  return bx * static_cast<index_t>(slices_per_block(log2J)) + static_cast<index_t>(warp >> log2J);
}
C10_HOST_DEVICE inline int chunk_of(int warp, int log2J) { return warp & ((1 << log2J) - 1); }

// First sample of chunk j of J = 2^log2J: floor(B * j / J) (chunk j is chunk_begin(j) .. chunk_begin(j + 1) - 1).
template <typename index_t>
C10_HOST_DEVICE inline index_t chunk_begin(index_t B, int j, int log2J) { return (B * static_cast<index_t>(j)) >> log2J; }

// The longest chunk, ceil(B / J): every warp of a block runs this many batch steps (the steps past its
// chunk's end read nothing), so that the block's barriers in the batch loop are uniform.
template <typename index_t>
C10_HOST_DEVICE inline index_t max_chunk(index_t B, int log2J) { return (B + (index_t(1) << log2J) - 1) >> log2J; }

// r: how far the aligned group holding position S of sample b starts before it, (b * plane + S) % VEC.
template <int VEC, typename index_t>
C10_HOST_DEVICE inline int shift(index_t b, index_t plane, index_t S) {
  using uindex_t = std::make_unsigned_t<index_t>;
  return static_cast<int>(static_cast<uindex_t>(b * plane + S) & static_cast<uindex_t>(VEC - 1));
}

// The plane position of element 0 of group k (0 .. kLanes) of a slice starting at S, shift r.
template <int VEC, typename index_t>
C10_HOST_DEVICE inline index_t group_position(index_t S, int r, int k) {
  return S - static_cast<index_t>(r) + static_cast<index_t>(VEC * k);
}

// Lane k's element i (i < VEC) lies element_offset(k, i, r) past group k's position pos =
// group_position(S, r, k): element i of group k, but for lane 0's first r elements (group 0's, before S)
// element i of group 32 (the slice's last r positions). whole_group: group k (k > 0, or r == 0) lies in
// the plane whole.
C10_HOST_DEVICE constexpr bool wrapped(int k, int i, int r) { return k == 0 && i < r; }
template <int VEC>
C10_HOST_DEVICE constexpr int element_offset(int k, int i, int r) { return wrapped(k, i, r) ? kSlice<VEC> + i : i; }
template <int VEC, typename index_t>
C10_HOST_DEVICE inline bool whole_group(int k, int r, index_t pos, index_t plane) {
  return (k != 0 || r == 0) && plane - pos >= static_cast<index_t>(VEC);
}

// What lane l does in one batch step of the slice at S, shift r, with left = plane - group_position(S, r, 0)
// plane positions from group 0's on (<= 0: the slice lies past the plane). No lane reads element by
// element: the elements of group 0 (lane 0's split group: from S on, and group 32's first r in the places
// of the r before S) and of the group that holds the plane's end are read one per lane, by "extra" lanes:
// - whole: lane l > 0's group k = l lies in the plane whole (whole_group): one 128-bit load;
// - staged: lane l stages its VEC values at l * VEC (0 where it read nothing), unless it is lane 0 or its
//   group is the end group (offset end_group = left rounded down to a multiple of VEC), which the extra
//   lanes stage;
// - slot: lane l's extra element's offset from group 0's position, which is also its staging slot
//   (stage_slot); -1: none. It is read when slot < left (else staged as 0). Lanes l < VEC: element l of
//   group 0, element_offset(0, l, r). Lanes VEC <= l < 2 VEC: element l - VEC of the end group when that is
//   one of groups 1 .. 31.
struct LaneStep {
  bool whole, staged;
  int slot;
};
template <int VEC, typename index_t>
C10_HOST_DEVICE inline LaneStep lane_step(int l, int r, index_t left) {
  using uindex_t = std::make_unsigned_t<index_t>;
  const index_t end_group = left & ~static_cast<index_t>(VEC - 1);
  // the end group is one of groups 1 .. 31: VEC <= end_group < kSlice
  const bool end_lanes = static_cast<uindex_t>(end_group - VEC) < static_cast<uindex_t>(kSlice<VEC> - VEC);
  LaneStep st;
  st.whole = l != 0 && left >= static_cast<index_t>(VEC * (l + 1));  // whole_group: left - VEC * l >= VEC
  st.staged = l != 0 && end_group != static_cast<index_t>(VEC * l);
  st.slot = l < VEC ? element_offset<VEC>(0, l, r) : (l < 2 * VEC && end_lanes ? static_cast<int>(end_group) + (l - VEC) : -1);
  return st;
}

// The kernel hands the elements to the lanes through a per-warp staging row of kStage floats: lane k
// stages its VEC elements at k * VEC (the extra lanes stage theirs one each at their slot), so element i of group k
// lands at stage_slot(k, i, r) = element_offset(k, i, r) + k * VEC (its position - S + r), and lane l's
// position S + l * VEC + m is read back at staged_index(l, m, r) = l * VEC + m + r.
template <int VEC>
constexpr int kStage = (kLanes + 1) * VEC;
template <int VEC>
C10_HOST_DEVICE constexpr int stage_slot(int k, int i, int r) { return element_offset<VEC>(k, i, r) + k * VEC; }
template <int VEC>
C10_HOST_DEVICE constexpr int staged_index(int l, int m, int r) { return l * VEC + m + r; }

// Shared-memory slot of the partial sum of slice sl (in the block), chunk j, slice offset o (lane * VEC + m).
template <int VEC>
C10_HOST_DEVICE inline int partial_slot(int sl, int j, int o, int log2J) { return ((sl << log2J) + j) * kSlice<VEC> + o; }

// Epilogue item s (0 .. slices_per_block * kSlice - 1) of block bx: slice sl = s / kSlice of the block,
// offset o = s % kSlice, plane position bx * slices_per_block * kSlice + s.
template <int VEC, typename index_t>
C10_HOST_DEVICE inline index_t epilogue_position(index_t bx, int s, int log2J) {
  return bx * static_cast<index_t>(slices_per_block(log2J) * kSlice<VEC>) + static_cast<index_t>(s);
}

}  // namespace flat_backward_tiling
}  // namespace reprogram_ext
