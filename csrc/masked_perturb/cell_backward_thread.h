// One thread of the fused per-sample-mask backward (masked_perturb_cell_backward_kernel,
// cuda_cell_backward.cu): its prologue and its three passes, between which the kernel holds a block
// barrier. __host__ __device__, so tests/cpp/masked_perturb_cell_backward.cpp runs the kernel's code
// on the host -- every thread's prologue and row pass, then every thread's cell and delta passes, as
// the barrier orders them -- and compares its gradients with the formula. Tiling: cell_tiling.h.
//
// Blend add, no clamp, delta shared by the batch, u = 0 (blend add's gradients do not read the placed
// input), W % S == 0: for each element (ga, gm) = perturb_element_backward(g, 0, uncovered, a, m, k),
// a = act(delta), m the cell's mask value; the cell's gradient is the sum of gm over its footprint
// (rows left to right from 0, then top to bottom: the CPU's order) and delta's the batch sum of ga
// times act'(delta). Channel-summed launch (one-channel mask): the cell's gradient is those footprint
// sums of the C channels added in channel order from channel 0 (the CPU op's sum_channels_in_order).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "masked_perturb/activation.h"
#include "masked_perturb/cell_tiling.h"
#include "masked_perturb/math.h"

namespace reprogram_ext {
namespace cell_tiling {

template <typename acc_t>
struct CellBackwardArgs {
  Geometry g;
  int32_t sd_c, sd_h;              // delta element strides (w: 1, batch: shared)
  int32_t sm_b, sm_c, sm_h, sm_w;  // mask element strides (0 on broadcast dimensions)
  Pointwise pw;
};

// v[0..N) = p[0..N) in one 16-byte load (p 16-byte aligned; ld.global.nc on the device).
template <typename T, int N>
C10_HOST_DEVICE inline void load16(const T* p, T (&v)[N]) {
  static_assert(N * sizeof(T) == 16, "one 16-byte group");
#if defined(__CUDA_ARCH__)
  const uint4 bits = __ldg(reinterpret_cast<const uint4*>(p));
  memcpy(v, &bits, 16);
#else
  memcpy(v, p, 16);
#endif
}

// v[0..VEC) = the 16-byte group at p (16-byte aligned) as acc_t. bfloat16 from the raw words: element
// 2 k is the low half of word k, so its float bits are word << 16, and element 2 k + 1's are the high
// half in place (word & 0xffff0000) -- exactly c10::BFloat16's conversion, one instruction per element
// (c10's per-element form compiles to two or three per pair more).
template <typename scalar_t, int VEC>
C10_HOST_DEVICE inline void load16_as_acc(const scalar_t* p, acc_type_t<scalar_t> (&v)[VEC]) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    uint32_t w[4];
    load16(reinterpret_cast<const uint32_t*>(p), w);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = w[k] << 16, hi = w[k] & 0xffff0000u;
      memcpy(&v[2 * k], &lo, 4);
      memcpy(&v[2 * k + 1], &hi, 4);
    }
  } else {
    scalar_t e[VEC];
    load16(p, e);
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = static_cast<acc_type_t<scalar_t>>(e[i]);
  }
}

// The state a thread carries from its prologue through the row pass.
template <typename acc_t, int S>
struct CellThread {
  Block blk;
  RowThread t;
  int j, tid;
  ChannelConstants<acc_t> k;
  acc_t a[S], sum_d[S];  // act(delta) of the footprint row, its delta-gradient batch partials
};

// Prologue of thread (tx, j) of block (bx, by, bz): its footprint row, the channel constants and
// act(delta) of the row (one 16-byte load per group). kNormAfter: p.pw.normalize_after (a compile-time
// constant, so that without it the per-element g * after_inv_std, a multiplication by 1, compiles away).
template <typename scalar_t, Activation kAct, int S, bool kNormAfter>
C10_HOST_DEVICE inline void cell_thread_begin(const CellBackwardArgs<acc_type_t<scalar_t>>& p, const scalar_t* delta,
                                              const acc_type_t<scalar_t>* norm, int32_t bx, int32_t by, int32_t bz,
                                              int tx, int j, CellThread<acc_type_t<scalar_t>, S>& th) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  th.blk = block<S>(bx, by, bz);
  th.t = row_thread<S>(p.g, th.blk, tx);
  th.j = j, th.tid = j * kRowThreads + tx;
  // Blend add without clamp (the only call the host sends here): replace 0 and the clamp bounds
  // -inf / +inf, the values channel_constants gives, as compile-time constants.
  th.k = channel_constants<acc_t>(p.pw, norm, p.g.C, th.blk.c);
  th.k.lo = -static_cast<acc_t>(INFINITY), th.k.hi = static_cast<acc_t>(INFINITY), th.k.replace = 0;
  if (!kNormAfter) th.k.after_inv_std = 1;  // channel_constants' value without normalize="after"
#pragma unroll
  for (int gi = 0; gi < S / VEC; ++gi) {
    scalar_t v[VEC];
    if (th.t.ok) load16(delta + (th.blk.c * p.sd_c + th.t.h * p.sd_h + th.t.w + gi * VEC), v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      th.a[gi * VEC + i] = th.t.ok ? activate<kAct>(static_cast<acc_t>(v[i])) : static_cast<acc_t>(0);
      th.sum_d[gi * VEC + i] = 0;
    }
  }
}

// 1. Row pass: per sample of the thread's chunk, the footprint row's mask-gradient sum (left to right
// from 0) into its row slot of `rows` and the delta-gradient partials; then (with a delta gradient)
// the S partials into their slots of `parts`. kUnroll: row_pass's samples per trip.
template <typename scalar_t, int S, int kUnroll = 2>
C10_HOST_DEVICE inline void cell_thread_rows(const CellBackwardArgs<acc_type_t<scalar_t>>& p, const scalar_t* grad_out,
                                             const scalar_t* mask, bool with_delta,
                                             CellThread<acc_type_t<scalar_t>, S>& th, acc_type_t<scalar_t>* rows,
                                             acc_type_t<scalar_t>* parts) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  const int32_t m_row = th.blk.c * p.sm_c + th.blk.q * p.sm_h + th.t.r * p.sm_w;
  row_pass<S, kUnroll>(p.g, th.blk, th.t, th.j, [&](int32_t b, int32_t off, int32_t slot) {
    const acc_t m = static_cast<acc_t>(mask[b * p.sm_b + m_row]);
    acc_t gv[S];
#pragma unroll
    for (int gi = 0; gi < S / VEC; ++gi) {
      acc_t v[VEC];
      load16_as_acc<scalar_t, VEC>(grad_out + (off + gi * VEC), v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) gv[gi * VEC + i] = v[i];
    }
    acc_t row = 0;
#pragma unroll
    for (int i = 0; i < S; ++i) {
      const auto e = perturb_element_backward<acc_t>(gv[i], acc_t(0), false, th.a[i], m, th.k);
      row += e.gm;
      th.sum_d[i] += e.ga;
    }
    rows[slot] = row;
  });
  if (with_delta) {
#pragma unroll
    for (int i = 0; i < S; ++i) parts[partial_slot<S>(th.j, th.t, i)] = th.sum_d[i];
  }
}

// The footprint sum of one cell from its row slots (first, first + R, ...; n rows), top to bottom, the
// first assigned (the CPU's store_cell_row_sums order).
template <typename acc_t, int S>
C10_HOST_DEVICE inline acc_t footprint_sum(const acc_t* rows, int32_t first, int32_t n) {
  acc_t total = rows[first];
  for (int32_t i = 1; i < n; ++i) total += rows[first + i * kCells<S>];
  return total;
}

// 2. Cell pass (after the barrier): the footprint sum of each of the thread's cells, rows: the block's
// row slots (of the thread's channel).
template <typename acc_t, int S>
C10_HOST_DEVICE inline void cell_thread_cells(const Geometry& g, const CellThread<acc_t, S>& th, const acc_t* rows,
                                              acc_t* grad_mask) {
  cell_pass<S>(g, th.blk, th.tid, false, [&](int32_t, int32_t cell, int32_t first, int32_t n) {
    grad_mask[cell] = footprint_sum<acc_t, S>(rows, first, n);
  });
}

// 2, channel-summed launch (after the barrier): thread (c, j, tx) of the block's 256 C, c = th.blk.c, writes
// its cells of the [B, 1, Hm, Wm] gradient: the footprint sums of channels 0, 1, ..., C - 1 (channel c's
// row slots at rows + c row_slots(B)) added in that order, the first assigned.
template <typename acc_t, int S>
C10_HOST_DEVICE inline void cell_thread_summed_cells(const Geometry& g, const CellThread<acc_t, S>& th,
                                                     const acc_t* rows, acc_t* grad_mask) {
  const int32_t region = row_slots<S>(g.B);
  cell_pass<S>(g, th.blk, th.blk.c * kThreads + th.tid, true, [&](int32_t, int32_t cell, int32_t first, int32_t n) {
    acc_t total = footprint_sum<acc_t, S>(rows, first, n);
    for (int32_t c = 1; c < g.C; ++c) total += footprint_sum<acc_t, S>(rows + c * region, first, n);
    grad_mask[cell] = total;
  });
}

// 3. Delta pass (after the barrier): the kChunks partials of each of the thread's positions in order,
// times act'(delta).
template <typename scalar_t, Activation kAct, int S>
C10_HOST_DEVICE inline void cell_thread_deltas(const CellBackwardArgs<acc_type_t<scalar_t>>& p, const scalar_t* delta,
                                               const CellThread<acc_type_t<scalar_t>, S>& th,
                                               const acc_type_t<scalar_t>* parts, acc_type_t<scalar_t>* grad_delta) {
  using acc_t = acc_type_t<scalar_t>;
  delta_pass<S>(p.g, th.blk, th.tid, [&](int32_t h, int32_t w, int32_t pos, int32_t first) {
    acc_t total = 0;
#pragma unroll
    for (int jj = 0; jj < kChunks; ++jj) total += parts[first + jj * S * kStripColumns];
    const acc_t av = activate<kAct>(static_cast<acc_t>(delta[th.blk.c * p.sd_c + h * p.sd_h + w]));
    grad_delta[pos] = total * activation_derivative<kAct>(av);
  });
}

}  // namespace cell_tiling
}  // namespace reprogram_ext
