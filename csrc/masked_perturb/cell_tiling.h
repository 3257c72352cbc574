// The tiling of the fused CUDA backward for a per-sample mask coarser than the canvas
// (masked_perturb_cell_backward_kernel, cuda_cell_backward.cu; SMM's case): which grad_out elements,
// mask cells, delta positions and shared-memory slots each (block, thread) touches, and in which
// order. __host__ __device__, and the kernel's three passes are the functions below with the kernel's
// element work passed in as a functor, so tests/cpp/masked_perturb_cell_tiling.cpp runs the kernel's
// loops on the host and checks that every grad_out element is read exactly once, every mask cell
// written once, every delta position written once and every shared slot read was written once.
//
// Canvas [B, C, H, W], mask_scale S (a compile-time constant here), Hm = ceil(H / S), Wm = ceil(W / S)
// (the kernel takes W % S == 0: a footprint row on the canvas is whole; H may end inside a footprint).
// A block (strip x, mask row q, channel c) holds R = 32 / S consecutive mask cells r = R x .. R x + R - 1
// of mask row q, i.e. the canvas rows q S .. q S + S - 1 of the 32-column strip 32 x .. 32 x + 31, for
// all B samples. Its 256 threads are (tx, j), tx = hr R + rl < 32 (footprint row hr of cell rl) and
// j < kChunks (a batch chunk: samples chunk_begin(B, kChunks, j) .. chunk_begin(B, kChunks, j + 1) - 1).
// 1. Row pass: thread (tx, j) reads, for each sample b of its chunk in increasing order, the S
//    grad_out elements of footprint row hr of cell (b, c, q, r) (S / VEC 128-bit loads), sums their mask
//    gradients left to right from 0 into the row slot (b S + hr) R + rl, and adds their delta gradients
//    into its S delta accumulators, which it then stores in the partial slots (j S + hr) 32 + rl S + i.
// 2. Cell pass: thread tid = 32 j + tx takes items tid, tid + 256, ... of the B R cells (b, rl) and sums
//    the row slots of the cell's footprint rows top to bottom (the first one assigned): the CPU's order
//    (store_cell_row_sums, cpu.cpp). One writer per cell.
// Channel-summed launch (a one-channel mask on C > 1 channels, C <= kMaxSummedChannels): a block (strip x,
// mask row q) holds all C channels, as C groups of the 256 threads above (threadIdx.z = channel c, each
// group with its own row and partial slots, shared-memory region c); passes 1 and 3 are per channel as
// above. Its cell pass gives the block's 256 C threads (thread c 256 + tid) items tid, tid + 256 C, ... of
// the B R cells and writes each cell of the [B, 1, Hm, Wm] gradient once: its channel sums (each as
// above) added in channel order from channel 0.
// 3. Delta pass: thread tid takes positions tid, tid + 256, ... of the S x 32 block positions and adds
//    the kChunks partials in order j = 0, 1, ...: one writer per delta position, no atomics.
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>

namespace reprogram_ext {
namespace cell_tiling {

constexpr int kRowThreads = 32;                      // blockDim.x: S footprint rows x R cells
constexpr int kChunks = 8;                           // blockDim.y: batch chunks per block
constexpr int kThreads = kRowThreads * kChunks;      // 256
constexpr int kStripColumns = kRowThreads;           // canvas columns of a strip: R * S = 32
constexpr int kMaxSummedChannels = 3;                // a channel-summed block: at most 3 x 256 threads

template <int S>
constexpr int kCells = kRowThreads / S;  // R: mask cells per strip

// Sizes of a launch (int32: the host takes this kernel only when B C H W < 2^31).
struct Geometry {
  int32_t B, C, H, W, Hm, Wm;
};

// The grid: x = strips, y = Hm, z = C (1 for a channel-summed launch).
template <int S>
C10_HOST_DEVICE inline int32_t strips(int32_t Wm) { return (Wm + kCells<S> - 1) / kCells<S>; }

// Shared memory of a block: the row sums [B][S][R] then the delta partials [kChunks][S][32] (acc_t).
template <int S>
C10_HOST_DEVICE inline int32_t row_slots(int32_t B) { return B * kRowThreads; }
template <int S>
C10_HOST_DEVICE inline int32_t partial_slots() { return kChunks * S * kStripColumns; }

// The block's part of the mask gradient: channel c, mask row q, first cell r0 and first column w0 (c: the
// block's z index, or on a channel-summed launch the thread's channel group threadIdx.z).
struct Block {
  int32_t c, q, r0, w0;
};
template <int S>
C10_HOST_DEVICE inline Block block(int32_t bx, int32_t by, int32_t c) {
  return Block{c, by, bx * kCells<S>, bx * kStripColumns};
}

// Thread tx's footprint row: cell r = r0 + rl, canvas row h = q S + hr, first column w = r S; ok when
// the cell and the row lie on the canvas.
struct RowThread {
  int32_t hr, rl, r, h, w;
  bool ok;
};
template <int S>
C10_HOST_DEVICE inline RowThread row_thread(const Geometry& g, const Block& k, int tx) {
  RowThread t;
  t.hr = tx / kCells<S>;
  t.rl = tx % kCells<S>;
  t.r = k.r0 + t.rl;
  t.h = k.q * S + t.hr;
  t.w = t.r * S;
  t.ok = t.r < g.Wm && t.h < g.H;
  return t;
}

// Samples of batch chunk j: [chunk_begin(B, kChunks, j), chunk_begin(B, kChunks, j + 1)) (math.h's order).
C10_HOST_DEVICE inline int32_t chunk_first(int32_t B, int32_t j) { return (B * j) / kChunks; }

// Delta partial slot of column i of thread (tx, j)'s footprint row.
template <int S>
C10_HOST_DEVICE inline int32_t partial_slot(int j, const RowThread& t, int i) {
  return (j * S + t.hr) * kStripColumns + t.rl * S + i;
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// Row pass of thread (tx, j): f(b, grad_out offset of the row's first element, row slot) for each
// sample b of chunk j in increasing order (nothing when the row is off the canvas). kUnroll: samples per
// trip on the device (2; 4 on the channel-summed launch, one block of 768 threads per SM).
template <int S, int kUnroll = 2, class F>
C10_HOST_DEVICE inline void row_pass(const Geometry& g, const Block& k, const RowThread& t, int j, F&& f) {
  if (!t.ok) return;
  const int32_t b1 = chunk_first(g.B, j + 1);
  const int32_t row = (k.c * g.H + t.h) * g.W + t.w, plane = g.C * g.H * g.W;
#if defined(__CUDA_ARCH__)
#pragma unroll kUnroll
#endif
  for (int32_t b = chunk_first(g.B, j); b < b1; ++b) f(b, b * plane + row, (b * S + t.hr) * kCells<S> + t.rl);
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// Cell pass of thread tid: f(b, cell index into [B, C, Hm, Wm], first row slot, rows) for its cells;
// the footprint's row slots are first + i R for i < rows (rows = min(S, H - q S) >= 1) in each channel's
// region. Channel-summed (`summed`): tid = c 256 + j 32 + tx of the block's 256 C threads, and the cell
// index is into [B, 1, Hm, Wm].
template <int S, class F>
C10_HOST_DEVICE inline void cell_pass(const Geometry& g, const Block& k, int tid, bool summed, F&& f) {
  constexpr int R = kCells<S>;
  const int32_t rows = g.H - k.q * S < S ? g.H - k.q * S : S;
  const int32_t threads = summed ? g.C * kThreads : kThreads, out_c = summed ? 0 : k.c, out_C = summed ? 1 : g.C;
  for (int32_t item = tid; item < g.B * R; item += threads) {
    const int32_t b = item / R, rl = item % R, r = k.r0 + rl;
    if (r >= g.Wm) continue;
    f(b, ((b * out_C + out_c) * g.Hm + k.q) * g.Wm + r, b * S * R + rl, rows);
  }
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// Delta pass of thread tid: f(h, w, position index into [C, H, W], first partial slot) for its
// positions on the canvas; the position's partials are first + j S 32 for j < kChunks.
template <int S, class F>
C10_HOST_DEVICE inline void delta_pass(const Geometry& g, const Block& k, int tid, F&& f) {
  for (int32_t p = tid; p < S * kStripColumns; p += kThreads) {
    const int32_t hr = p / kStripColumns, col = p % kStripColumns;
    const int32_t h = k.q * S + hr, w = k.w0 + col;
    if (h >= g.H || w >= g.W) continue;
    f(h, w, (k.c * g.H + h) * g.W + w, hr * kStripColumns + col);
  }
}

}  // namespace cell_tiling
}  // namespace reprogram_ext
