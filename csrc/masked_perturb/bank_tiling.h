// The work split of the CUDA prompt-bank forward (masked_perturb_bank_forward_kernel in
// cuda_bank_forward.cu): which canvas positions, sample and programs a thread writes, and where.
// __host__ __device__, so that tests/cpp/masked_perturb_bank_tiling.cpp walks a whole launch on the
// host and checks that every output element is written exactly once, with the activated delta of its
// own program and position.
//
// A bank of V programs over B samples writes out[v * B + b, c, h, w] (row v * B + b) for delta [V, C?, H, W]
// and a delta / mask shared by the batch. Block (sb, pb) of kThreads threads (grid (sample blocks, position
// blocks): the sample block fastest) is G = kThreads / VEC position groups (the groups pb * G .. pb * G + G - 1
// of the C * H * ceil(W / VEC) groups of one plane) x VEC samples (sb * VEC .. sb * VEC + VEC - 1). The
// ceil(B / VEC) blocks that follow one another share their positions, so the V programs' delta and mask
// tile (V KB for fp32) is read from DRAM once and from L2 by the others; each x element is read by one
// thread only. Thread tid = s * G + gl is group gl, sample lane s. It loads
// its sample's x for its group's VEC positions once and writes those positions for every program v: the
// V programs reuse x from registers (read from DRAM once), not from another launch.
// The programs come in tiles of up to kEntriesPerTile: for each, the thread activates element s of its
// group (one activation serves the block's VEC samples) into shared slot slot(t, gl, s), the block
// synchronises, and the thread reads its group's VEC activations at slots slot(t, gl, 0 .. VEC - 1).
// A group past the plane's end works on the last group and a sample past the batch reads sample B - 1
// (no branch before a barrier); neither stores (live = false).
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>

#include "masked_perturb/specialize.h"

namespace reprogram_ext {
namespace bank_tiling {

constexpr int kThreads = 256;
constexpr int kEntriesPerTile = 8;

// Programs of the tile that starts at program v0 < V: min(kEntriesPerTile, V - v0).
C10_HOST_DEVICE inline int tile_entries(int32_t V, int32_t v0) {
  return V - v0 < kEntriesPerTile ? V - v0 : kEntriesPerTile;
}

// Shared-memory slot of program t of the tile, group gl, element s (a float array [kEntriesPerTile][kThreads]).
template <int VEC>
C10_HOST_DEVICE inline unsigned slot(int t, unsigned gl, unsigned s) {
  return static_cast<unsigned>(t) * kThreads + gl * VEC + s;
}

// What thread tid of block (bx, by) works on (int32 index math: the host checks fits_int32).
struct Thread {
  unsigned gl, s;   // group in the block, sample lane
  int32_t row, w0;  // c * H + h of its group (clamped to the last group), first column
  int32_t c, h;
  int32_t b;        // the sample it stores
  int32_t b_read;   // the sample whose x it reads: b, or B - 1 past the batch
  bool live;        // whether it stores (its group and sample exist)
};

// groups = C * H * gpr, gpr = ceil(W / VEC); div_gpr = FastDivmod(gpr), div_h = FastDivmod(H).
template <int VEC>
C10_HOST_DEVICE inline Thread thread_of(unsigned sb, unsigned pb, unsigned tid, int32_t groups, int32_t B, int32_t gpr,
                                        const FastDivmod& div_gpr, int32_t H, const FastDivmod& div_h) {
  constexpr unsigned G = kThreads / VEC;
  Thread t;
  t.gl = tid % G;
  t.s = tid / G;
  const int32_t g = static_cast<int32_t>(pb * G + t.gl);
  const int32_t gc = g < groups ? g : groups - 1;
  t.row = static_cast<int32_t>(div_gpr.div(static_cast<uint32_t>(gc)));
  t.w0 = (gc - t.row * gpr) * VEC;
  t.c = static_cast<int32_t>(div_h.div(static_cast<uint32_t>(t.row)));
  t.h = t.row - t.c * H;
  t.b = static_cast<int32_t>(sb * VEC + t.s);
  t.live = g < groups && t.b < B;
  t.b_read = t.b < B ? t.b : B - 1;
  return t;
}

// Element offset of out[v * B + b, c, h, w0] (row = c * H + h, plane = C * H * W).
C10_HOST_DEVICE inline int32_t out_offset(int32_t v, int32_t b, int32_t B, int32_t plane, int32_t row, int32_t W,
                                          int32_t w0) {
  return (v * B + b) * plane + row * W + w0;
}

// The launch's grid: (ceil(B / VEC) sample blocks, ceil(plane_groups / G) position blocks).
inline int64_t sample_blocks(int64_t B, int VEC) { return (B + VEC - 1) / VEC; }
inline int64_t position_blocks(int64_t plane_groups, int VEC) {
  const int64_t G = kThreads / VEC;
  return (plane_groups + G - 1) / G;
}

// Whether one launch can take the bank: every output element offset V * B * plane and delta offset in
// int32 (below lim), the position blocks within gridDim.y's 65535 (the sample blocks go along x).
inline bool launch_fits(int64_t V, int64_t B, int64_t plane, int64_t plane_groups, int VEC, int64_t max_delta_offset,
                        int64_t lim) {
  return V * B * plane < lim && max_delta_offset < lim && position_blocks(plane_groups, VEC) <= 65535;
}

}  // namespace bank_tiling
}  // namespace reprogram_ext
