// CUDA kernels of masked_perturb (formula: math.h, docs/ops/masked_perturb.md).
//
// Fast by construction (/work/shared/DESIGN.md, "GPU code"):
// - Options are compile-time constants. The activation (activation.h), the pointwise variant P
//   (specialize.h: blend add / no clamp / normalize none, before or after, else DynamicPointwise) and
//   the layout L (resize mode, one copy or several, mask none / at canvas resolution / scaled,
//   128-bit I/O or scalar) are template parameters, chosen once on the host (forward_variant,
//   kFastForwardSpecs). A combination outside the fast list runs the dynamic layout, whose options
//   are read once per thread (never per element).
// - Index math in int32 (FastDivmod: multiply-high and shift, no division) when every tensor has
//   < 2^31 elements, int64 otherwise; per-thread work (b, c, h, the source row, resize row tap, mask
//   row, channel constants) is done once per thread of VEC outputs, copy offsets travel in the
//   kernel arguments (up to kMaxArgCopies, else a device array read by the dynamic layout only).
// - 128-bit loads of delta, mask (at canvas resolution), grad_out and x rows (aligned, not resized,
//   the copy's column offset a multiple of VEC), 128-bit stores of the output and the float32
//   gradients; a scalar layout for rows that are not 16-byte aligned (W % VEC != 0, odd strides),
//   except the forward of one unresized copy with a batch-shared delta / mask, which writes flat
//   16-byte groups of the output (masked_perturb_forward_flat_kernel).
// - The element values come from the __host__ __device__ functions of math.h / specialize.h /
//   activation.h, which the CPU kernels (cpu.cpp) execute too.
//
// Forward: one thread per VEC = 16 / sizeof(scalar_t) consecutive outputs of a canvas row (b, c, h).
// With delta and mask shared by the batch (the fast layouts but SMM's, with tanh or sigmoid), a
// block holds 256 / VEC position groups x VEC samples and each thread activates one delta element
// for all VEC samples of the block (shared memory), not VEC elements for its own sample
// (forward_batch_shared).
// Backward: block = GX position groups x J batch chunks (J = cuda_backward_chunks(), a function of
// the shape only). Thread (group, j) loops over the samples of chunk j in order (chunk_begin), the J
// partial sums of a shared (batch-1) delta / mask gradient meet in shared memory and one thread per
// position adds them in order j = 0..J-1: deterministic (same bits every run), no atomics. This is
// CUDA's own summation order (J is not reduction_chunks(), which the CPU and Triton share); it
// differs from theirs only by float32 rounding. A per-sample mask coarser than the canvas
// (mask_scale > 1) gets its gradient from a second kernel, one thread per mask cell summing its
// footprint in the CPU's order (masked_perturb_mask_grad_kernel): mask-resolution output, no
// canvas-sized per-sample buffer. SMM's case (blend add, no clamp, batch-shared delta, whole
// footprints) takes one kernel for both gradients instead, reading grad_out once (cuda_cell_backward.cu).
//
// Only c10/cuda headers are included (not ATen/cuda/CUDAContext.h, which pulls in the cuBLAS /
// cuSPARSE / cuSOLVER headers that a bare toolkit may lack).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "masked_perturb/args.h"
#include "masked_perturb/bank_tiling.h"
#include "masked_perturb/batch_tiling.h"
#include "masked_perturb/cuda_bank_forward.h"
#include "masked_perturb/cuda_cell_backward.h"
#include "masked_perturb/cuda_flat_backward.h"
#include "masked_perturb/flat_clipped_store.h"
#include "masked_perturb/flat_tiling.h"
#include "masked_perturb/kernel_gathers.h"
#include "masked_perturb/mask_grad_thread.h"
#include "masked_perturb/specialize.h"
#include "masked_perturb/window_tiling.h"

namespace reprogram_ext {
namespace {

using at::Tensor;

// Threads per block. No __launch_bounds__: with it, ptxas (CUDA 13.0) capped some kernels' registers
// and spilled.
constexpr int kThreadsPerBlock = 256;
// Backward: the batch is split into up to kMaxChunks chunks, until the grid has kTargetBlocks
// blocks of 256 threads: 4 waves of 8 resident blocks (<= 32 registers, the linear kernel) on the
// 132 SMs of an H100.
constexpr int64_t kMaxChunks = 32;
constexpr int64_t kTargetBlocks = 4 * 8 * 132;

// Layout resize code past ResizeMode's values: bilinear, gathered from a three-column window with 4
// canvas rows per thread (bilinear_window_fits; the fixed Layout<kBilinear, ...> layouts keep the
// per-output taps for the other bilinear sizes).
constexpr int kBilinearRuns = 3;

// ---- vector stores, device-only gathers --------------------------------------------------------
// The kernel arguments, layouts, vector loads and the gathers that host tests run (load_group,
// gather_delta, gather_placed, constants_of) are in kernel_gathers.h.

// p[0..N) = v[0..N) in 16-byte (or one smaller) st.global.wb stores. __stwb is an inline-PTX store:
// a plain uint4 assignment was split back into scalar stores by the optimiser (nvcc 13.0).
template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const T (&v)[N]) {
  constexpr int kBytes = N * sizeof(T);
  if constexpr (kBytes >= 16) {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      uint4 bits;
      memcpy(&bits, reinterpret_cast<const char*>(v) + 16 * i, 16);
      __stwb(reinterpret_cast<uint4*>(p) + i, bits);
    }
  } else {
    using B = typename Bits<kBytes>::type;
    B bits;
    memcpy(&bits, v, kBytes);
    __stwb(reinterpret_cast<B*>(p), bits);
  }
}

// Stores the group's VEC values at p: one vector store on 128-bit layouts, else element by element
// for the positions on the canvas (w0 + i < W).
template <class L, typename T, int VEC, typename AR>
__device__ __forceinline__ void store_group(const AR& pa, T* __restrict__ p, decltype(AR::W) w0,
                                            const T (&v)[VEC]) {
  if constexpr (L::kVec) {
    store_vec(p, v);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (w0 + i < pa.W) p[i] = v[i];
    }
  }
}

// m[i] = mask[b, c, h / s, (w0 + i) / s] (strides 0 where the mask broadcasts), 1 without a mask.
template <class L, int VEC, typename acc_t, typename scalar_t, typename AR, typename index_t>
__device__ __forceinline__ void gather_mask(const AR& p, const scalar_t* __restrict__ mask, index_t b, index_t c,
                                            index_t h, index_t w0, acc_t (&m)[VEC]) {
  const MaskKind kind = L::kMask == kDynamic ? p.mask_kind : static_cast<MaskKind>(L::kMask);
  if (kind == MaskKind::kNone) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) m[i] = static_cast<acc_t>(1);
  } else if (kind == MaskKind::kFull) {
    const index_t row_off = b * p.sm[0] + c * p.sm[1] + h * p.sm[2];
    if constexpr (L::kVec) {
      load_vec_as(mask + (row_off + w0), m);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i)
        m[i] = on_canvas<L, VEC>(p, w0, i) ? static_cast<acc_t>(mask[row_off + (w0 + i) * p.sm[3]])
                                           : static_cast<acc_t>(0);
    }
  } else {
    const index_t s = p.mask_scale;
    const index_t row_off = b * p.sm[0] + c * p.sm[1] + divide<index_t>(h, s, p.div_s) * p.sm[2];
    index_t q = divide<index_t>(w0, s, p.div_s);
    index_t r = w0 - q * s;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      m[i] = on_canvas<L, VEC>(p, w0, i) ? static_cast<acc_t>(mask[row_off + q * p.sm[3]]) : static_cast<acc_t>(0);
      if (++r == s) {
        r = 0;
        ++q;
      }
    }
  }
}

// kBilinearRuns layouts (one copy; unit x column stride and bilinear_window_fits for runs of VEC,
// checked by dispatch_fast_forward): the group's resized columns xw0 .. xw0 + VEC - 1, their taps
// (bilinear_columns of specialize.h, computed once per thread) and whether any lies inside the copy.
template <int VEC, typename acc_t, typename index_t>
struct BilinearColumns {
  index_t xw0, base;
  bool any;
  ColumnRun<VEC, acc_t> run;
};
template <int VEC, typename acc_t, typename AR, typename index_t>
__device__ __forceinline__ BilinearColumns<VEC, acc_t, index_t> bilinear_group_columns(const AR& p, index_t w0) {
  BilinearColumns<VEC, acc_t, index_t> bc;
  bc.xw0 = w0 - p.ox[0];
  bc.any = bc.xw0 + VEC > 0 && bc.xw0 < p.Wr;
  const index_t base = bilinear_columns<VEC, acc_t, index_t>(bc.xw0, p.lin_scale_w, bc.run);
  bc.base = base < p.Win - 1 ? base : p.Win - 1;  // a group right of the copy: any column in the row
  return bc;
}
// The group's copy-coverage bits (~0 where column w0 + i lies inside the copy, else 0) and, for each
// of the S samples b_j, the element offsets in x of the window's columns base, base + 1, base + 2
// (clamped, window_column) of x[b_j, c] (x_bc[j] = b_j * sx[0] + c * sx[1]; unit column stride).
template <int VEC, int S, typename acc_t, typename AR, typename index_t>
__device__ __forceinline__ void window_columns(const AR& p, const index_t (&x_bc)[S],
                                                const BilinearColumns<VEC, acc_t, index_t>& bc, uint32_t (&cm)[VEC],
                                                index_t (&xc)[S][3]) {
  using uindex_t = std::make_unsigned_t<index_t>;
#pragma unroll
  for (int i = 0; i < VEC; ++i) cm[i] = static_cast<uindex_t>(bc.xw0 + i) < static_cast<uindex_t>(p.Wr) ? ~0u : 0u;
#pragma unroll
  for (int j = 0; j < S; ++j)
#pragma unroll
    for (int t = 0; t < 3; ++t) xc[j][t] = x_bc[j] + window_column<index_t>(bc.base, t, p.Win);
}

// v with its bits kept where the masks c & r are ~0, +0 where they are 0 (the value off the copy,
// exactly). One lop3 (inline PTX: nvcc turned the C++ `&` of a 0 / ~0 mask back into a compare and a
// select per output).
__device__ __forceinline__ float keep_bits(float v, uint32_t c, uint32_t r) {
  uint32_t bits;
  asm("lop3.b32 %0, %1, %2, %3, 0x80;" : "=r"(bits) : "r"(__float_as_uint(v)), "r"(c), "r"(r));
  return __uint_as_float(bits);
}

// The row tap of canvas row h in the kBilinearRuns layouts and its coverage bits rm (~0 when the row
// lies inside the copy, else 0). Branch-free: a row off the copy reads a valid row (y clamped,
// window_tiling::clamped_row), masked out.
template <typename acc_t, typename AR, typename index_t>
__device__ __forceinline__ Tap<acc_t, index_t> window_row_tap(const AR& p, index_t h, uint32_t& rm) {
  using uindex_t = std::make_unsigned_t<index_t>;
  const index_t y = h - p.oy[0];
  rm = static_cast<uindex_t>(y) < static_cast<uindex_t>(p.Hr) ? ~0u : 0u;
  return linear_tap_trunc<acc_t, index_t>(window_tiling::clamped_row<index_t>(y, p.Hr), p.Hin, p.lin_scale_h);
}

// The VEC outputs of one canvas row and sample from its window columns c0, c1, c2 blended vertically
// (blend_run of specialize.h, then perturb_value<P>(cov ? v : 0, cov, a, m, k), computed as
// perturb_from_term(placed_term(v) kept where covered) -- the same bits, with the coverage as a bit
// mask (column bits cm, row bits rm) instead of a select per output); stored at o when ok.
template <class P, int VEC, typename scalar_t, typename acc_t, typename index_t>
__device__ __forceinline__ void window_outputs(acc_t c0, acc_t c1, acc_t c2, const BilinearColumns<VEC, acc_t, index_t>& bc,
                                               const uint32_t (&cm)[VEC], uint32_t rm, const acc_t (&a)[VEC],
                                               const acc_t (&m)[VEC], const ChannelConstants<acc_t>& k, scalar_t* o, bool ok) {
  acc_t v[VEC];
  blend_run<VEC, acc_t>(c0, c1, c2, bc.run, v);
  scalar_t vals[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i)
    vals[i] = static_cast<scalar_t>(perturb_from_term<P, acc_t>(keep_bits(placed_term<P, acc_t>(v[i], k), cm[i], rm), a[i], m[i], k));
  if (ok) store_vec(o, vals);
}

// Canvas row h of the group for S samples (the batch-shared layout): the row tap once, then per
// sample the six window loads (bilinear_run_values' columns, blend_rows of specialize.h) and the VEC
// outputs (window_outputs). Stores sample j's outputs at o[j] when ok[j].
template <class P, int VEC, int S, typename scalar_t, typename x_t, typename acc_t, typename AR, typename index_t>
__device__ __forceinline__ void window_row(const AR& p, const x_t* __restrict__ x, const index_t (&xc)[S][3], const BilinearColumns<VEC, acc_t, index_t>& bc,
                                           const uint32_t (&cm)[VEC], index_t h, const acc_t (&a)[VEC], const acc_t (&m)[VEC],
                                           const ChannelConstants<acc_t>& k, scalar_t* const (&o)[S], const bool (&ok)[S]) {
  static_assert(std::is_same_v<acc_t, float>, "window gather: float accumulation");
  uint32_t rm;
  const auto ty = window_row_tap<acc_t>(p, h, rm);
  const index_t o0 = ty.i0 * p.sx[2], o1 = ty.i1 * p.sx[2];
#pragma unroll
  for (int j = 0; j < S; ++j) {
    const acc_t c0 = blend_rows<acc_t, index_t>(load_input<acc_t>(x + (xc[j][0] + o0), 0), load_input<acc_t>(x + (xc[j][0] + o1), 0), ty);
    const acc_t c1 = blend_rows<acc_t, index_t>(load_input<acc_t>(x + (xc[j][1] + o0), 0), load_input<acc_t>(x + (xc[j][1] + o1), 0), ty);
    const acc_t c2 = blend_rows<acc_t, index_t>(load_input<acc_t>(x + (xc[j][2] + o0), 0), load_input<acc_t>(x + (xc[j][2] + o1), 0), ty);
    window_outputs<P, VEC>(c0, c1, c2, bc, cm, rm, a, m, k, o[j], ok[j]);
  }
}

// ---- forward ---------------------------------------------------------------------------------

// Activations worth sharing across the batch (about 13 instructions each); none / relu cost less
// than the shared-memory exchange.
constexpr bool costly_activation(Activation a) { return a == Activation::kTanh || a == Activation::kSigmoid; }

// Fast layouts computed once per block of VEC samples (forward_batch_shared): those without a
// per-sample (scaled) mask, with a costly activation. The dispatch takes them only when Bd == 1
// and Bm == 1 (dispatch_fast_forward).
template <class L, Activation kAct>
constexpr bool kBatchShared = L::kVec && L::kResize != kDynamic && L::kMask != static_cast<int>(MaskKind::kScaled) &&
                              costly_activation(kAct);

// Canvas rows per thread of the kBilinearRuns layouts (the column taps are computed once for all of
// them): 4 in the batch-shared kernel, VEC in the per-thread one (window_tiling::kRows: a VEC x VEC
// tile); else 1. The host launches B * C * ceil(H / rows) * gpr threads (per-thread kernel) or
// C * ceil(H / rows) * gpr position groups (batch-shared) and passes FastDivmod(ceil(H / rows)) as
// div_h.
constexpr int kBatchSharedRows = 4;
template <class L, Activation kAct, int VEC>
constexpr int kRowsPerThread =
    L::kResize != kBilinearRuns ? 1 : kBatchShared<L, kAct> ? kBatchSharedRows : window_tiling::kRows<VEC>;

// Samples per thread of the batch-shared kBilinearRuns layout (forward_batch_shared_rows): thread
// (group, s) of block y writes samples y * S * VEC + j * VEC + s, j < S, sharing its column taps, row
// taps and the block's act(delta) / mask; the host launches ceil(B / (S * VEC)) blocks along y.
template <class L, Activation kAct>
constexpr int kSamplesPerThread = kBatchShared<L, kAct> && L::kResize == kBilinearRuns ? 2 : 1;

// out[b, c, h, w0 .. w0 + VEC) from the gathered a = act(delta), m = mask and the placed input.
template <class P, class L, int VEC, typename scalar_t, typename x_t, typename acc_t, typename AR, typename index_t>
__device__ __forceinline__ void finish_outputs(const AR& p, const x_t* __restrict__ x, index_t b, index_t c, index_t h,
                                               index_t w0, const acc_t (&a)[VEC], const acc_t (&m)[VEC],
                                               const ChannelConstants<acc_t>& k, scalar_t* __restrict__ o) {
  acc_t u[VEC];
  bool cov[VEC];
  gather_placed<L, VEC>(p, x, b * p.sx[0] + c * p.sx[1], h, w0, u, cov);
  scalar_t vals[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) vals[i] = static_cast<scalar_t>(perturb_value<P, acc_t>(u[i], cov[i], a[i], m[i], k));
  store_group<L>(p, o, w0, vals);
}

// One thread per VEC consecutive outputs of a canvas row (b, c, h): p.groups = B * C * H * gpr threads.
template <typename scalar_t, typename x_t, Activation kAct, class P, class L, typename index_t>
__device__ __forceinline__ void forward_per_thread(const KernelArgs<acc_type_t<scalar_t>, index_t>& p,
                                                   const x_t* __restrict__ x, const scalar_t* __restrict__ delta,
                                                   const scalar_t* __restrict__ mask, const acc_type_t<scalar_t>* __restrict__ norm,
                                                   scalar_t* __restrict__ out) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  const index_t gid = static_cast<index_t>(blockIdx.x) * kThreadsPerBlock + static_cast<index_t>(threadIdx.x);
  if (gid >= p.groups) return;
  constexpr int kRows = kRowsPerThread<L, kAct, VEC>;
  const index_t row = divide<index_t>(gid, p.gpr, p.div_gpr);  // (b, c, h / kRows)
  const index_t w0 = (gid - row * p.gpr) * VEC;
  if constexpr (kRows == 1) {  // row = (b, c, h) of the contiguous output
    const index_t bc = divide<index_t>(row, p.H, p.div_h);
    const index_t h = row - bc * p.H;
    const index_t b = divide<index_t>(bc, p.C, p.div_c);
    const index_t c = bc - b * p.C;
    acc_t a[VEC], m[VEC];
    gather_delta<L, kAct, VEC>(p, delta, b, c, h, w0, a);  // stride 0 on a shared (batch-1) delta / mask
    gather_mask<L, VEC>(p, mask, b, c, h, w0, m);
    finish_outputs<P, L, VEC>(p, x, b, c, h, w0, a, m, constants_of<P, acc_t>(p, norm, c), out + (row * p.W + w0));
  } else {  // kBilinearRuns layout, rows h0 .. h0 + kRows - 1 (those < H) with one set of column taps
    const index_t hg = static_cast<index_t>(p.div_h.d);  // ceil(H / kRows)
    const index_t bc = divide<index_t>(row, hg, p.div_h);
    const index_t h0 = window_tiling::first_row<VEC, index_t>(row - bc * hg);
    const index_t b = divide<index_t>(bc, p.C, p.div_c);
    const index_t c = bc - b * p.C;
    const auto k = constants_of<P, acc_t>(p, norm, c);
    // A scaled mask (SMM): the thread's VEC x VEC positions lie in one mask cell (h0 / s, w0 / s)
    // (window_tiling::one_mask_cell, checked by dispatch_fast_forward): one load for all of them.
    acc_t m_cell = static_cast<acc_t>(1);
    if constexpr (L::kMask == static_cast<int>(MaskKind::kScaled)) {
      const index_t s = p.mask_scale;
      m_cell = static_cast<acc_t>(mask[b * p.sm[0] + c * p.sm[1] + divide<index_t>(h0, s, p.div_s) * p.sm[2] +
                                       divide<index_t>(w0, s, p.div_s) * p.sm[3]]);
    }
    const auto cols = bilinear_group_columns<VEC, acc_t>(p, w0);
    const index_t x_bc[1] = {b * p.sx[0] + c * p.sx[1]};
    uint32_t cm[VEC];
    index_t xc[1][3];
    window_columns<VEC, 1>(p, x_bc, cols, cm, xc);
    // The thread's rows read the source rows rbase, rbase + 1, rbase + 2 (window_column: clamped):
    // their row taps are a run of kRows resized rows from y0 = h0 - oy (bilinear_columns, as the
    // group's columns; exact for the rows inside the copy, the others are masked out by rm), rbase =
    // i0 of row y0 (bilinear_window_fits for runs of kRows rows, checked by the dispatch). The 3 x 3
    // window xw[t][j] (window row t, column j) is loaded once; each row takes its taps' rows
    // i0, i1 = window rows slot, slot + 1 (slot = rows.hi[r]: window_tiling::window_rows).
    ColumnRun<kRows, acc_t> rows;
    const index_t y0 = h0 - p.oy[0];
    const index_t rbase = window_tiling::window_rows<kRows, acc_t, index_t>(y0, p.Hin, p.lin_scale_h, rows);
    acc_t xw[3][3];
#pragma unroll
    for (int t = 0; t < 3; ++t) {
      const index_t ro = window_column<index_t>(rbase, t, p.Hin) * p.sx[2];
#pragma unroll
      for (int j = 0; j < 3; ++j) xw[t][j] = load_input<acc_t>(x + (xc[0][j] + ro), 0);
    }
    using uindex_t = std::make_unsigned_t<index_t>;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const index_t h = h0 + r;
      if (r > 0 && h >= p.H) break;
      const uint32_t rm = static_cast<uindex_t>(y0 + r) < static_cast<uindex_t>(p.Hr) ? ~0u : 0u;
      const Tap<acc_t, index_t> ty{0, 0, rows.l0[r], rows.l1[r]};  // blend_rows reads l0, l1
      const bool hi = rows.hi[r];
      acc_t cw[3];
#pragma unroll
      for (int j = 0; j < 3; ++j) cw[j] = blend_rows<acc_t, index_t>(hi ? xw[1][j] : xw[0][j], hi ? xw[2][j] : xw[1][j], ty);
      acc_t a[VEC], m[VEC];
      gather_delta<L, kAct, VEC>(p, delta, b, c, h, w0, a);
      if constexpr (L::kMask == static_cast<int>(MaskKind::kScaled)) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) m[i] = m_cell;
      } else {
        gather_mask<L, VEC>(p, mask, b, c, h, w0, m);
      }
      window_outputs<P, VEC>(cw[0], cw[1], cw[2], cols, cm, rm, a, m, k, out + ((bc * p.H + h) * p.W + w0), true);
    }
  }
}

// Batch-shared delta and mask (kBatchShared<L, kAct>): a block is G = 256 / VEC position groups
// (blockIdx.x) x VEC samples (blockIdx.y * VEC ..), p.groups = C * H * gpr. Thread (gl, s) =
// (tid % G, tid / G) computes act(delta) and reads the mask for element s of its group only -- one
// activation per thread instead of VEC, the same value for every sample -- the block exchanges them
// through shared memory, and the thread then writes its group's VEC outputs of sample
// b = blockIdx.y * VEC + s. The values are those of forward_per_thread (same functions, a and m
// held in float).
template <typename scalar_t, typename x_t, Activation kAct, class P, class L, typename index_t>
__device__ __forceinline__ void forward_batch_shared(const KernelArgs<acc_type_t<scalar_t>, index_t>& p,
                                                     const x_t* __restrict__ x, const scalar_t* __restrict__ delta,
                                                     const scalar_t* __restrict__ mask, const acc_type_t<scalar_t>* __restrict__ norm,
                                                     scalar_t* __restrict__ out) {
  using acc_t = acc_type_t<scalar_t>;
  static_assert(std::is_same_v<acc_t, float>, "batch-shared layouts are compiled for float accumulation only");
  constexpr int VEC = 16 / sizeof(scalar_t);
  constexpr unsigned G = kThreadsPerBlock / VEC;  // a power of two
  constexpr bool kMask = L::kMask == static_cast<int>(MaskKind::kFull);
  __shared__ __align__(16) float am_s[kMask ? 2 : 1][kThreadsPerBlock];  // act(delta), mask: [G][VEC] each
  const unsigned gl = threadIdx.x % G, s = threadIdx.x / G;
  const index_t g = static_cast<index_t>(blockIdx.x * G + gl);
  // A group past the plane's end reads the last group (no branch before the barrier) and stops after it.
  const index_t gc = g < p.groups ? g : p.groups - 1;
  const index_t row = divide<index_t>(gc, p.gpr, p.div_gpr);  // c * H + h
  const index_t w0 = (gc - row * p.gpr) * VEC;
  const index_t c = divide<index_t>(row, p.H, p.div_h);
  const index_t h = row - c * p.H;
  // Unit W stride and aligned rows: the fast layouts are 128-bit ones.
  const unsigned at = gl * VEC + s;
  am_s[0][at] = activate<kAct>(static_cast<acc_t>(delta[c * p.sd[1] + h * p.sd[2] + (w0 + static_cast<index_t>(s))]));
  if constexpr (kMask) am_s[1][at] = static_cast<acc_t>(mask[c * p.sm[1] + h * p.sm[2] + (w0 + static_cast<index_t>(s))]);
  __syncthreads();
  const index_t b = static_cast<index_t>(blockIdx.y * VEC + s);
  if (g >= p.groups || b >= p.B) return;
  acc_t a[VEC], m[VEC];
#pragma unroll
  for (int i = 0; i < VEC; i += 4) {
    const float4 av = *reinterpret_cast<const float4*>(&am_s[0][gl * VEC + i]);
    a[i] = av.x, a[i + 1] = av.y, a[i + 2] = av.z, a[i + 3] = av.w;
    if constexpr (kMask) {
      const float4 mv = *reinterpret_cast<const float4*>(&am_s[1][gl * VEC + i]);
      m[i] = mv.x, m[i + 1] = mv.y, m[i + 2] = mv.z, m[i + 3] = mv.w;
    } else {
      m[i] = m[i + 1] = m[i + 2] = m[i + 3] = static_cast<acc_t>(1);
    }
  }
  finish_outputs<P, L, VEC>(p, x, b, c, h, w0, a, m, constants_of<P, acc_t>(p, norm, c),
                            out + (b * p.plane + row * p.W + w0));
}

// forward_batch_shared for the kBilinearRuns layouts (AutoVP): each thread covers kRows canvas rows
// h0 .. h0 + kRows - 1 of its group (those < H), activating element s of the group in each, and
// writes them for S = kSamplesPerThread samples (blockIdx.y * S * VEC + j * VEC + s), computing the
// group's column taps once for all of them (bilinear_group_columns) and each row tap once for the
// S samples (window_row).
template <typename scalar_t, typename x_t, Activation kAct, class P, class L, typename index_t>
__device__ __forceinline__ void forward_batch_shared_rows(const KernelArgs<acc_type_t<scalar_t>, index_t>& p,
                                                          const x_t* __restrict__ x, const scalar_t* __restrict__ delta,
                                                          const scalar_t* __restrict__ mask,
                                                          const acc_type_t<scalar_t>* __restrict__ norm,
                                                          scalar_t* __restrict__ out) {
  using acc_t = acc_type_t<scalar_t>;
  static_assert(std::is_same_v<acc_t, float>, "batch-shared layouts are compiled for float accumulation only");
  constexpr int VEC = 16 / sizeof(scalar_t);
  constexpr unsigned G = kThreadsPerBlock / VEC;
  constexpr int kRows = kRowsPerThread<L, kAct, VEC>;
  constexpr bool kMask = L::kMask == static_cast<int>(MaskKind::kFull);
  __shared__ __align__(16) float am_s[kRows][kMask ? 2 : 1][kThreadsPerBlock];
  const unsigned gl = threadIdx.x % G, s = threadIdx.x / G;
  const index_t g = static_cast<index_t>(blockIdx.x * G + gl);
  const index_t gc = g < p.groups ? g : p.groups - 1;
  const index_t row = divide<index_t>(gc, p.gpr, p.div_gpr);  // c * ceil(H / kRows) + h0 / kRows
  const index_t w0 = (gc - row * p.gpr) * VEC;
  const index_t hg = static_cast<index_t>(p.div_h.d);
  const index_t c = divide<index_t>(row, hg, p.div_h);
  const index_t h0 = (row - c * hg) * kRows;
  const unsigned at = gl * VEC + s;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const index_t h = h0 + r < p.H ? h0 + r : p.H - 1;  // a row past H: any valid element (not stored)
    am_s[r][0][at] = activate<kAct>(static_cast<acc_t>(delta[c * p.sd[1] + h * p.sd[2] + (w0 + static_cast<index_t>(s))]));
    if constexpr (kMask) am_s[r][1][at] = static_cast<acc_t>(mask[c * p.sm[1] + h * p.sm[2] + (w0 + static_cast<index_t>(s))]);
  }
  __syncthreads();
  // Samples b_j = blockIdx.y * S * VEC + j * VEC + s (batch_tiling.h); past the batch: sample b_0's
  // reads, no store.
  constexpr int S = kSamplesPerThread<L, kAct>;
  const index_t b0 = batch_tiling::sample<index_t>(blockIdx.y, S, VEC, static_cast<int>(s), 0);
  if (g >= p.groups || b0 >= p.B) return;
  const auto k = constants_of<P, acc_t>(p, norm, c);
  const auto cols = bilinear_group_columns<VEC, acc_t>(p, w0);
  index_t x_bc[S], o_b[S];
  bool ok[S];
#pragma unroll
  for (int j = 0; j < S; ++j) {
    const index_t b = batch_tiling::sample<index_t>(blockIdx.y, S, VEC, static_cast<int>(s), j);
    ok[j] = batch_tiling::stores<index_t>(j, b, p.B);
    const index_t bj = ok[j] ? b : b0;
    x_bc[j] = bj * p.sx[0] + c * p.sx[1];
    o_b[j] = bj * p.plane + c * p.H * p.W + w0;
  }
  uint32_t cm[VEC];
  index_t xc[S][3];
  window_columns<VEC, S>(p, x_bc, cols, cm, xc);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const index_t h = h0 + r;
    if (r > 0 && h >= p.H) break;
    acc_t a[VEC], m[VEC];
#pragma unroll
    for (int i = 0; i < VEC; i += 4) {
      const float4 av = *reinterpret_cast<const float4*>(&am_s[r][0][gl * VEC + i]);
      a[i] = av.x, a[i + 1] = av.y, a[i + 2] = av.z, a[i + 3] = av.w;
      if constexpr (kMask) {
        const float4 mv = *reinterpret_cast<const float4*>(&am_s[r][1][gl * VEC + i]);
        m[i] = mv.x, m[i + 1] = mv.y, m[i + 2] = mv.z, m[i + 3] = mv.w;
      } else {
        m[i] = m[i + 1] = m[i + 2] = m[i + 3] = static_cast<acc_t>(1);
      }
    }
    scalar_t* o[S];
#pragma unroll
    for (int j = 0; j < S; ++j) o[j] = out + (o_b[j] + h * p.W);
    window_row<P, VEC, S, scalar_t>(p, x, xc, cols, cm, h, a, m, k, o, ok);
  }
}

template <typename scalar_t, typename x_t, Activation kAct, class P, class L, typename index_t>
__global__ void masked_perturb_forward_kernel(const KernelArgs<acc_type_t<scalar_t>, index_t> p,
                                              const x_t* __restrict__ x, const scalar_t* __restrict__ delta,
                                              const scalar_t* __restrict__ mask, const acc_type_t<scalar_t>* __restrict__ norm,
                                              scalar_t* __restrict__ out) {
  if constexpr (kBatchShared<L, kAct> && L::kResize == kBilinearRuns) {
    forward_batch_shared_rows<scalar_t, x_t, kAct, P, L, index_t>(p, x, delta, mask, norm, out);
  } else if constexpr (kBatchShared<L, kAct>) {
    forward_batch_shared<scalar_t, x_t, kAct, P, L, index_t>(p, x, delta, mask, norm, out);
  } else {
    forward_per_thread<scalar_t, x_t, kAct, P, L, index_t>(p, x, delta, mask, norm, out);
  }
}

// v with its bits ANDed with c (0 or ~0): v where c = ~0, +0 where c = 0. Inline PTX, so that nvcc keeps
// the mask in a register and does not turn it back into a compare and a select.
__device__ __forceinline__ float and_bits(float v, uint32_t c) {
  uint32_t bits;
  asm("and.b32 %0, %1, %2;" : "=r"(bits) : "r"(__float_as_uint(v)), "r"(c));
  return __uint_as_float(bits);
}

// Rows that are not 16-byte aligned (W % VEC != 0, the odd widths of Elsayed et al.): one copy, no
// resize, delta and mask (none or at canvas resolution) shared by the batch, blend add, no clamp.
// The output is tiled in flat, 16-byte aligned groups of VEC elements (a group may run over a row's
// end); delta, mask and x are read with scalar loads (delta and mask are shared: L2 hits).
// Block (blockIdx.x, blockIdx.y) = a window of 256 plane positions q = Q + t (Q = blockIdx.x *
// VEC * (G - 1) - VEC, t = threadIdx.x, G = 256 / VEC) x kPasses * VEC = 4 VEC samples. Thread t computes, for
// the plane position Q + t only, (act(delta), mask, mean, 1 / std) and the x offset (-1 off the copy)
// into shared memory: one activation per position and block, not per output. Thread (gl, s) =
// (t % G, t / G), gl < G - 1, then writes the outputs of the samples b = blockIdx.y * 4 VEC + j * VEC
// + s, j = 0 .. 3, at plane positions q0 .. q0 + VEC - 1 with
// q0 = Q + VEC + VEC * gl - sh, sh = (b * plane) % VEC, so that b * plane + q0 is a multiple of VEC
// (a 128-bit store). For each sample the G - 1 groups of block x tile [x * VEC * (G - 1) - sh, ...),
// ceil((plane + VEC - 1) / (VEC * (G - 1))) blocks cover [0, plane), and a group running over the
// plane's ends stores its positions inside it one by one (16-bit: all passes' such groups after the
// passes, flat_clipped_store.h). Positions off the copy load the sample's first x element and mask its
// term to +0 (and_bits): no predicated loads. p.gpr = W and p.div_gpr = FastDivmod(W) for this kernel
// (int32 only). The index arithmetic is flat_tiling.h, the clipped groups' store flat_clipped_store.h
// (both host-tested).
// kFlatBlocksPerSm: at most 80 registers (256 threads), 3 blocks per SM (without the bound ptxas
// took 94 for the 16-bit kernels with their clipped groups in registers: 2 blocks per SM).
constexpr int kFlatBlocksPerSm = 3;
template <typename scalar_t, typename x_t, Activation kAct, class P, bool kMask, typename index_t>
__global__ void __launch_bounds__(kThreadsPerBlock, kFlatBlocksPerSm) masked_perturb_forward_flat_kernel(const KernelArgs<acc_type_t<scalar_t>, index_t> p,
                                                   const x_t* __restrict__ x, const scalar_t* __restrict__ delta,
                                                   const scalar_t* __restrict__ mask,
                                                   const acc_type_t<scalar_t>* __restrict__ norm,
                                                   scalar_t* __restrict__ out) {
  using acc_t = acc_type_t<scalar_t>;
  static_assert(std::is_same_v<acc_t, float> && !P::kDynamic, "flat layout: float accumulation, fixed pointwise");
  using uindex_t = std::make_unsigned_t<index_t>;
  constexpr int VEC = 16 / sizeof(scalar_t);
  constexpr int G = flat_tiling::kGroups<VEC>;
  static_assert(flat_tiling::kThreads == kThreadsPerBlock, "flat layout: one window slot per thread");
  __shared__ float4 amk_s[kThreadsPerBlock];  // act(delta), mask, mean, 1 / std
  __shared__ index_t xo_s[kThreadsPerBlock];
  // 16-bit: pass j's group of thread t when it crosses a plane's end, stored after the passes
  // (flat_tiling::store_clipped); each thread uses only its own slots (no barrier). Not in
  // registers: 16 more registers live over the passes.
  constexpr int kKept = sizeof(scalar_t) == 2 ? kThreadsPerBlock : 1;
  __shared__ uint4 kept_s[flat_tiling::kPasses<VEC>][kKept];
  const int t = static_cast<int>(threadIdx.x);
  const index_t Q = flat_tiling::window_start<VEC>(static_cast<index_t>(blockIdx.x));
  {
    const index_t q = Q + t;
    float4 amk = make_float4(0.0f, 0.0f, 0.0f, 1.0f);
    index_t xo = -1;
    if (static_cast<uindex_t>(q) < static_cast<uindex_t>(p.plane)) {
      const index_t row = divide<index_t>(q, p.gpr, p.div_gpr);  // c * H + h
      const index_t w = q - row * p.gpr;
      const index_t c = divide<index_t>(row, p.H, p.div_h);
      const index_t h = row - c * p.H;
      amk.x = activate<kAct>(static_cast<acc_t>(delta[c * p.sd[1] + h * p.sd[2] + w * p.sd[3]]));
      amk.y = kMask ? static_cast<acc_t>(mask[c * p.sm[1] + h * p.sm[2] + w * p.sm[3]]) : 1.0f;
      if constexpr (P::kNormalize != Normalize::kNone) amk.z = norm[c], amk.w = norm[p.C + c];
      const index_t y = h - p.oy[0], xw = w - p.ox[0];
      if (static_cast<uindex_t>(y) < static_cast<uindex_t>(p.Hr) && static_cast<uindex_t>(xw) < static_cast<uindex_t>(p.Wr))
        xo = c * p.sx[1] + y * p.sx[2] + xw * p.sx[3];
    }
    amk_s[t] = amk;
    xo_s[t] = xo;
  }
  __syncthreads();
  const int gl = t % G, s = t / G;
  if (gl == G - 1) return;
  const int nj = flat_tiling::passes<VEC>(static_cast<index_t>(blockIdx.y), s, p.B);
  if (nj == 0) return;
  const index_t b0 = flat_tiling::sample<VEC>(static_cast<index_t>(blockIdx.y), 0, s);
  // The group's window slots, read once: pass j's sample b0 + j * VEC has the same shift, as
  // (b0 + j * VEC) * plane = b0 * plane (mod VEC), so the same t0, the same positions q0 .. q0 + VEC - 1.
  const int t0 = flat_tiling::group_slot<VEC>(gl, b0, p.plane);  // in [1, 256 - VEC]
  const index_t q0 = Q + t0;
  const bool whole = flat_tiling::group_in_plane<VEC>(q0, p.plane);  // the same for every pass
  // Off the copy (slot offset -1) the load reads the sample's first element and the coverage mask
  // cm = 0 turns its term into +0: the value of perturb_value(0, false, ...) (u = 0 off the copies).
  index_t xo[VEC];
  uint32_t cm[VEC];
  float4 amk[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const index_t off = xo_s[t0 + i];
    cm[i] = off >= 0 ? ~0u : 0u;
    xo[i] = off >= 0 ? off : 0;
    amk[i] = amk_s[t0 + i];
  }
#pragma unroll
  for (int j = 0; j < flat_tiling::kPasses<VEC>; ++j) {
    if (j >= nj) break;
    const index_t b = flat_tiling::sample<VEC>(static_cast<index_t>(blockIdx.y), j, s);
    const index_t xb = b * p.sx[0];  // x + (xb + xo): one 32-bit add and one wide multiply-add per load
    scalar_t vals[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const acc_t u = load_input<acc_t>(x + (xb + xo[i]), 0);
      ChannelConstants<acc_t> k{};
      if constexpr (P::kNormalize == Normalize::kBefore) k.before_mean = amk[i].z, k.before_inv_std = amk[i].w;
      if constexpr (P::kNormalize == Normalize::kAfter) k.after_mean = amk[i].z, k.after_inv_std = amk[i].w;
      vals[i] = static_cast<scalar_t>(perturb_from_term<P, acc_t>(and_bits(placed_term<P, acc_t>(u, k), cm[i]), amk[i].x, amk[i].y, k));
    }
    scalar_t* o = out + (b * p.plane + q0);
    if (whole) {
      store_vec(o, vals);
    } else if constexpr (sizeof(scalar_t) == 4) {
#pragma unroll
      for (int i = 0; i < VEC; ++i)
        if (static_cast<uindex_t>(q0 + i) < static_cast<uindex_t>(p.plane)) o[i] = vals[i];
    } else {
      flat_tiling::pack_group(kept_s[j][t], vals);
    }
  }
  if constexpr (sizeof(scalar_t) == 2) {
    if (!whole) {
      uint4 kept[flat_tiling::kPasses<VEC>];
#pragma unroll
      for (int j = 0; j < flat_tiling::kPasses<VEC>; ++j)
        if (j < nj) kept[j] = kept_s[j][t];
      flat_tiling::store_clipped<scalar_t, VEC>(out + (b0 * p.plane + q0), static_cast<index_t>(VEC) * p.plane, kept, nj,
                                                flat_tiling::clipped_first(q0), flat_tiling::clipped_end<VEC>(q0, p.plane));
    }
  }
}

// ---- backward --------------------------------------------------------------------------------

// Outputs of the backward kernel in the accumulation dtype acc_t (float; double for double
// tensors), null when not asked for (or, for a per-sample mask with mask_scale > 1, left to
// masked_perturb_mask_grad_kernel). delta / mask: [B, C, H, W] per sample when Bd / Bm > 1, else
// the final [1, C, H, W] batch sum.
template <typename acc_t>
struct BackwardOutputs {
  acc_t* delta;
  acc_t* mask;
  acc_t* placed;
};

// Stores the VEC values v at p (128-bit when L::kVec, else element by element on the canvas).
template <class L, int VEC, typename acc_t, typename AR, typename index_t>
__device__ __forceinline__ void store_grads(const AR& pa, acc_t* __restrict__ p, index_t w0, const acc_t (&v)[VEC]) {
  store_group<L>(pa, p, w0, v);
}

// kLinear: blend add, no clamp, delta and mask shared, no input gradient. Then
// grad_delta = inv_std * G * m * act'(delta), grad_mask = inv_std * G * act(delta) with G the batch
// sum of grad_out (the CPU's linear path, same products), so the batch loop only sums grad_out.
// Otherwise every sample's element gradients (perturb_element_backward) are computed.
template <typename scalar_t, typename x_t, Activation kAct, bool kLinear, class L, typename index_t>
__global__ void masked_perturb_backward_kernel(const KernelArgs<acc_type_t<scalar_t>, index_t> p,
                                               const scalar_t* __restrict__ grad_out, const x_t* __restrict__ x,
                                               const scalar_t* __restrict__ delta, const scalar_t* __restrict__ mask,
                                               const acc_type_t<scalar_t>* __restrict__ norm,
                                               BackwardOutputs<acc_type_t<scalar_t>> g, bool need_u) {
  using acc_t = acc_type_t<scalar_t>;
  using P = DynamicPointwise;
  constexpr int VEC = 16 / sizeof(scalar_t);
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_bytes);  // [2][J][GX][VEC]: shared delta, mask partials
  const index_t GX = static_cast<index_t>(blockDim.x), j = static_cast<index_t>(threadIdx.y);
  const index_t gi = static_cast<index_t>(blockIdx.x) * GX + static_cast<index_t>(threadIdx.x);
  const bool active = gi < p.groups;
  const index_t plane = p.C * p.H * p.W;
  const bool shared_d = g.delta != nullptr && p.Bd == 1, shared_m = g.mask != nullptr && p.Bm == 1;
  acc_t sum_d[VEC], sum_m[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) sum_d[i] = sum_m[i] = static_cast<acc_t>(0);
  if (active) {
    const index_t row = divide<index_t>(gi, p.gpr, p.div_gpr);  // c * H + h
    const index_t w0 = (gi - row * p.gpr) * VEC;
    const index_t c = divide<index_t>(row, p.H, p.div_h);
    const index_t h = row - c * p.H;
    const index_t b0 = divide<index_t>(p.B * j, p.chunks, p.div_j);
    const index_t b1 = divide<index_t>(p.B * (j + 1), p.chunks, p.div_j);
    const index_t go_off = row * p.W + w0;
    if constexpr (kLinear) {
#pragma unroll 4
      for (index_t b = b0; b < b1; ++b) {
        acc_t gv[VEC];
        load_group<L>(p, grad_out + (b * plane + go_off), w0, gv);
#pragma unroll
        for (int i = 0; i < VEC; ++i) sum_d[i] += gv[i];
      }
    } else {
      const auto k = constants_of<P, acc_t>(p, norm, c);
      acc_t a[VEC], dact[VEC], m[VEC], u[VEC];
      bool cov[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        u[i] = static_cast<acc_t>(0);
        cov[i] = false;
      }
      for (index_t b = b0; b < b1; ++b) {
        if (b == b0 || p.Bd > 1) {
          gather_delta<L, kAct, VEC>(p, delta, p.Bd > 1 ? b : index_t(0), c, h, w0, a);
#pragma unroll
          for (int i = 0; i < VEC; ++i) dact[i] = activation_derivative<kAct>(a[i]);
        }
        if (b == b0 || p.Bm > 1) gather_mask<L, VEC>(p, mask, p.Bm > 1 ? b : index_t(0), c, h, w0, m);
        if (need_u) gather_placed<L, VEC>(p, x, b * p.sx[0] + c * p.sx[1], h, w0, u, cov);
        acc_t gv[VEC];
        load_group<L>(p, grad_out + (b * plane + go_off), w0, gv);
        acc_t ga[VEC], gm[VEC], gu[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const auto e = perturb_element_backward<acc_t>(gv[i], u[i], cov[i], a[i], m[i], k);
          ga[i] = e.ga * dact[i];
          gm[i] = e.gm;
          gu[i] = e.gu;
          sum_d[i] += e.ga;
          sum_m[i] += e.gm;
        }
        const index_t at = b * plane + row * p.W + w0;
        if (g.delta && p.Bd > 1) store_grads<L, VEC>(p, g.delta + at, w0, ga);
        if (g.mask && p.Bm > 1) store_grads<L, VEC>(p, g.mask + at, w0, gm);
        if (g.placed) store_grads<L, VEC>(p, g.placed + at, w0, gu);
      }
    }
  }
  if (!shared_d && !shared_m) return;  // uniform over the grid
  // The J chunk partials of each position, then one thread per position adds them in order.
  const index_t J = p.chunks, slots = GX * VEC;
  acc_t* part_d = smem;
  acc_t* part_m = smem + J * slots;
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    part_d[j * slots + static_cast<index_t>(threadIdx.x) * VEC + i] = sum_d[i];
    if constexpr (!kLinear) part_m[j * slots + static_cast<index_t>(threadIdx.x) * VEC + i] = sum_m[i];
  }
  __syncthreads();
  for (index_t s = j * GX + static_cast<index_t>(threadIdx.x); s < slots; s += J * GX) {
    const index_t gi2 = static_cast<index_t>(blockIdx.x) * GX + s / VEC, i = s % VEC;
    if (gi2 >= p.groups) continue;
    const index_t row = divide<index_t>(gi2, p.gpr, p.div_gpr);
    const index_t w = (gi2 - row * p.gpr) * VEC + i;
    if (w >= p.W) continue;
    const index_t c = divide<index_t>(row, p.H, p.div_h);
    const index_t h = row - c * p.H;
    acc_t total_d = 0, total_m = 0;
    for (index_t jj = 0; jj < J; ++jj) {
      total_d += part_d[jj * slots + s];
      if constexpr (!kLinear) total_m += part_m[jj * slots + s];
    }
    if constexpr (kLinear) total_m = total_d;  // both gradients scale G = sum_b grad_out
    const acc_t a = activate<kAct>(static_cast<acc_t>(delta[c * p.sd[1] + h * p.sd[2] + w * p.sd[3]]));
    const index_t at = row * p.W + w;
    if constexpr (kLinear) {
      const acc_t inv_std = p.pw.normalize_after ? norm[p.C + c] : static_cast<acc_t>(1);
      if (shared_d) {
        acc_t mv = 1;
        if (p.mask_kind != MaskKind::kNone) {
          const index_t s_ = p.mask_scale;
          mv = static_cast<acc_t>(mask[c * p.sm[1] + divide<index_t>(h, s_, p.div_s) * p.sm[2] +
                                       divide<index_t>(w, s_, p.div_s) * p.sm[3]]);
        }
        g.delta[at] = inv_std * total_d * mv * activation_derivative<kAct>(a);
      }
      if (shared_m) g.mask[at] = inv_std * total_m * a * static_cast<acc_t>(1);
    } else {
      if (shared_d) g.delta[at] = total_d * activation_derivative<kAct>(a);
      if (shared_m) g.mask[at] = total_m;
    }
  }
}

// Threads per block of masked_perturb_mask_grad_kernel: at its 56 registers (fp32) an SM holds 9 such
// blocks (1152 threads) against 4 of 256 (1024), and SMM's 150,528 cells (B = 64, 3 x 28 x 28) fill
// 1176 of the 1188 slots of an H100 / H200: one wave instead of 1.1.
constexpr int kCellThreadsPerBlock = 128;

// A per-sample mask's gradient at mask resolution (Bm > 1, mask_scale s > 1): one thread per mask cell
// (b, c, q, r) of [B, C, Hm, Wm], its footprint summed in the CPU kernel's order (mask_grad_cell,
// mask_grad_thread.h, which host tests run). One writer per cell: deterministic, no atomics.
template <typename scalar_t, typename x_t, Activation kAct, class L, typename index_t>
__global__ void masked_perturb_mask_grad_kernel(const KernelArgs<acc_type_t<scalar_t>, index_t> p, const CellGrid<index_t> cg,
                                                const scalar_t* __restrict__ grad_out, const x_t* __restrict__ x,
                                                const scalar_t* __restrict__ delta, const scalar_t* __restrict__ mask,
                                                const acc_type_t<scalar_t>* __restrict__ norm,
                                                acc_type_t<scalar_t>* __restrict__ grad_mask, bool need_u) {
  const index_t cell = static_cast<index_t>(blockIdx.x) * kCellThreadsPerBlock + static_cast<index_t>(threadIdx.x);
  if (cell >= cg.cells) return;
  grad_mask[cell] = mask_grad_cell<scalar_t, x_t, kAct, L, index_t>(p, cg, cell, grad_out, x, delta, mask, norm, need_u);
}

// ---- host side -------------------------------------------------------------------------------

// Batch chunks of the CUDA backward: the smallest power of two (<= B, <= kMaxChunks) that gives
// kTargetBlocks blocks of 256 threads. A function of the shape only (never of the device).
int64_t cuda_backward_chunks(int64_t B, int64_t groups) {
  int64_t J = 1;
  while (2 * J <= B && 2 * J <= kMaxChunks && (groups * J + kThreadsPerBlock - 1) / kThreadsPerBlock < kTargetBlocks)
    J *= 2;
  return J;
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Rows of a [B?, C?, H, W] view with element strides st start 16-byte aligned and run contiguously.
bool rows_vectorisable(const void* base, const Strides4& st, int vec) {
  return aligned16(base) && st.w == 1 && st.h % vec == 0 && st.c % vec == 0 && st.b % vec == 0;
}

// Host-side description of a call: the kernel arguments and which compiled variant to take.
template <typename acc_t, typename index_t>
KernelArgs<acc_t, index_t> kernel_args(const MaskedPerturbArgs& A, at::IntArrayRef offsets, const int64_t* dev_offsets,
                                       int vec, const Tensor& x, bool backward) {
  KernelArgs<acc_t, index_t> p{};
  p.B = A.B, p.C = A.C, p.H = A.H, p.W = A.W;
  p.Bd = A.Bd, p.Bm = A.Bm;
  p.gpr = (A.W + vec - 1) / vec;
  p.groups = (backward ? 1 : A.B) * A.C * A.H * p.gpr;
  p.plane = A.C * A.H * A.W;
  const Strides4* st[3] = {&A.sx, &A.sd, &A.sm};
  index_t* dst[3] = {p.sx, p.sd, p.sm};
  for (int t = 0; t < 3; ++t) {
    dst[t][0] = st[t]->b, dst[t][1] = st[t]->c, dst[t][2] = st[t]->h, dst[t][3] = st[t]->w;
  }
  p.Hin = A.pl.Hin, p.Win = A.pl.Win, p.Hr = A.pl.Hr, p.Wr = A.pl.Wr;
  if (A.pl.resize_mode != ResizeMode::kNone && A.pl.Hr > 0 && A.pl.Wr > 0) {
    p.lin_scale_h = static_cast<acc_t>(A.pl.Hin) / static_cast<acc_t>(A.pl.Hr);
    p.lin_scale_w = static_cast<acc_t>(A.pl.Win) / static_cast<acc_t>(A.pl.Wr);
    p.near_scale_h = static_cast<float>(A.pl.Hin) / static_cast<float>(A.pl.Hr);
    p.near_scale_w = static_cast<float>(A.pl.Win) / static_cast<float>(A.pl.Wr);
  }
  p.resize = A.pl.resize_mode;
  p.mask_kind = !A.has_mask ? MaskKind::kNone : A.pw.mask_scale == 1 ? MaskKind::kFull : MaskKind::kScaled;
  p.mask_scale = A.pw.mask_scale;
  p.num_copies = static_cast<int>(A.pl.num_copies);
  p.offsets = dev_offsets;
  bool x_vec = A.pl.resize_mode == ResizeMode::kNone && x.numel() > 0 &&
               reinterpret_cast<std::uintptr_t>(x.const_data_ptr()) % (vec * x.element_size()) == 0 &&
               A.sx.w == 1 && A.sx.h % vec == 0 && A.sx.c % vec == 0 && A.sx.b % vec == 0;
  for (int64_t k = 0; k < A.pl.num_copies; ++k) {
    if (k < kMaxArgCopies) p.oy[k] = offsets[2 * k], p.ox[k] = offsets[2 * k + 1];
    x_vec = x_vec && offsets[2 * k + 1] % vec == 0;
  }
  p.x_vec = x_vec;
  p.pw = A.pw;
  if constexpr (std::is_same_v<index_t, int32_t>) {
    p.div_gpr = FastDivmod(p.gpr);
    p.div_h = FastDivmod(std::max<index_t>(p.H, 1));
    p.div_c = FastDivmod(std::max<index_t>(p.C, 1));
    p.div_s = FastDivmod(p.mask_scale);
  }
  return p;
}

// Largest element offset sum_d (size_d - 1) * stride_d of a view (its strides are >= 0).
int64_t max_offset(const Tensor& t) {
  int64_t off = 0;
  for (int64_t d = 0; d < t.dim(); ++d) off += (t.size(d) - 1) * t.stride(d);
  return off;
}

// Whether the int32 kernels may index the call: every element offset of x, delta, mask and the
// canvas, the thread count and B * chunks below 2^31, and the copies in the kernel arguments.
bool fits_int32(const MaskedPerturbArgs& A, const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                int64_t threads) {
  const int64_t lim = INT32_MAX - kThreadsPerBlock;
  return A.B * A.C * A.H * A.W < lim && max_offset(x) < lim && max_offset(delta) < lim &&
         (!mask || max_offset(*mask) < lim) && threads < lim && A.B * kMaxChunks < lim &&
         A.pl.num_copies <= kMaxArgCopies;
}

unsigned int blocks_for(int64_t threads) {
  const int64_t blocks = (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
  TORCH_CHECK(blocks <= INT32_MAX, "masked_perturb: tensor too large for one launch (", threads, " threads)");
  return static_cast<unsigned int>(std::max<int64_t>(blocks, 1));
}

// The host int list of copy offsets as an int64 tensor on `device` (through pinned memory,
// asynchronous on the current stream), only when they do not fit the kernel arguments.
Tensor offsets_on_device(at::IntArrayRef offsets, const at::Device& device) {
  const auto n = static_cast<int64_t>(offsets.size());
  if (n <= 2 * kMaxArgCopies) return Tensor();
  Tensor host = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::copy(offsets.begin(), offsets.end(), host.mutable_data_ptr<int64_t>());
  return host.to(device, /*non_blocking=*/true);
}

// The compiled forward variants: (P, L) pairs of the papers' configurations, for float / half /
// bfloat16 deltas (x of the same dtype or uint8); everything else runs a dynamic layout. The
// kBatchShared layouts (all but SMM's, with tanh or sigmoid) need delta and mask shared by the
// batch and at most 65535 blocks of VEC samples (gridDim.y).
template <typename F>
// bil_runs: unit x column stride and bilinear_window_fits for runs of VEC columns (the
// kBilinearRuns layouts' window gather; its scaled-mask layout also needs every thread's rows in one
// mask cell: window_tiling::one_mask_cell, mask_scale a multiple of VEC).
// bil_rows: bilinear_window_fits for runs of window_tiling::kRows<VEC> canvas rows (the per-thread window
// forward's three-row window: SMM, and AutoVP without a costly activation).
bool dispatch_fast_forward(const MaskedPerturbArgs& A, bool vec, bool x_vec, bool bil_runs, bool bil_rows, int64_t vec_len,
                           F&& f) {
  if (!vec || A.pw.blend != Blend::kAdd || A.pw.has_clamp) return false;
  const bool shared = !costly_activation(A.pw.activation) ||
                      (A.Bd == 1 && (!A.has_mask || A.Bm == 1) && (A.B + vec_len - 1) / vec_len <= 65535);
  // Resize none: whole groups of VEC inside or outside every copy, 128-bit x loads.
  const bool x_whole = x_vec && A.pl.Wr % vec_len == 0;
  const bool one = A.pl.num_copies == 1, multi = A.pl.num_copies > 1;
  const MaskKind mk = !A.has_mask ? MaskKind::kNone : A.pw.mask_scale == 1 ? MaskKind::kFull : MaskKind::kScaled;
  const ResizeMode r = A.pl.resize_mode;
  constexpr int kNone = static_cast<int>(ResizeMode::kNone), kBil = static_cast<int>(ResizeMode::kBilinear);
  constexpr int kFull = static_cast<int>(MaskKind::kFull), kScaled = static_cast<int>(MaskKind::kScaled),
                kNoMask = static_cast<int>(MaskKind::kNone);
  const bool after = A.pw.normalize_after, before = A.pw.normalize_before, plain = !after && !before;
  using After = AddPointwise<Normalize::kAfter>;
  using Before = AddPointwise<Normalize::kBefore>;
  using Plain = AddPointwise<Normalize::kNone>;
  // ILM-VP (padding, mask outside the image, normalise after)
  if (shared && x_whole && after && one && r == ResizeMode::kNone && mk == MaskKind::kFull) return f(After{}, Layout<kNone, false, kFull, true>{}), true;
  // AutoVP (bilinear resize, then the same)
  if (shared && after && one && r == ResizeMode::kBilinear && mk == MaskKind::kFull) {
    if (bil_runs && (costly_activation(A.pw.activation) || bil_rows)) return f(After{}, Layout<kBilinearRuns, false, kFull, true>{}), true;
    return f(After{}, Layout<kBil, false, kFull, true>{}), true;
  }
  // SMM (bilinear resize, normalise before, per-sample mask at 1 / mask_scale resolution)
  if (before && one && r == ResizeMode::kBilinear && mk == MaskKind::kScaled) {
    if (bil_runs && bil_rows && window_tiling::one_mask_cell(A.pw.mask_scale, static_cast<int>(vec_len))) return f(Before{}, Layout<kBilinearRuns, false, kScaled, true>{}), true;
    return f(Before{}, Layout<kBil, false, kScaled, true>{}), true;
  }
  // Voice2Series (several copies of a 1-D series, mask outside them)
  if (shared && x_whole && plain && multi && r == ResizeMode::kNone && mk == MaskKind::kFull) return f(Plain{}, Layout<kNone, true, kFull, true>{}), true;
  // Plain additive program, no mask (Elsayed et al.)
  if (shared && x_whole && plain && one && r == ResizeMode::kNone && mk == MaskKind::kNone) return f(Plain{}, Layout<kNone, false, kNoMask, true>{}), true;
  return false;
}

// The flat forward for rows that are not 16-byte aligned (masked_perturb_forward_flat_kernel): one
// copy, no resize, blend add, no clamp, delta and mask (none, or at canvas resolution) shared by the
// batch, an aligned output, at most 65535 blocks of VEC samples, a non-empty x (the kernel reads a
// sample's first element off the copy). Calls f(P{}, bool_constant<mask>{}).
template <typename F>
bool dispatch_flat_forward(const MaskedPerturbArgs& A, bool out_aligned, int64_t vec_len, F&& f) {
  if (!out_aligned || A.pw.blend != Blend::kAdd || A.pw.has_clamp || A.pl.num_copies != 1 || A.pl.Hin == 0 || A.pl.Win == 0 ||
      A.pl.resize_mode != ResizeMode::kNone || A.Bd != 1 || (A.has_mask && (A.Bm != 1 || A.pw.mask_scale != 1)) ||
      (A.B + flat_tiling::kPasses<4> * vec_len - 1) / (flat_tiling::kPasses<4> * vec_len) > 65535)
    return false;
  return dispatch_pointwise(A.pw, [&](auto p_) {
    using P = decltype(p_);
    if constexpr (P::kDynamic) {
      return false;
    } else {
      dispatch_bool(A.has_mask, [&](auto M) { f(p_, M); });
      return true;
    }
  });
}

// The single-program problem of program v of a prompt bank (A itself without a bank): delta shared
// by the batch. The caller offsets delta by v * delta.stride(0) and the output by v * B rows.
MaskedPerturbArgs bank_program(MaskedPerturbArgs A) {
  if (!A.delta_per_sample) A.V = 1, A.Bd = 1, A.sd.b = 0;
  return A;
}

Tensor masked_perturb_forward_cuda(const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                                   RX_MASKED_PERTURB_OPTION_PARAMS, bool bank) {
  const c10::cuda::CUDAGuard device_guard(delta.device());
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS, bank);
  const auto bankA = make_masked_perturb_args(x, delta, mask, norm, o);
  Tensor out = at::empty({bankA.V * bankA.B, bankA.C, bankA.H, bankA.W},
                         delta.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  // A prompt bank runs one launch per program (the kernels of a batch-shared delta), except on the layouts
  // of cuda_bank_forward.cu (kBankForward): there one launch writes all V programs, reading x once.
  const auto A = bank_program(bankA);
  const Tensor dev_offsets = offsets_on_device(offsets, delta.device());
  const int64_t* dev_ptr = dev_offsets.defined() ? dev_offsets.const_data_ptr<int64_t>() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) { dispatch(A.pw.activation, [&](auto act) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    using acc_t = acc_type_t<scalar_t>;
    constexpr Activation kAct = decltype(act)::value;
    constexpr int VEC = 16 / sizeof(scalar_t);
    const int64_t threads = A.B * A.C * A.H * ((A.W + VEC - 1) / VEC);
    const scalar_t* mk = A.has_mask ? mask->const_data_ptr<scalar_t>() : nullptr;
    // One launch for the whole bank (launch_bank_forward, taken by the launch below for program 0): every
    // program's delta rows as aligned as program 0's, int32 offsets for the whole bank.
    const bool bank_one_launch = bankA.V > 1 && delta.stride(0) % VEC == 0 &&
                                 bank_tiling::launch_fits(bankA.V, A.B, A.C * A.H * A.W, A.C * A.H * ((A.W + VEC - 1) / VEC),
                                                          VEC, max_offset(delta), INT32_MAX - kThreadsPerBlock);
    bool whole_bank = false;
    for (int64_t v = 0; v < bankA.V && !whole_bank; ++v) {
      scalar_t* o = out.mutable_data_ptr<scalar_t>() + v * A.B * A.C * A.H * A.W;
      const scalar_t* d = delta.const_data_ptr<scalar_t>() + v * delta.stride(0);
      const bool vec = A.W % VEC == 0 && aligned16(o) && rows_vectorisable(d, A.sd, VEC) &&
                       (!A.has_mask || A.pw.mask_scale != 1 || rows_vectorisable(mk, A.sm, VEC));
      auto launch = [&](auto p_, auto l_, auto args) {
        using P = decltype(p_);
        using L = decltype(l_);
        using index_t = std::remove_cv_t<decltype(args.B)>;
        if constexpr (kBankForward<P, L, kAct> && std::is_same_v<index_t, int32_t> && !std::is_same_v<scalar_t, double>) {
          if (bank_one_launch) {
            launch_bank_forward<scalar_t, x_t, kAct, P, L>(args, static_cast<int32_t>(bankA.V), static_cast<int32_t>(delta.stride(0)),
                                                           x.const_data_ptr<x_t>(), d, mk, norm.const_data_ptr<acc_t>(), o, stream);
            whole_bank = true;
            return;
          }
        }
        dim3 grid(blocks_for(threads));
        if constexpr (kBatchShared<L, kAct>) {  // blocks of 256 / VEC groups of one plane x VEC samples
          constexpr int64_t kRows = kRowsPerThread<L, kAct, VEC>;
          const int64_t hg = (A.H + kRows - 1) / kRows;
          const int64_t plane_groups = A.C * hg * ((A.W + VEC - 1) / VEC);
          args.groups = static_cast<index_t>(plane_groups);
          if constexpr (kRows > 1) args.div_h = FastDivmod(static_cast<uint32_t>(std::max<int64_t>(hg, 1)));
          grid = dim3(blocks_for(plane_groups * VEC),
                      static_cast<unsigned>(batch_tiling::blocks_y(A.B, kSamplesPerThread<L, kAct>, VEC)));
        } else if constexpr (kRowsPerThread<L, kAct, VEC> > 1) {  // kRows canvas rows per thread (int32 layouts)
          constexpr int64_t kRows = kRowsPerThread<L, kAct, VEC>;
          const int64_t hg = (A.H + kRows - 1) / kRows;
          args.groups = static_cast<index_t>(A.B * A.C * hg * ((A.W + VEC - 1) / VEC));
          args.div_h = FastDivmod(static_cast<uint32_t>(std::max<int64_t>(hg, 1)));
          grid = dim3(blocks_for(args.groups));
        }
        masked_perturb_forward_kernel<scalar_t, x_t, kAct, P, L, index_t><<<grid, kThreadsPerBlock, 0, stream>>>(
            args, x.const_data_ptr<x_t>(), d, mk, norm.const_data_ptr<acc_t>(), o);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (!fits_int32(A, x, delta, mask, threads)) {
        launch(DynamicPointwise{}, DynamicLayout<false>{}, kernel_args<acc_t, int64_t>(A, offsets, dev_ptr, VEC, x, false));
        continue;
      }
      const auto args = kernel_args<acc_t, int32_t>(A, offsets, dev_ptr, VEC, x, false);
      if constexpr (!std::is_same_v<scalar_t, double>) {
        const bool bil_runs = A.pl.resize_mode == ResizeMode::kBilinear && A.sx.w == 1 && A.pl.Hr > 0 &&
                              bilinear_window_fits<float>(A.pl.Win, A.pl.Wr, VEC);
        const bool bil_rows = bilinear_window_fits<float>(A.pl.Hin, A.pl.Hr, window_tiling::kRows<VEC>);
        if (dispatch_fast_forward(A, vec, args.x_vec, bil_runs, bil_rows, VEC, [&](auto p_, auto l_) { launch(p_, l_, args); })) continue;
      }
      if (vec) {
        launch(DynamicPointwise{}, DynamicLayout<true>{}, args);
        continue;
      }
      if constexpr (!std::is_same_v<scalar_t, double>) {
        if (dispatch_flat_forward(A, aligned16(o), VEC, [&](auto p_, auto with_mask) {
              using P = decltype(p_);
              constexpr bool kMask = decltype(with_mask)::value;
              auto fa = args;
              fa.gpr = static_cast<int32_t>(A.W);
              fa.div_gpr = FastDivmod(static_cast<uint32_t>(A.W));
              const dim3 grid(static_cast<unsigned>(flat_tiling::blocks_x<VEC>(A.C * A.H * A.W)),
                              static_cast<unsigned>(flat_tiling::blocks_y<VEC>(A.B)));
              masked_perturb_forward_flat_kernel<scalar_t, x_t, kAct, P, kMask, int32_t><<<grid, kThreadsPerBlock, 0, stream>>>(
                  fa, x.const_data_ptr<x_t>(), d, mk, norm.const_data_ptr<acc_t>(), o);
              C10_CUDA_KERNEL_LAUNCH_CHECK();
            }))
          continue;
      }
      launch(DynamicPointwise{}, DynamicLayout<false>{}, args);
    }
  }); });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> masked_perturb_backward_cuda(const Tensor& grad_out_in, const Tensor& x,
                                                                const Tensor& delta,
                                                                const std::optional<Tensor>& mask,
                                                                RX_MASKED_PERTURB_OPTION_PARAMS,
                                                                std::array<bool, 3> needs, bool bank) {
  const c10::cuda::CUDAGuard device_guard(delta.device());
  const auto o = parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS, bank);
  const auto bankA = make_masked_perturb_args(x, delta, mask, norm, o);
  MaskedPerturbGrads grads = allocate_masked_perturb_grads(bankA, grad_out_in, delta, needs);
  const int64_t positions = bankA.C * bankA.H * bankA.W;
  if (masked_perturb_grads_empty(bankA) || positions == 0) return finish_masked_perturb_grads(bankA, grads);
  // A prompt bank runs one launch per program v (the kernels of a batch-shared delta): its delta
  // gradient is row v of [V, C, H, W]; its mask / input gradients go to row v of a [V, ...] buffer
  // that is summed over V afterwards (in order: deterministic).
  const auto A = bank_program(bankA);
  const int64_t V = bankA.V;
  const auto [Hm, Wm] = mask_resolution(A);
  // A per-sample mask's gradient at mask resolution comes from its own kernel, one thread per mask
  // cell (masked_perturb_mask_grad_kernel); with mask_scale 1 the cells are the canvas positions and
  // the backward kernel writes them itself.
  const bool cell_mask = grads.mask.numel() && A.Bm > 1 && A.pw.mask_scale > 1;
  // A one-channel mask's cells come out with one channel: from the cell kernel of cuda_cell_backward.cu
  // summed in the kernel, else from masked_perturb_mask_grad_kernel's C channels (cell_scratch) summed
  // after it (sum_channels_in_order: the same order, the same bits).
  const bool cell_sum = cell_mask && mask_channel_sum(A);
  const int64_t mask_plane = cell_mask ? (cell_sum ? 1 : A.C) * Hm * Wm : positions;  // elements of one mask-gradient row
  Tensor cell_scratch;
  // The shared (batch-1) gradients come out of the kernel already summed: [1, C, H, W] per program
  // (a shared mask's at canvas resolution, summed over each footprint below).
  const auto acc_opts = delta.options().dtype(masked_perturb_acc_type(delta.scalar_type()));
  if (grads.delta.numel() && !A.delta_per_sample) grads.delta = at::empty({V, A.C, A.H, A.W}, acc_opts);
  if (grads.mask.numel() && (A.Bm == 1 || V > 1 || cell_sum)) {
    grads.mask = A.Bm == 1 ? at::empty({V, A.C, A.H, A.W}, acc_opts) : at::empty({V * A.B, cell_sum ? 1 : A.C, cell_mask ? Hm : A.H, cell_mask ? Wm : A.W}, acc_opts);
  }
  if (grads.placed.numel() && V > 1) grads.placed = at::empty({V * A.B, A.C, A.H, A.W}, acc_opts);
  grads.chunks = 1;
  const Tensor grad_out = grad_out_in.contiguous();
  const Tensor dev_offsets = offsets_on_device(offsets, delta.device());
  const int64_t* dev_ptr = dev_offsets.defined() ? dev_offsets.const_data_ptr<int64_t>() : nullptr;
  // u enters the gradients through clamp (whether v was clipped) and blend replace (the mask's
  // gradient g * (a - u)); blend add's mask gradient g * a does not read it.
  const bool need_u = grads.placed.numel() || A.pw.has_clamp || A.pw.blend == Blend::kReplace;
  const bool linear = A.pw.blend == Blend::kAdd && !A.pw.has_clamp && A.Bd == 1 && A.Bm == 1 && !grads.placed.numel();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_masked_perturb_types(x, delta, [&](auto s, auto xv) { dispatch(A.pw.activation, [&](auto act) {
    using scalar_t = decltype(s);
    using x_t = decltype(xv);
    using acc_t = acc_type_t<scalar_t>;
    constexpr Activation kAct = decltype(act)::value;
    constexpr int VEC = 16 / sizeof(scalar_t);
    const scalar_t* mk = A.has_mask ? mask->const_data_ptr<scalar_t>() : nullptr;
    const int64_t groups = A.C * A.H * ((A.W + VEC - 1) / VEC);
    const int64_t J = cuda_backward_chunks(A.B, groups);
    const int64_t GX = std::max<int64_t>(1, kThreadsPerBlock / J);
    const dim3 block(static_cast<unsigned>(GX), static_cast<unsigned>(J));
    const int64_t blocks = (groups + GX - 1) / GX;
    TORCH_CHECK(blocks <= INT32_MAX, "masked_perturb_backward: tensor too large for one launch");
    const size_t smem = 2 * J * GX * VEC * sizeof(acc_t);
    const int64_t cells = A.B * A.C * Hm * Wm;
    for (int64_t v = 0; v < V; ++v) {
      const scalar_t* go = grad_out.const_data_ptr<scalar_t>() + v * A.B * positions;
      const scalar_t* d = delta.const_data_ptr<scalar_t>() + v * delta.stride(0);
      // program v's rows of each output (row 0 without a bank)
      const int64_t mask_rows = A.Bm == 1 ? 1 : A.B;
      BackwardOutputs<acc_t> outs{grads.delta_ptr<acc_t>(), grads.mask_ptr<acc_t>(), grads.placed_ptr<acc_t>()};
      if (outs.delta && !A.delta_per_sample) outs.delta += v * positions;
      if (outs.mask && V > 1) outs.mask += v * mask_rows * mask_plane;
      if (outs.placed && V > 1) outs.placed += v * A.B * positions;
      acc_t* cell_out = cell_mask ? outs.mask : nullptr;
      if (cell_mask) outs.mask = nullptr;  // the backward kernel computes delta's / x's gradients only
      // SMM's case (blend add, shared delta, whole footprints): one kernel reads grad_out once for the
      // mask cells and the delta's batch sum (cuda_cell_backward.cu); else the two kernels below.
      if (cell_mask && launch_cell_backward_cuda(A, delta.scalar_type(), need_u,
                                                 {go, d, mk, norm.const_data_ptr(), outs.delta, cell_out}, stream))
        continue;
      if (cell_sum) {  // program v's cells per channel, summed into its rows of grads.mask by launch_cells
        if (!cell_scratch.defined()) cell_scratch = at::empty({A.B, A.C, Hm, Wm}, acc_opts);
        cell_out = cell_scratch.mutable_data_ptr<acc_t>();
      }
      // 128-bit access: grad_out, delta and a canvas-resolution mask rows aligned, W a multiple of VEC.
      const bool vec = A.W % VEC == 0 && aligned16(go) && rows_vectorisable(d, A.sd, VEC) &&
                       (!A.has_mask || A.pw.mask_scale != 1 || rows_vectorisable(mk, A.sm, VEC));
      auto launch = [&](auto lin, auto l_, auto args) {
        using L = decltype(l_);
        using index_t = std::remove_cv_t<decltype(args.B)>;
        args.chunks = static_cast<index_t>(J);
        if constexpr (std::is_same_v<index_t, int32_t>) args.div_j = FastDivmod(static_cast<uint32_t>(J));
        args.groups = static_cast<index_t>(groups);
        masked_perturb_backward_kernel<scalar_t, x_t, kAct, decltype(lin)::value, L, index_t>
            <<<static_cast<unsigned>(blocks), block, smem, stream>>>(args, go, x.const_data_ptr<x_t>(), d, mk,
                                                                     norm.const_data_ptr<acc_t>(), outs, need_u);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      // The cell kernel's layout: 128-bit when every footprint row is whole groups of VEC (s % VEC == 0).
      auto launch_cells = [&](auto l_, auto args) {
        using L = decltype(l_);
        using index_t = std::remove_cv_t<decltype(args.B)>;
        args.x_vec = args.x_vec && L::kVec;  // groups start at multiples of VEC only on the 128-bit layout
        CellGrid<index_t> cg{static_cast<index_t>(Hm), static_cast<index_t>(Wm), static_cast<index_t>(cells), {}, {}};
        if constexpr (std::is_same_v<index_t, int32_t>) {
          cg.div_hm = FastDivmod(static_cast<uint32_t>(std::max<int64_t>(Hm, 1)));
          cg.div_wm = FastDivmod(static_cast<uint32_t>(std::max<int64_t>(Wm, 1)));
        }
        const int64_t cell_blocks = (cells + kCellThreadsPerBlock - 1) / kCellThreadsPerBlock;
        TORCH_CHECK(cell_blocks <= INT32_MAX, "masked_perturb_backward: mask too large for one launch");
        masked_perturb_mask_grad_kernel<scalar_t, x_t, kAct, L, index_t>
            <<<static_cast<unsigned>(cell_blocks), kCellThreadsPerBlock, 0, stream>>>(
                args, cg, go, x.const_data_ptr<x_t>(), d, mk, norm.const_data_ptr<acc_t>(), cell_out, need_u);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (cell_sum) grads.mask.narrow(0, v * A.B, A.B).copy_(sum_channels_in_order(cell_scratch));
      };
      const bool backward_kernel = outs.delta || outs.mask || outs.placed;
      if (!fits_int32(A, x, delta, mask, A.B * groups)) {
        const auto args = kernel_args<acc_t, int64_t>(A, offsets, dev_ptr, VEC, x, true);
        if (backward_kernel) launch(std::false_type{}, DynamicLayout<false>{}, args);
        if (cell_mask) launch_cells(DynamicLayout<false>{}, args);
        continue;
      }
      const auto args = kernel_args<acc_t, int32_t>(A, offsets, dev_ptr, VEC, x, true);
      // Rows not 16-byte aligned, linear case: the flat backward of cuda_flat_backward.cu (false: not served).
      auto flat_backward = [&]() {
        if constexpr (std::is_same_v<scalar_t, double>) return false;
        else return masked_perturb_backward_flat_cuda<scalar_t>(A, go, d, mk, norm.const_data_ptr<acc_t>(), outs.delta, outs.mask, stream);
      };
      if (backward_kernel && linear && vec) {
        launch(std::true_type{}, DynamicLayout<true>{}, args);
      } else if (backward_kernel && linear && flat_backward()) {
        // launched
      } else if (backward_kernel && vec) {
        launch(std::false_type{}, DynamicLayout<true>{}, args);
      } else if (backward_kernel) {
        launch(std::false_type{}, DynamicLayout<false>{}, args);
      }
      if (cell_mask && vec && A.pw.mask_scale % VEC == 0) {
        launch_cells(DynamicLayout<true>{}, args);
      } else if (cell_mask) {
        launch_cells(DynamicLayout<false>{}, args);
      }
    }
  }); });
  if (V > 1 && grads.mask.numel()) {
    grads.mask = grads.mask.view({V, grads.mask.size(0) / V, grads.mask.size(1), grads.mask.size(2), grads.mask.size(3)}).sum(0);
  }
  if (V > 1 && grads.placed.numel()) grads.placed = grads.placed.view({V, A.B, A.C, A.H, A.W}).sum(0);
  if (grads.mask.numel() && A.Bm == 1) grads.mask = mask_patch_sums(grads.mask, A.pw.mask_scale);
  return {grads.delta, sum_mask_channels(A, grads.mask), grads.placed};
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, CUDA, m) {
  m.impl("masked_perturb_forward", &masked_perturb_forward_cuda);
  m.impl("masked_perturb_backward", &masked_perturb_backward_cuda);
}

}  // namespace reprogram_ext
