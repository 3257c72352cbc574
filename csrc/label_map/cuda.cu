// CUDA kernels of label_map and mapped_cross_entropy (formulas: csrc/label_map/math.h,
// docs/ops/label_map.md; the per-target math is the same __host__ __device__ code the CPU kernels
// run, the row mechanics are csrc/label_map/cuda_rows.cuh and the gradient-row writer
// csrc/label_map/cuda_grad_row.cuh, both host-callable). The kernels are templates on the reduce
// (options.h: dispatch(Reduce, f)), like the CPU ones.
//
// Rows are handed to groups of P threads (a power of two, row_threads_log2): a block of kRowBlock
// threads holds kRowBlock / P rows, so that small T still keeps the lanes busy (T = 10: 8 rows of
// 16 lanes). A row's lanes take its targets t = lane, lane + P, ... and reduce across the group with
// butterfly shuffles (all lanes get the same bits) and, for P > 32, a fixed-order pass over the
// warps' partials in shared memory. The row's log-sum-exp is one pass: each lane keeps an online
// (max, sum-exp) over 128-bit loads of its part of the row (scalar head and tail where the row
// does not start 16-byte aligned), and the group merges the pairs.
//
// The backward writes every gradient element once, by one thread, with 128-bit stores: dense value
// (-D softmax(x)_j, or 0) plus the sum, in (t, k) order, of the coefficients of the index entries
// whose source is j. Those entries come from the source -> entries inverse map of the index (CSR,
// plus a bit per source), built on the device once per index tensor and cached (SourceMap below).
// No float atomics: deterministic, and the same order of additions as the CPU kernels. Everything
// is launched on the current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it pulls in cuSPARSE headers
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "label_map/args.h"
#include "label_map/cuda_grad_row.cuh"
#include "label_map/cuda_rows.cuh"

namespace reprogram_ext {
namespace label_map {
namespace {

using at::Tensor;

// ------------------------------------------------------------------------------ row groups

// The row group of this thread: P = 2^log_p lanes per row, kRowBlock / P rows per block.
struct RowGroup {
  int log_p, lane;
  int64_t n;  // the row (may be >= N in the last block: such lanes only join the reductions)
  __device__ explicit RowGroup(int lp)
      : log_p(lp),
        lane(static_cast<int>(threadIdx.x) & ((1 << lp) - 1)),
        n(static_cast<int64_t>(blockIdx.x) * (kRowBlock >> lp) + (threadIdx.x >> lp)) {}
  // This lane's strided loop over [begin, end): count(begin, end) iterations, the i-th at(begin, i)
  // (trip count by a shift: no 64-bit division by the run-time P).
  __device__ int64_t count(int64_t begin, int64_t end) const { return lane_count(begin, end, lane, log_p); }
  __device__ int64_t at(int64_t begin, int64_t i) const { return begin + lane + (i << log_p); }
};

// Sum (kMax false) or NaN-skipping max over the row group, the same bits in every lane. Called by
// every thread of the block (it has a barrier when P > 32). scratch: kRowBlock / 32 values.
template <bool kMax, typename A>
__device__ A group_reduce(A v, int log_p, A* scratch) {
  const int width = log_p < 5 ? (1 << log_p) : 32;
  for (int o = width >> 1; o > 0; o >>= 1) {
    const A u = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? nan_skip_max(v, u) : v + u;
  }
  if (log_p > 5) {
    __syncthreads();  // scratch may still be read by the previous reduction
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    const int first = static_cast<int>(threadIdx.x >> log_p) << (log_p - 5), warps = 1 << (log_p - 5);
    v = scratch[first];
    for (int w = 1; w < warps; ++w) v = kMax ? nan_skip_max(v, scratch[first + w]) : v + scratch[first + w];
  }
  return v;
}

// OnlineLse merged over the row group (same calling rule as group_reduce). scratch: 2 x kRowBlock / 32.
template <typename A>
__device__ void group_merge(OnlineLse<A>& r, int log_p, A* scratch) {
  const int width = log_p < 5 ? (1 << log_p) : 32;
  for (int o = width >> 1; o > 0; o >>= 1) {
    const A m2 = __shfl_xor_sync(0xffffffffu, r.m, o), s2 = __shfl_xor_sync(0xffffffffu, r.s, o);
    r.merge(m2, s2);
  }
  if (log_p > 5) {
    constexpr int W = kRowBlock / 32;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
      scratch[threadIdx.x >> 5] = r.m;
      scratch[W + (threadIdx.x >> 5)] = r.s;
    }
    __syncthreads();
    const int first = static_cast<int>(threadIdx.x >> log_p) << (log_p - 5), warps = 1 << (log_p - 5);
    r.m = scratch[first];
    r.s = scratch[W + first];
    for (int w = 1; w < warps; ++w) r.merge(scratch[first + w], scratch[W + first + w]);
  }
}

// The row's normaliser (max, log sum exp(x - max)), in every lane of the group; kUnroll and cap:
// lane_row_lse's (cuda_rows.cuh).
template <typename A, int kUnroll = 1, typename scalar_t, typename Capture = NoCapture>
__device__ RowNorm<A> group_row_norm(const scalar_t* xr, int64_t S, const RowGroup& g, bool active, A* scratch,
                                     const Capture& cap = Capture{}) {
  OnlineLse<A> r;
  if (active) lane_row_lse<A, scalar_t, kUnroll>(xr, S, g.lane, g.log_p, r, cap);
  group_merge(r, g.log_p, scratch);
  return row_norm_from(r.m, r.s);
}

template <typename A>
__device__ Group<A> group_at(const int64_t* index, const A* weight, int64_t K, int64_t t, int64_t S, int64_t topk) {
  return Group<A>{index + t * K, weight ? weight + t * K : nullptr, K, S, topk};
}

// ------------------------------------------------------------------------------------ label_map

// kCapture (pre softmax / log_softmax, the stage fits, stage_fits): the row pass also keeps the
// row's mapped logits in shared memory, one slot per source with entries (RowCapture, from the
// source map `map`: bits and rank), and the per-target pass reads them there through the entries'
// slots (source_slot, as the staged mapped CE forward reads its local sources): the same values,
// the same bits, and no gathers from the row after its pass (by then, at a 32k vocabulary, most of
// its sectors have left L2: ~76 % of 800 gathers per row would go back to DRAM). The launch passes
// stage_bytes() of dynamic shared memory. Without kCapture, `map` is unused.
template <Reduce R, typename scalar_t, bool kCapture>
__global__ void label_map_forward_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ index,
                             const acc_t<scalar_t>* __restrict__ weight, scalar_t* __restrict__ out,
                             acc_t<scalar_t>* __restrict__ stats, SourceMapView map, int64_t N, int64_t S,
                             int64_t T, int64_t K, int64_t topk, Pre pre, int log_p) {
  using A = acc_t<scalar_t>;
  __shared__ A scratch[2 * kRowBlock / 32];
  const RowGroup g(log_p);
  const bool active = g.n < N;
  const scalar_t* xr = x + (active ? g.n : 0) * S;
  const int64_t TK = T * K;
  extern __shared__ __align__(16) unsigned char stage_smem[];
  int64_t* local_src = reinterpret_cast<int64_t*>(stage_smem);                      // [TK]: entry slots
  A* staged = reinterpret_cast<A*>(local_src + TK) + (threadIdx.x >> log_p) * TK;  // [TK], this row's slots
  const int tk = static_cast<int>(TK);  // used with kCapture only (stage_fits: TK < 2^31)
  RowNorm<A> norm{0, 0};
  if (kCapture || map_needs_lse(pre)) {
    if constexpr (kCapture) {
      norm = group_row_norm<A, kRowUnroll>(xr, S, g, active, scratch, RowCapture<A>{map, staged});
    } else {
      norm = group_row_norm<A, kRowUnroll>(xr, S, g, active, scratch);
    }
    if (active && g.lane == 0) {
      stats[2 * g.n] = norm.max;
      stats[2 * g.n + 1] = norm.log_sum;
    }
  }
  if constexpr (kCapture) {
    // after the row pass, so that the row's loads go out first (local_src is read after the barrier)
#pragma unroll 4
    for (int e = static_cast<int>(threadIdx.x); e < tk; e += kRowBlock) local_src[e] = source_slot(index[e], S, map);
    __syncthreads();  // a row's slots are captured by all of its lanes, local_src by the block
  }
  if (!active) return;  // no barrier follows
  for (int64_t i_t = 0, n_t = g.count(0, T); i_t < n_t; ++i_t) {
    const int64_t t = g.at(0, i_t);
    A v;
    if constexpr (kCapture) {
      v = group_value<R, A>(static_cast<const A*>(staged),
                            Group<A>{local_src + t * K, weight ? weight + t * K : nullptr, K, TK, topk}, pre, norm)
              .out;
    } else {
      v = group_value<R, A>(xr, group_at(index, weight, K, t, S, topk), pre, norm).out;
    }
    out[g.n * T + t] = static_cast<scalar_t>(v);
  }
}

// One launch: a[n, t, k] = g_t * c_tk (* p_{s_k} for softmax) into the scratch `a`, gw[n, t, k] =
// g_t * d out_t / d w_k, D = sum of the row's a (the dense term's coefficient), then the gradient
// row grad = -D p (pre softmax / log_softmax) or 0, plus the scattered a. kStaged (the stage fits):
// the row's T*K mapped logits are first loaded into shared memory with all of a lane's gathers in
// flight together (stage_row), and the coefficient loop reads them there (before: per target a
// loop over K of dependent index -> gather round trips to DRAM, the row not yet read); the launch
// passes stage_bytes() of dynamic shared memory.
template <Reduce R, typename scalar_t, bool kStaged>
__global__ void label_map_backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                              const int64_t* __restrict__ index, const acc_t<scalar_t>* __restrict__ weight,
                              const acc_t<scalar_t>* __restrict__ stats, acc_t<scalar_t>* __restrict__ a,
                              acc_t<scalar_t>* __restrict__ gw, SourceMapView map, scalar_t* __restrict__ grad,
                              int64_t N, int64_t S, int64_t T, int64_t K, int64_t topk, Pre pre, int log_p) {
  using A = acc_t<scalar_t>;
  __shared__ A scratch[kRowBlock / 32];
  const RowGroup g(log_p);
  const bool active = g.n < N;
  const int64_t n = active ? g.n : 0, TK = T * K;
  const scalar_t* xr = x + n * S;
  const RowNorm<A> norm = stats && active ? RowNorm<A>{stats[2 * n], stats[2 * n + 1]} : RowNorm<A>{0, 0};
  extern __shared__ __align__(16) unsigned char stage_smem[];
  int64_t* local_src = reinterpret_cast<int64_t*>(stage_smem);                      // [TK], the block's
  A* staged = reinterpret_cast<A*>(local_src + TK) + (threadIdx.x >> log_p) * TK;  // [TK], this row's
  if constexpr (kStaged) {
    if (active) stage_row<A>(xr, index, S, static_cast<int>(TK), g.lane, g.log_p, staged);
#pragma unroll 4
    for (int e = static_cast<int>(threadIdx.x); e < static_cast<int>(TK); e += kRowBlock) {
      local_src[e] = local_source(index[e], S, e, static_cast<int>(K));
    }
    __syncthreads();  // local_src and a row's values are written by other lanes
  }
  A local_D = 0;
  if (active) {
    for (int64_t i_t = 0, n_t = g.count(0, T); i_t < n_t; ++i_t) {
      const int64_t t = g.at(0, i_t);
      Group<A> gr;
      const A* xs = staged + t * K;
      if constexpr (kStaged) {
        gr = Group<A>{local_src + t * K, weight ? weight + t * K : nullptr, K, K, topk};
      } else {
        gr = group_at(index, weight, K, t, S, topk);
      }
      const GroupValue<A> gv = kStaged ? group_value<R, A>(xs, gr, pre, norm) : group_value<R, A>(xr, gr, pre, norm);
      const A go = static_cast<A>(grad_out[n * T + t]);
      for (int64_t k = 0; k < K; ++k) {
        A ak = 0, gk = 0;
        if (gr.valid(k)) {
          const A key = kStaged ? xs[gr.src[k]] : static_cast<A>(xr[gr.src[k]]);
          const A v = pre_value(key, pre, norm);
          ak = go * value_coefficient<R>(gr, gv, k, key) * (pre == Pre::kSoftmax ? v : static_cast<A>(1));
          gk = go * value_weight_derivative<R>(gv, k, v, key);
        }
        a[n * TK + t * K + k] = ak;
        local_D += ak;
        if (gw) gw[n * TK + t * K + k] = gk;
      }
    }
  }
  const A D = group_reduce<false>(local_D, log_p, scratch);
  __syncthreads();  // the row's a[] (written by its other lanes) is read below
  if (!active) return;
  const GradRow<A, scalar_t> row{xr, grad + n * S, a + n * TK, map, norm, D, static_cast<A>(1), stats != nullptr};
  row.write(S, g.lane, g.log_p);
}

// The label_map backward of reduce sum / mean with pre softmax, given the forward's output `out`
// (bench/notes/label_map.md, session 9): one launch, no access to the row's mapped logits. The
// staged kernel above gathers them (T*K random 32 B sectors per row, at a 32k vocabulary read again
// by the row's stream long after L2 has dropped them) only to form a[e] = g_t c_k p_{s_k} and its sum
// D before the first gradient element is written; here D = sum_t g_t out_t (target_coefficients,
// cuda_grad_row.cuh), b[e] = g_t c_k is kept in shared memory (the launch passes
// (kRowBlock >> log_p) * T*K values of dynamic shared memory), and the writer multiplies each entry
// by the p_j it computes from the streamed logit (GradRow<..., true>): every entry adds the bits of
// the staged kernel's a[e]; D differs from its sum of the a[e] by rounding.
template <Reduce R, typename scalar_t>
__global__ void label_map_backward_from_out_kernel(const scalar_t* __restrict__ grad_out,
                                                   const scalar_t* __restrict__ x, const int64_t* __restrict__ index,
                                                   const acc_t<scalar_t>* __restrict__ weight,
                                                   const acc_t<scalar_t>* __restrict__ stats,
                                                   const scalar_t* __restrict__ out, SourceMapView map,
                                                   scalar_t* __restrict__ grad, int64_t N, int64_t S, int64_t T,
                                                   int64_t K, int log_p) {
  using A = acc_t<scalar_t>;
  __shared__ A scratch[kRowBlock / 32];
  const RowGroup g(log_p);
  const bool active = g.n < N;
  const int64_t n = active ? g.n : 0, TK = T * K;
  extern __shared__ __align__(16) unsigned char stage_smem[];
  A* b = reinterpret_cast<A*>(stage_smem) + (threadIdx.x >> log_p) * TK;  // [TK], this row's
  A local_D = 0;
  if (active) {
    for (int64_t i_t = 0, n_t = g.count(0, T); i_t < n_t; ++i_t) {
      const int64_t t = g.at(0, i_t);
      local_D += target_coefficients<R, A>(group_at(index, weight, K, t, S, 0), static_cast<A>(grad_out[n * T + t]),
                                           static_cast<A>(out[n * T + t]), b + t * K);
    }
  }
  const A D = group_reduce<false>(local_D, log_p, scratch);
  __syncthreads();  // the row's b[] (written by its other lanes) is read below
  if (!active) return;
  const RowNorm<A> norm{stats[2 * n], stats[2 * n + 1]};
  const GradRow<A, scalar_t, true, true> row{x + n * S, grad + n * S, b, map, norm, D, static_cast<A>(1), true};
  row.write(S, g.lane, g.log_p);
}

// ------------------------------------------------------------------------- mapped_cross_entropy

// Forward (kWeightPass false, scale == nullptr): loss[n], unit-gradient coefficients out[n, t, k]
// and dense[n] = (max, log_sum, D) when need_lse. Weight-gradient pass (kWeightPass): out[n, t, k] =
// scale[n] * d loss_n / d w_tk, with the row normaliser read from dense. Two instantiations, so that
// the forward carries no weight-derivative code (fewer live registers). L_scratch: [N, T], each
// entry read back by its own lane. kStaged (forward only): the row's T*K mapped logits are first
// loaded into shared memory, all lanes' gathers in flight together (stage_row, cuda_rows.cuh), and
// every later pass reads them there; the launch passes stage_bytes() of dynamic shared memory.
template <Reduce R, typename scalar_t, bool kWeightPass, bool kStaged>
__global__ void mapped_ce_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                     const int64_t* __restrict__ index, const acc_t<scalar_t>* __restrict__ weight,
                     const acc_t<scalar_t>* __restrict__ scale, acc_t<scalar_t>* __restrict__ dense,
                     acc_t<scalar_t>* __restrict__ loss, acc_t<scalar_t>* __restrict__ out,
                     acc_t<scalar_t>* __restrict__ L_scratch, int64_t N, int64_t S, int64_t T, int64_t K,
                     int64_t topk, Pre pre, bool need_lse, double eps_d, int64_t ignore_index, int log_p) {
  using A = acc_t<scalar_t>;
  __shared__ A scratch[2 * kRowBlock / 32];
  const RowGroup g(log_p);
  const bool in_range = g.n < N;
  const int64_t n = in_range ? g.n : 0;
  const int64_t y = in_range ? target[n] : ignore_index;
  const bool active = in_range && y != ignore_index;  // lanes of other rows only join the reductions
  constexpr bool weight_pass = kWeightPass;
  const A eps = static_cast<A>(eps_d);
  const int64_t TK = T * K;
  const scalar_t* xr = x + n * S;
  static_assert(!(kStaged && kWeightPass), "the weight-gradient pass reads the logits directly");
  extern __shared__ __align__(16) unsigned char stage_smem[];
  int64_t* local_src = reinterpret_cast<int64_t*>(stage_smem);                      // [TK], the block's
  A* staged = reinterpret_cast<A*>(local_src + TK) + (threadIdx.x >> log_p) * TK;  // [TK], this row's
  A stage_max = -static_cast<A>(INFINITY);
  if constexpr (kStaged) {
    for (int e = static_cast<int>(threadIdx.x); e < static_cast<int>(TK); e += kRowBlock) {
      local_src[e] = local_source(index[e], S, e, static_cast<int>(K));
    }
    if (active) stage_max = stage_row<A>(xr, index, S, static_cast<int>(TK), g.lane, g.log_p, staged);
    __syncthreads();  // local_src is written by the whole block
  }
  // Target t's logits and group: the staged copy (local sources, row length K) or the row itself.
  auto row_of = [&](int64_t t) {
    if constexpr (kStaged) {
      return static_cast<const A*>(staged + t * K);
    } else {
      return xr;
    }
  };
  auto group_of = [&](int64_t t) {
    if constexpr (kStaged) {
      return Group<A>{local_src + t * K, weight ? weight + t * K : nullptr, K, K, topk};
    } else {
      return group_at(index, weight, K, t, S, topk);
    }
  };
  if (in_range && !active) {
    for (int64_t i_e = 0, n_e = g.count(0, TK); i_e < n_e; ++i_e) {
      const int64_t e = g.at(0, i_e);
      out[n * TK + e] = 0;
    }
    if (!weight_pass && g.lane == 0) {
      loss[n] = 0;
      if (need_lse) dense[3 * n] = dense[3 * n + 1] = dense[3 * n + 2] = 0;
    }
  }
  RowNorm<A> norm{0, 0};
  if (need_lse) {
    if (weight_pass) {
      if (active) norm = RowNorm<A>{dense[3 * n], dense[3 * n + 1]};
    } else {
      norm = group_row_norm<A>(xr, S, g, active, scratch);
    }
  }
  A shift = 0;
  if (pre == Pre::kSoftmax) {
    A m = stage_max;
    if (!kStaged && active) {
      for (int64_t i_e = 0, n_e = g.count(0, TK); i_e < n_e; ++i_e) {
        const int64_t e = g.at(0, i_e);
        if (index[e] >= 0 && index[e] < S) {
          const A v = static_cast<A>(xr[index[e]]);
          if (v > m && v < static_cast<A>(INFINITY)) m = v;
        }
      }
    }
    m = group_reduce<true>(m, log_p, scratch);
    shift = m == -static_cast<A>(INFINITY) ? static_cast<A>(0) : m;
  }
  A* L = L_scratch + n * T;
  A local_max = -static_cast<A>(INFINITY), local_sum = 0, local_Ly = 0;
  if (active) {
    for (int64_t i_t = 0, n_t = g.count(0, T); i_t < n_t; ++i_t) {
      const int64_t t = g.at(0, i_t);
      const Group<A> gr = group_of(t);
      const A Lt = pre == Pre::kSoftmax ? group_log_prob<R, A>(row_of(t), gr, shift).L
                                        : group_value<R, A>(row_of(t), gr, pre, norm).out;
      L[t] = Lt;
      local_max = nan_skip_max(local_max, Lt);
      local_sum += Lt;
      if (t == y) local_Ly = Lt;
    }
  }
  const A max_L = group_reduce<true>(local_max, log_p, scratch);
  const A sum_L = group_reduce<false>(local_sum, log_p, scratch);
  const A L_y = group_reduce<false>(local_Ly, log_p, scratch);  // one lane holds L_y, the others 0
  A local_exp = 0;
  if (active && max_L != -static_cast<A>(INFINITY) && max_L != static_cast<A>(INFINITY)) {
    for (int64_t i_t = 0, n_t = g.count(0, T); i_t < n_t; ++i_t) {
      const int64_t t = g.at(0, i_t);
      local_exp += exp_f(L[t] - max_L);
    }
  }
  const A lse_L = lse_from(max_L, group_reduce<false>(local_exp, log_p, scratch));
  if (active && !weight_pass && g.lane == 0) {  // written here: fewer values live across the loop below
    loss[n] = ce_loss<A>(L_y, sum_L, lse_L, T, eps);
    if (need_lse) {
      dense[3 * n] = norm.max;
      dense[3 * n + 1] = norm.log_sum;
    }
  }
  const A row_scale = weight_pass ? (active ? scale[n] : static_cast<A>(0)) : static_cast<A>(1);
  A* out_row = out + n * TK;
  A local_D = 0;
  if (active) {
    for (int64_t i_t = 0, n_t = g.count(0, T); i_t < n_t; ++i_t) {
      const int64_t t = g.at(0, i_t);
      const Group<A> gr = group_of(t);
      const auto xt = row_of(t);
      const A dL = ce_logit_grad<A>(L[t], lse_L, t == y, T, eps, row_scale);
      if (pre == Pre::kSoftmax) {
        const GroupLog<A> gl = group_log_prob<R, A>(xt, gr, shift);
        for (int64_t k = 0; k < K; ++k) {
          A v = 0;
          if (gr.valid(k)) {
            v = weight_pass ? dL * log_group_weight_derivative<R, A>(xt, gr, gl, k)
                            : dL * log_group_responsibility<R, A>(xt, gr, gl, k);
          }
          out_row[t * K + k] = v;
        }
      } else {
        const GroupValue<A> gv = group_value<R, A>(xt, gr, pre, norm);
        for (int64_t k = 0; k < K; ++k) {
          A v = 0;
          if (gr.valid(k)) {
            const A key = static_cast<A>(xt[gr.src[k]]);
            if (weight_pass) {
              v = dL * value_weight_derivative<R>(gv, k, pre_value(key, pre, norm), key);
            } else {
              v = dL * value_coefficient<R>(gr, gv, k, key);
              local_D += v;
            }
          }
          out_row[t * K + k] = v;
        }
      }
    }
  }
  const A D = group_reduce<false>(local_D, log_p, scratch);
  if (active && !weight_pass && need_lse && g.lane == 0) {
    dense[3 * n + 2] = pre == Pre::kSoftmax ? static_cast<A>(0) : D;
  }
}

// grad[n] = -grad_loss[n] * D_n softmax(x[n]) (kDense: dense = (max, log_sum, D) rows) plus
// grad_loss[n] times the scattered unit-gradient coefficients. Without the dense term (pre softmax /
// none: the common case) the row loop only stores, so it has its own instantiation.
template <typename scalar_t, bool kDense>
__global__ void mapped_ce_grad_kernel(const scalar_t* __restrict__ x, const acc_t<scalar_t>* __restrict__ unit_grad,
                          const acc_t<scalar_t>* __restrict__ grad_loss, const acc_t<scalar_t>* __restrict__ dense,
                          SourceMapView map, scalar_t* __restrict__ grad, int64_t N, int64_t S, int64_t TK,
                          int log_p) {
  using A = acc_t<scalar_t>;
  const RowGroup g(log_p);
  if (g.n >= N) return;  // no barrier in this kernel
  const int64_t n = g.n;
  const A c = grad_loss[n];
  const RowNorm<A> norm = dense ? RowNorm<A>{dense[3 * n], dense[3 * n + 1]} : RowNorm<A>{0, 0};
  const A D = dense ? c * dense[3 * n + 2] : static_cast<A>(0);
  const GradRow<A, scalar_t, kDense> row{x + n * S, grad + n * S, unit_grad + n * TK, map, norm, D, c, kDense};
  row.write(S, g.lane, g.log_p);
}

// ------------------------------------------------------------------------- the source map

// bits[w] bit i = (ptr[32 w + i + 1] > ptr[32 w + i]), for the W words (the last ones zero).
__global__ void source_bits_kernel(const int64_t* __restrict__ ptr, int32_t* __restrict__ bits, int64_t S,
                                   int64_t W) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= W) return;
  uint32_t b = 0;
  for (int i = 0; i < 32; ++i) {
    const int64_t s = 32 * w + i;
    if (s < S && ptr[s + 1] > ptr[s]) b |= 1u << i;
  }
  bits[w] = static_cast<int32_t>(b);
}

// The inverse map of an index [T, K] over S sources, built on the device by a stable sort of the
// flat index (equal sources keep ascending e = t * K + k) and a binary search per source, and
// cached per index tensor: the entry keeps the tensor alive (so its memory is not reused by another
// index) and is valid while its version counter is unchanged (in-place writes bump it). A use on a
// stream other than the building one waits on the build's event and marks the tensors as used there.
struct SourceMap {
  Tensor index;  // the key, kept alive
  int64_t version, S;
  Tensor ptr, ent, bits, rank;  // int32 [S + 1], int32 [T * K], int32 [ceil(S / 32) + 1] (bits and rank)
  cudaStream_t stream;
  cudaEvent_t ready;
  SourceMapView view() const {
    return SourceMapView{ptr.const_data_ptr<int32_t>(), ent.const_data_ptr<int32_t>(),
                         reinterpret_cast<const uint32_t*>(bits.const_data_ptr<int32_t>()),
                         rank.const_data_ptr<int32_t>()};
  }
};

// `cached`: the entry goes into the cache (its version is read and its ready event recorded).
SourceMap build_source_map(const Tensor& index, int64_t S, bool cached) {
  TORCH_CHECK(index.numel() < (int64_t{1} << 31) && S < (int64_t{1} << 31) - 1,
              "label_map (CUDA): index entries and S must fit int32, got ", index.numel(), " and ", S);
  const Tensor flat = index.reshape({-1});
  auto sorted = at::sort(flat, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const Tensor sorted_src = std::get<0>(sorted).contiguous();
  const Tensor ptr64 = at::searchsorted(sorted_src, at::arange(S + 1, flat.options()));
  const int64_t W = (S + 31) / 32 + 1;
  Tensor bits = at::empty({W}, flat.options().dtype(at::kInt));
  auto stream = c10::cuda::getCurrentCUDAStream();
  source_bits_kernel<<<static_cast<unsigned>((W + 127) / 128), 128, 0, stream>>>(
      ptr64.const_data_ptr<int64_t>(), bits.mutable_data_ptr<int32_t>(), S, W);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // rank[w] = sources with entries below 32 w: below[s] = sources with entries among [0, s).
  const Tensor has = at::gt(ptr64.slice(0, 1, S + 1), ptr64.slice(0, 0, S)).to(at::kInt);
  const Tensor below = at::cat({at::zeros({1}, has.options()), at::cumsum(has, 0, at::kInt)});
  const Tensor rank = below.index_select(0, at::clamp_max(at::arange(W, flat.options()) * 32, S)).contiguous();
  SourceMap m{index, cached ? index._version() : 0, S, ptr64.to(at::kInt), std::get<1>(sorted).to(at::kInt), bits,
              rank, stream.stream(), nullptr};
  if (cached) {
    C10_CUDA_CHECK(cudaEventCreateWithFlags(&m.ready, cudaEventDisableTiming));
    C10_CUDA_CHECK(cudaEventRecord(m.ready, stream.stream()));
  }
  return m;
}

// The map of `index` (kept alive by the returned value until the caller's launches are enqueued).
// Not cached for inference tensors (no version counter) or while the stream is being captured into
// a CUDA graph (the map's memory would belong to the graph's pool): built per call then.
SourceMap source_map(const Tensor& index, int64_t S) {
  constexpr size_t kEntries = 8;
  static std::mutex mutex;
  // Most recently used last. Never destroyed: its CUDA tensors must not outlive the allocator at exit.
  static std::vector<SourceMap>& cache = *new std::vector<SourceMap>();
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream.stream(), &capture));
  if (index.is_inference() || capture != cudaStreamCaptureStatusNone) return build_source_map(index, S, false);
  const std::lock_guard<std::mutex> lock(mutex);
  for (size_t i = 0; i < cache.size(); ++i) {
    SourceMap& m = cache[i];
    if (m.index.data_ptr() == index.data_ptr() && m.index.sizes() == index.sizes() && m.S == S &&
        m.index.device() == index.device() && m.version == index._version()) {
      if (m.stream != stream.stream()) {
        C10_CUDA_CHECK(cudaStreamWaitEvent(stream.stream(), m.ready, 0));
        for (const Tensor* t : {&m.ptr, &m.ent, &m.bits, &m.rank}) {
          c10::cuda::CUDACachingAllocator::recordStream(t->storage().data_ptr(), stream);
        }
      }
      std::rotate(cache.begin() + i, cache.begin() + i + 1, cache.end());
      return cache.back();
    }
  }
  if (cache.size() == kEntries) {
    C10_CUDA_CHECK(cudaEventDestroy(cache.front().ready));
    cache.erase(cache.begin());
  }
  cache.push_back(build_source_map(index, S, true));
  return cache.back();
}

// ------------------------------------------------------------------------------------------- ops

// Blocks for N rows of 2^log_p lanes each.
unsigned row_grid(int64_t N, int log_p) {
  const int64_t rows = kRowBlock >> log_p;
  return static_cast<unsigned>((N + rows - 1) / rows);
}

Tensor empty_acc(const Tensor& logits, at::IntArrayRef size) {
  return at::empty(size, logits.options().dtype(acc_scalar_type(logits.scalar_type())));
}

template <typename scalar_t>
const acc_t<scalar_t>* weight_ptr(const std::optional<Tensor>& weight) {
  return weight.has_value() ? weight->const_data_ptr<acc_t<scalar_t>>() : nullptr;
}

std::tuple<Tensor, Tensor> label_map_forward_cuda(const Tensor& logits, const Tensor& index,
                                                  const std::optional<Tensor>& weight, c10::string_view reduce,
                                                  c10::string_view pre, int64_t topk) {
  const LabelMapArgs p = make_label_map_args("label_map", logits, index, weight, reduce, pre, topk);
  const c10::cuda::CUDAGuard guard(logits.device());
  Tensor out = at::empty({p.N, p.T}, logits.options());
  Tensor stats = empty_acc(logits, row_lse_shape(p));
  if (p.N == 0) return {out, stats};
  const int log_p = row_threads_log2(p.S, p.T, map_needs_lse(p.pre));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_forward_cuda", [&] {
    using A = acc_t<scalar_t>;
    const bool capture = map_needs_lse(p.pre) && stage_fits<A>(p.T * p.K, log_p);
    const SourceMap source = capture ? source_map(index, p.S) : SourceMap{};
    const SourceMapView map = capture ? source.view() : SourceMapView{nullptr, nullptr, nullptr};
    const size_t smem = capture ? static_cast<size_t>(stage_bytes<A>(p.T * p.K, log_p)) : 0;
    auto launch = [&](auto kernel) {
      kernel<<<row_grid(p.N, log_p), kRowBlock, smem, c10::cuda::getCurrentCUDAStream()>>>(
          logits.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(), weight_ptr<scalar_t>(weight),
          out.mutable_data_ptr<scalar_t>(), stats.numel() ? stats.mutable_data_ptr<A>() : nullptr, map, p.N, p.S,
          p.T, p.K, p.topk, p.pre, log_p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch(p.reduce, [&](auto R) {
      dispatch_bool(capture, [&](auto C) {
        launch(label_map_forward_kernel<decltype(R)::value, scalar_t, decltype(C)::value>);
      });
    });
  });
  return {out, stats};
}

std::tuple<Tensor, Tensor> label_map_backward_cuda(const Tensor& grad_out_in, const Tensor& logits,
                                                   const Tensor& index, const std::optional<Tensor>& weight,
                                                   const Tensor& row_lse, c10::string_view reduce,
                                                   c10::string_view pre, bool need_weight_grad, int64_t topk,
                                                   const std::optional<Tensor>& forward_out) {
  const LabelMapArgs p =
      make_label_map_backward_args(grad_out_in, logits, index, weight, row_lse, reduce, pre, topk, forward_out);
  const c10::cuda::CUDAGuard guard(logits.device());
  const Tensor grad_out = grad_out_in.contiguous();
  const bool need_w = need_weight_grad && p.weighted;
  const bool need_lse = map_needs_lse(p.pre);
  Tensor grad = at::empty_like(logits);
  Tensor gw_rows = empty_acc(logits, weight_grad_shape(p, need_w, p.N));
  if (p.N > 0) {
    const SourceMap source = source_map(index, p.S);
    const SourceMapView map = source.view();
    const int log_p = row_threads_log2(p.S, p.T, /*row_pass=*/true);
    // Reduce sum / mean with pre softmax and the forward's output at hand: no mapped logits needed
    // (label_map_backward_from_out_kernel); float32 / float64 only, where out carries the
    // accumulation dtype's bits (a 16-bit out would round D to 8-11 bits).
    const int64_t b_bytes = (kRowBlock >> log_p) * p.T * p.K * static_cast<int64_t>(at::elementSize(
                                acc_scalar_type(logits.scalar_type())));
    const bool from_out = forward_out.has_value() && forward_out->defined() && p.pre == Pre::kSoftmax &&
                          (p.reduce == Reduce::kSum || p.reduce == Reduce::kMean) && !need_w &&
                          acc_scalar_type(logits.scalar_type()) == logits.scalar_type() && p.T * p.K > 0 &&
                          b_bytes <= kStageMaxBytes;
    if (from_out) {
      AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "label_map_backward_from_out_cuda", [&] {
        auto launch = [&](auto kernel) {
          kernel<<<row_grid(p.N, log_p), kRowBlock, static_cast<size_t>(b_bytes), c10::cuda::getCurrentCUDAStream()>>>(
              grad_out.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
              weight_ptr<scalar_t>(weight), row_lse.const_data_ptr<scalar_t>(), forward_out->const_data_ptr<scalar_t>(),
              map, grad.mutable_data_ptr<scalar_t>(), p.N, p.S, p.T, p.K, log_p);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        };
        if (p.reduce == Reduce::kSum) {
          launch(label_map_backward_from_out_kernel<Reduce::kSum, scalar_t>);
        } else {
          launch(label_map_backward_from_out_kernel<Reduce::kMean, scalar_t>);
        }
      });
      return {grad, gw_rows};
    }
    Tensor a = empty_acc(logits, {p.N, p.T * p.K});
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_backward_cuda", [&] {
      using A = acc_t<scalar_t>;
      const bool staged = stage_fits<A>(p.T * p.K, log_p);
      const size_t smem = staged ? static_cast<size_t>(stage_bytes<A>(p.T * p.K, log_p)) : 0;
      auto launch = [&](auto kernel) {
        kernel<<<row_grid(p.N, log_p), kRowBlock, smem, c10::cuda::getCurrentCUDAStream()>>>(
            grad_out.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
            weight_ptr<scalar_t>(weight), need_lse ? row_lse.const_data_ptr<A>() : nullptr, a.mutable_data_ptr<A>(),
            need_w ? gw_rows.mutable_data_ptr<A>() : nullptr, map, grad.mutable_data_ptr<scalar_t>(), p.N, p.S, p.T,
            p.K, p.topk, p.pre, log_p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      dispatch(p.reduce, [&](auto R) {
        dispatch_bool(staged, [&](auto S) {
          launch(label_map_backward_kernel<decltype(R)::value, scalar_t, decltype(S)::value>);
        });
      });
    });
  }
  return {grad, need_w ? gw_rows.sum(0) : gw_rows};
}

void launch_mapped_ce(const LabelMapArgs& p, const Tensor& logits, const Tensor& target, const Tensor& index,
                      const std::optional<Tensor>& weight, const Tensor* scale, Tensor& dense, Tensor* loss,
                      Tensor& out, double label_smoothing, int64_t ignore_index) {
  if (p.N == 0) return;
  Tensor L_scratch = empty_acc(logits, {p.N, p.T});
  const bool need_lse = ce_has_dense(p);
  const int log_p = row_threads_log2(p.S, p.T, /*row_pass=*/need_lse && scale == nullptr);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mapped_ce_cuda", [&] {
    using A = acc_t<scalar_t>;
    const bool staged = scale == nullptr && stage_fits<A>(p.T * p.K, log_p);
    const size_t smem = staged ? static_cast<size_t>(stage_bytes<A>(p.T * p.K, log_p)) : 0;
    auto launch = [&](auto kernel) {
      kernel<<<row_grid(p.N, log_p), kRowBlock, smem, c10::cuda::getCurrentCUDAStream()>>>(
          logits.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(),
          weight_ptr<scalar_t>(weight), scale ? scale->const_data_ptr<A>() : nullptr,
          need_lse ? dense.mutable_data_ptr<A>() : nullptr, loss ? loss->mutable_data_ptr<A>() : nullptr,
          out.mutable_data_ptr<A>(), L_scratch.mutable_data_ptr<A>(), p.N, p.S, p.T, p.K, p.topk, p.pre, need_lse,
          label_smoothing, ignore_index, log_p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch(p.reduce, [&](auto R) {
      constexpr Reduce r = decltype(R)::value;
      if (scale == nullptr && staged) {
        launch(mapped_ce_kernel<r, scalar_t, false, true>);
      } else if (scale == nullptr) {
        launch(mapped_ce_kernel<r, scalar_t, false, false>);
      } else if constexpr (Reducer<r>::kSelectsTop) {  // topk_mean takes no weight (args.h): no weight pass
        TORCH_CHECK(false, "mapped_cross_entropy: reduce='topk_mean' has no weight gradient");
      } else {
        launch(mapped_ce_kernel<r, scalar_t, true, false>);
      }
    });
  });
}

std::tuple<Tensor, Tensor, Tensor> mapped_cross_entropy_forward_cuda(const Tensor& logits, const Tensor& target,
                                                                     const Tensor& index,
                                                                     const std::optional<Tensor>& weight,
                                                                     c10::string_view reduce, c10::string_view pre,
                                                                     double label_smoothing, int64_t ignore_index,
                                                                     int64_t topk) {
  const LabelMapArgs p = make_mapped_ce_args(logits, target, index, weight, reduce, pre, ignore_index, topk);
  const c10::cuda::CUDAGuard guard(logits.device());
  Tensor loss = empty_acc(logits, {p.N});
  Tensor unit_grad = empty_acc(logits, {p.N, p.T, p.K});
  Tensor dense = empty_acc(logits, dense_shape(p));
  launch_mapped_ce(p, logits, target, index, weight, nullptr, dense, &loss, unit_grad, label_smoothing, ignore_index);
  return {loss, unit_grad, dense};
}

std::tuple<Tensor, Tensor> mapped_cross_entropy_backward_cuda(const Tensor& grad_loss_in, const Tensor& logits,
                                                              const Tensor& target, const Tensor& index,
                                                              const std::optional<Tensor>& weight,
                                                              const Tensor& unit_grad_in, const Tensor& dense_in,
                                                              c10::string_view reduce, c10::string_view pre,
                                                              double label_smoothing, int64_t ignore_index,
                                                              bool need_weight_grad, int64_t topk) {
  const LabelMapArgs p = make_mapped_ce_backward_args(grad_loss_in, logits, target, index, weight, unit_grad_in,
                                                      dense_in, reduce, pre, ignore_index, topk);
  const bool has_dense = ce_has_dense(p);
  const c10::cuda::CUDAGuard guard(logits.device());
  const Tensor grad_loss = grad_loss_in.contiguous(), unit_grad = unit_grad_in.contiguous();
  Tensor dense = dense_in.contiguous();
  Tensor grad = at::empty_like(logits);
  if (p.N > 0) {
    const SourceMap source = source_map(index, p.S);
    const SourceMapView map = source.view();
    const int log_p = row_threads_log2(p.S, 1, /*row_pass=*/true);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mapped_ce_grad_cuda", [&] {
      using A = acc_t<scalar_t>;
      auto launch = [&](auto kernel) {
        kernel<<<row_grid(p.N, log_p), kRowBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
            logits.const_data_ptr<scalar_t>(), unit_grad.const_data_ptr<A>(), grad_loss.const_data_ptr<A>(),
            has_dense ? dense.const_data_ptr<A>() : nullptr, map, grad.mutable_data_ptr<scalar_t>(), p.N, p.S,
            p.T * p.K, log_p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      dispatch_bool(has_dense, [&](auto D) { launch(mapped_ce_grad_kernel<scalar_t, decltype(D)::value>); });
    });
  }
  const bool need_w = need_weight_grad && p.weighted;
  Tensor gw_rows = empty_acc(logits, weight_grad_shape(p, need_w, p.N));
  if (need_w) {
    launch_mapped_ce(p, logits, target, index, weight, &grad_loss, dense, nullptr, gw_rows, label_smoothing,
                     ignore_index);
  }
  return {grad, need_w ? gw_rows.sum(0) : gw_rows};
}

}  // namespace
}  // namespace label_map

TORCH_LIBRARY_IMPL(reprogram_ext, CUDA, m) {
  m.impl("label_map_forward", &label_map::label_map_forward_cuda);
  m.impl("label_map_backward", &label_map::label_map_backward_cuda);
  m.impl("mapped_cross_entropy_forward", &label_map::mapped_cross_entropy_forward_cuda);
  m.impl("mapped_cross_entropy_backward", &label_map::mapped_cross_entropy_backward_cuda);
}

}  // namespace reprogram_ext
