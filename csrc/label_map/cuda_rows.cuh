// Row mechanics of the label_map CUDA kernels that do not depend on the GPU: how many threads
// share a row, where a row's 16-byte aligned part starts, the online (max, sum-exp) of a row and
// the source bit mask of the backward. Every function is __host__ __device__, so a host unit test
// executes the same code the kernels run (the kernels only add the shuffles and the loads).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "common/exp_f.h"

namespace reprogram_ext {
namespace label_map {

// Threads per block of every row kernel; a block holds kRowBlock / P rows of P threads each.
constexpr int kRowBlock = 128;

// log2 of the threads per row P (a power of two <= kRowBlock): at least the next power of two of
// T (every target has a lane; targets spread across the row's lanes), and, when the kernel streams
// the whole row (row_pass), the largest power of two with >= 16 elements per thread, so that
// a 32k row gets a block and a 1k row a warp. A function of the shape only: the reduction order,
// hence the bits, are the same run to run.
C10_HOST_DEVICE inline int row_threads_log2(int64_t S, int64_t T, bool row_pass) {
  int lp = 0;
  while ((int64_t{1} << lp) < T && (1 << lp) < kRowBlock) ++lp;
  if (row_pass) {
    int ls = 0;
    while ((2 << ls) <= kRowBlock && (int64_t{16} << (ls + 1)) <= S) ++ls;
    lp = ls > lp ? ls : lp;
  }
  return lp;
}

// How many of begin + lane, begin + lane + P, ... (P = 2^log_p) lie below end: the trip count of a
// lane's strided loop, computed with a shift (a `j += P` loop with a run-time P makes the compiler
// divide by P in 64 bits, a subroutine call, to get the same count).
C10_HOST_DEVICE inline int64_t lane_count(int64_t begin, int64_t end, int lane, int log_p) {
  const int64_t first = begin + lane;
  return first < end ? ((end - first - 1) >> log_p) + 1 : 0;
}

// Elements of a row before its first 16-byte aligned element (p is element aligned), at most S.
template <typename scalar_t>
C10_HOST_DEVICE inline int64_t aligned_head(const void* p, int64_t S) {
  constexpr int64_t V = 16 / sizeof(scalar_t);
  const int64_t e = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) / sizeof(scalar_t));
  const int64_t h = (V - (e & (V - 1))) & (V - 1);
  return h < S ? h : S;
}

// max that skips NaN (fmax: one FMNMX on the device) and gives the same bits whichever operand
// comes first (butterfly shuffles need both lanes of a pair to agree).
template <typename A>
C10_HOST_DEVICE inline A nan_skip_max(A a, A b) {
#ifdef __CUDA_ARCH__
  return fmax(a, b);
#else
  return std::fmax(a, b);
#endif
}

// The online log-sum-exp of a row: m = max of the values seen, s = sum_j exp(x_j - m).
// add(v, n) takes a block of n values (one 128-bit load): its max first, one rescale of s when it
// rises, then n exps; merge() joins two partial states: s = s1 exp(m1 - m) + s2 exp(m2 - m).
// m = -inf (nothing finite yet) keeps s = 0 instead of exp(-inf - -inf) = NaN; a +inf or NaN
// value makes s NaN, as the two-pass max / sum-exp did.
template <typename A>
struct OnlineLse {
  A m = -static_cast<A>(INFINITY), s = 0;

  template <typename T>
  C10_HOST_DEVICE inline void add(const T* v, int n) {
    A mv = m;
    for (int i = 0; i < n; ++i) mv = nan_skip_max(mv, static_cast<A>(v[i]));
    if (mv > m) {
      s *= exp_f(m - mv);
      m = mv;
    }
    const A ref = m == -static_cast<A>(INFINITY) ? static_cast<A>(0) : m;
    for (int i = 0; i < n; ++i) s += exp_f(static_cast<A>(v[i]) - ref);
  }

  C10_HOST_DEVICE inline void merge(A m2, A s2) {
    const A mm = nan_skip_max(m, m2);
    const A ref = mm == -static_cast<A>(INFINITY) ? static_cast<A>(0) : mm;
    s = s * exp_f(m - ref) + s2 * exp_f(m2 - ref);
    m = mm;
  }
};

// Loop pragmas for the device compile only (the host compile runs the same loops plainly).
#ifdef __CUDA_ARCH__
#define RX_LM_UNROLL _Pragma("unroll")
#define RX_LM_NO_UNROLL _Pragma("unroll 1")
#else
#define RX_LM_UNROLL
#define RX_LM_NO_UNROLL
#endif

// The index of the lowest set bit of m != 0.
C10_HOST_DEVICE inline int lowest_bit(uint32_t m) {
#ifdef __CUDA_ARCH__
  return __ffs(m) - 1;
#else
  return __builtin_ctz(m);
#endif
}

// 16 bytes of a row: 4 floats, 8 halves / bfloat16, 2 doubles.
template <typename scalar_t>
struct alignas(16) Vec16 {
  static constexpr int V = 16 / sizeof(scalar_t);
  scalar_t v[V];
};

// Bits [j0, j0 + V) of the source mask (bit s set: source s has index entries); `bits` has one
// spare zero word past the last, so that a V-element chunk may straddle two words: both words are
// read (L1 hits) and joined by one 64-bit (funnel) shift, no branch. V <= 8.
// (I: int64_t, or int32_t for the gradient writer's row positions.)
template <typename I>
C10_HOST_DEVICE inline uint32_t chunk_mask(const uint32_t* bits, I j0, int V) {
  const uint32_t* w = bits + (j0 >> 5);
  const uint64_t two = (static_cast<uint64_t>(w[1]) << 32) | w[0];
  return static_cast<uint32_t>(two >> (j0 & 31)) & ((1u << V) - 1u);
}

// The source -> index entries map (device pointers in the kernels): entries ent[ptr[s], ptr[s+1]) of source s in
// ascending e = t * K + k; bit s of `bits` set when there is any; rank[w] = the sources with entries
// below 32 w (the label_map forward's capture slots; the backward does not use it, nullptr there).
struct SourceMapView {
  const int32_t* ptr;
  const int32_t* ent;
  const uint32_t* bits;
  const int32_t* rank = nullptr;
};

C10_HOST_DEVICE inline int popcount32(uint32_t m) {
#ifdef __CUDA_ARCH__
  return __popc(m);
#else
  return __builtin_popcount(m);
#endif
}

// The slot of source s among the sources with entries, in ascending order (its rank), or -1 when s
// is outside [0, S) or has no entry.
C10_HOST_DEVICE inline int64_t source_slot(int64_t s, int64_t S, const SourceMapView& map) {
  if (s < 0 || s >= S) return -1;
  const uint32_t w = map.bits[s >> 5];
  const int off = static_cast<int>(s & 31);
  if (((w >> off) & 1u) == 0) return -1;
  return map.rank[s >> 5] + popcount32(w & ((1u << off) - 1u));
}

// What a row pass does with each block of values it loads, besides the log-sum-exp: nothing...
struct NoCapture {
  template <int N, typename T>
  C10_HOST_DEVICE inline void take(int64_t, const T*) const {}
};

// ... or (label_map forward, bench/notes/label_map.md 2026-12-01 session 7) keep the mapped ones:
// values[source_slot(j)] = x_j for every source j with index entries in the block [j0, j0 + N), so
// that the per-target pass reads the mapped logits from shared memory (entry e at
// values[source_slot(index[e])]) instead of gathering them from the row after the pass, when at a
// 32k vocabulary most of the row's sectors have left L2. Branch-free: the block's N mask bits give
// N predicated stores, slot = (sources with entries below j0) + popcount of the mask bits below i,
// so that a warp whose lanes hold different numbers of mapped sources does not diverge (at 32k,
// 96 % of the warp's chunks have a mapped source in some lane). Each slot has one source, hence
// one writer; slots are < the number of sources with entries <= T*K.
template <typename A>
struct RowCapture {
  SourceMapView map;
  A* values;  // the row's slots, [T * K] at most

  template <int N, typename T>
  C10_HOST_DEVICE inline void take(int64_t j0, const T* v) const {
    const uint32_t* w = map.bits + (j0 >> 5);
    const int off = static_cast<int>(j0 & 31);
    const uint64_t two = (static_cast<uint64_t>(w[1]) << 32) | w[0];
    const uint32_t m = static_cast<uint32_t>(two >> off) & ((1u << N) - 1u);
    const int base = map.rank[j0 >> 5] + popcount32(w[0] & ((1u << off) - 1u));
    RX_LM_UNROLL
    for (int i = 0; i < N; ++i) {
      if ((m >> i) & 1u) values[base + popcount32(m & ((1u << i) - 1u))] = static_cast<A>(v[i]);
    }
  }
};

// The label_map forward's row pass loads kRowUnroll 16-byte chunks per step, all issued before the
// first is used: 64 B in flight per lane, so that the last partial wave of rows (at 32k x 2048
// rows about half a wave) still keeps enough bytes in flight to run at the copy rate.
constexpr int kRowUnroll = 4;

// Lane `lane` (of 2^log_p) of the online log-sum-exp of row xr[0, S): its elements of the scalar
// head, its 16-byte chunks of the aligned body (one 128-bit load each; kUnroll loads per step, then
// their adds in the same order, so the bits do not depend on kUnroll), its elements of the tail.
// cap.take<n>(j0, v) sees every block of values [j0, j0 + n) the lane loads.
template <typename A, typename scalar_t, int kUnroll = 1, typename Capture = NoCapture>
C10_HOST_DEVICE inline void lane_row_lse(const scalar_t* __restrict__ xr, int64_t S, int lane, int log_p,
                                         OnlineLse<A>& r, const Capture& cap = Capture{}) {
  constexpr int V = Vec16<scalar_t>::V;
  const int64_t h = aligned_head<scalar_t>(xr, S), nv = (S - h) / V;
  for (int64_t i = 0, n = lane_count(0, h, lane, log_p); i < n; ++i) {
    const int64_t j = lane + (i << log_p);
    r.add(xr + j, 1);
    cap.template take<1>(j, xr + j);
  }
  // The lane's chunks lane, lane + P, ...: a running pointer p and element index j0 (so that a step
  // adds constant offsets instead of recomputing 64-bit shifts per chunk).
  const int64_t P = int64_t{1} << log_p;
  const Vec16<scalar_t>* p = reinterpret_cast<const Vec16<scalar_t>*>(xr + h) + lane;
  int64_t j0 = h + static_cast<int64_t>(lane) * V;
  const int64_t n = lane_count(0, nv, lane, log_p);
  int64_t i = 0;
  for (; i + kUnroll <= n; i += kUnroll, p += kUnroll * P, j0 += kUnroll * P * V) {
    Vec16<scalar_t> v[kUnroll];
    RX_LM_UNROLL
    for (int u = 0; u < kUnroll; ++u) v[u] = p[u * P];
    RX_LM_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      r.add(v[u].v, V);
      cap.template take<V>(j0 + u * P * V, v[u].v);
    }
  }
  if constexpr (kUnroll > 1) {
    for (; i < n; ++i, p += P, j0 += P * V) {
      const Vec16<scalar_t> v = *p;
      r.add(v.v, V);
      cap.template take<V>(j0, v.v);
    }
  }
  const int64_t tail = h + nv * V;
  for (int64_t i_t = 0, n_t = lane_count(tail, S, lane, log_p); i_t < n_t; ++i_t) {
    const int64_t j = tail + lane + (i_t << log_p);
    r.add(xr + j, 1);
    cap.template take<1>(j, xr + j);
  }
}

// ---- staged rows of the mapped_cross_entropy forward (bench/notes/label_map.md, session 6) -------
// The forward reads each mapped logit x[index[e]] in three passes (the row's largest mapped logit,
// then L_t and the responsibilities per target), each a dependent index load then a gather inside
// a loop over K that is not unrolled: at a 32k vocabulary ~7 such round trips per lane and pass.
// Instead the row's lanes load the T*K values once, kStageUnroll independent gathers at a time,
// into shared memory (`values`, one slice of T*K per row of the block), with the local source of
// every entry (`local_src[e]` = e % K when index[e] is a source in [0, S), else -1: the same for
// every row, so once per block); the per-target code then runs the same math.h functions on
// (values + t K, Group{local_src + t K, ..., S = K}), whose x[src[k]] is the same value: the same bits.
constexpr int kStageUnroll = 8;
constexpr int64_t kStageMaxBytes = 32 * 1024;  // dynamic shared memory per block (48 KB without opt-in)

// Shared bytes of a block's stage: kRowBlock / P rows of TK values of type A, then TK int64 sources.
template <typename A>
C10_HOST_DEVICE inline int64_t stage_bytes(int64_t TK, int log_p) {
  return (kRowBlock >> log_p) * TK * static_cast<int64_t>(sizeof(A)) + TK * static_cast<int64_t>(sizeof(int64_t));
}

// Whether the forward stages its rows: the stage fits (and then TK < 2^31: 32-bit entry math).
template <typename A>
C10_HOST_DEVICE inline bool stage_fits(int64_t TK, int log_p) {
  return TK > 0 && stage_bytes<A>(TK, log_p) <= kStageMaxBytes;
}

// The local source of entry e: its k within the group (32-bit unsigned remainder: no 64-bit
// division on the device), or -1 when index[e] is padding or outside [0, S).
C10_HOST_DEVICE inline int64_t local_source(int64_t s, int64_t S, int e, int K) {
  return s >= 0 && s < S ? static_cast<int64_t>(static_cast<uint32_t>(e) % static_cast<uint32_t>(K)) : -1;
}

// Lane `lane` (of 2^log_p) of a row's stage: values[e] = x[index[e]] for its entries e = lane + i P
// (0 for padding). Per step kStageUnroll index loads, then kStageUnroll gathers, then the stores;
// every load is unconditional (an entry past T*K reads the last one, a padding entry reads x[0],
// both discarded by a select), so that ptxas issues all of a step's loads before their first use
// (predicated loads were interleaved with the gathers they feed: 2 in flight per lane, not 8).
// Returns the lane's largest finite mapped logit (-inf when none): its part of the softmax shift.
template <typename A, typename scalar_t>
C10_HOST_DEVICE inline A stage_row(const scalar_t* __restrict__ xr, const int64_t* __restrict__ index, int64_t S,
                                   int TK, int lane, int log_p, A* values) {
  const int P = 1 << log_p;
  A m = -static_cast<A>(INFINITY);
  for (int e0 = lane; e0 < TK; e0 += kStageUnroll * P) {
    int64_t src[kStageUnroll];
    RX_LM_UNROLL
    for (int u = 0; u < kStageUnroll; ++u) {
      const int e = e0 + u * P;
      src[u] = index[e < TK ? e : TK - 1];
    }
    A v[kStageUnroll];
    RX_LM_UNROLL
    for (int u = 0; u < kStageUnroll; ++u) {
      const bool valid = src[u] >= 0 && src[u] < S;
      const A xv = static_cast<A>(xr[valid ? src[u] : 0]);
      v[u] = valid ? xv : static_cast<A>(0);
    }
    RX_LM_UNROLL
    for (int u = 0; u < kStageUnroll; ++u) {
      const int e = e0 + u * P;
      if (e < TK) {
        values[e] = v[u];
        if (src[u] >= 0 && src[u] < S && v[u] > m && v[u] < static_cast<A>(INFINITY)) m = v[u];
      }
    }
  }
  return m;
}

}  // namespace label_map
}  // namespace reprogram_ext
