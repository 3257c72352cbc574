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
// holds the positions S - r + VEC * k + i, i < VEC. Lane k reads group k (lane 31 also group 32), only
// its elements inside the slice and the plane: one 128-bit load when that is the whole group, else one
// scalar load per element, so each element is read once, by the warp whose slice holds its position.
// Lane l's position S + VEC * l + m is element m + r of group l when m + r < VEC, else element
// m + r - VEC of group l + 1 (lane 31 reads group 32 itself); the lanes exchange them through a per-warp
// staging row of shared memory (staged_index).
//
// A block is J warps per slice (J = 2^log2_chunks(B, slices), a power of two: warp w of the slice sums the samples
// chunk_begin(j) .. chunk_begin(j + 1) - 1 in increasing order, j = w % J) times slices_per_block slices;
// the J partial sums of each position go to shared memory (partial_slot) and one thread per position adds
// them for j = 0 .. J - 1 (epilogue_position). A function of the shape only: the same bits every run.
#pragma once

#include <cstdint>
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

// Samples per chunk at least (when B allows): a warp's fixed work (its index set-up, the chunk sum and
// the epilogue, ~140 instructions) is then spread over >= 4 batch steps of ~57 instructions each.
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

// Group k's elements read by its lane: [group_lo, group_hi), those inside the slice and the plane
// (none when group_hi <= group_lo). pos = group_position(S, r, k).
C10_HOST_DEVICE inline int group_lo(int k, int r) { return k == 0 ? r : 0; }
template <int VEC, typename index_t>
C10_HOST_DEVICE inline int group_hi(int k, int r, index_t pos, index_t plane) {
  const int hi = k == kLanes ? r : VEC;
  const index_t left = plane - pos;  // elements of the plane from pos on
  return left <= 0 ? 0 : left < static_cast<index_t>(hi) ? static_cast<int>(left) : hi;
}

// Lane l's position S + VEC * l + m: element source_element(m, r) of group l + source_group(m, r).
template <int VEC>
C10_HOST_DEVICE constexpr int source_group(int m, int r) { return m + r < VEC ? 0 : 1; }
template <int VEC>
C10_HOST_DEVICE constexpr int source_element(int m, int r) { return m + r < VEC ? m + r : m + r - VEC; }

// The kernel hands group k's elements to the lanes through a per-warp staging row of kStage floats:
// element i of group k at k * VEC + i, so lane l's position m (element source_element of group
// l + source_group) is at staged_index(l, m, r) = l * VEC + m + r.
template <int VEC>
constexpr int kStage = (kLanes + 1) * VEC;
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
