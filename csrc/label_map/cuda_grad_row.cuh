// The gradient-row writer of the label_map CUDA backward kernels, __host__ __device__ so that a host
// unit test runs the same code over a simulated row group (the kernels call write() from each lane).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "label_map/cuda_rows.cuh"
#include "label_map/math.h"

namespace reprogram_ext {
namespace label_map {

// The product p * b rounded once to A: an FMA contraction of `v + c * (p * b)` would skip that
// rounding (the staged backward rounds a[e] = b * p before it is added).
template <typename A>
RX_LM_HD A mul_rn(A p, A b) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(A) == sizeof(float)) {
    return __fmul_rn(p, b);
  } else {
    return __dmul_rn(p, b);
  }
#else
  return p * b;
#endif
}

// grad[j] = dense_j + c * sum over the entries e of source j of a[e], dense_j = -D softmax(x)_j
// when `dense`, else 0; each element by one lane, 128-bit stores of the aligned body (its x loads
// are 128-bit too when x and grad rows share their alignment). kEntriesTimesP (the label_map
// backward without staged logits, reduce sum / mean, pre softmax): a[e] holds g_t c_k without the
// factor p_j = softmax(x)_j, and the writer adds c * (p_j * a[e]), p_j from the logit it streams:
// the values (bits) of the staged kernel's a[e] = (g_t c_k) * p_j.
template <typename A, typename scalar_t, bool kMaybeDense = true, bool kEntriesTimesP = false>
struct GradRow {
  const scalar_t* xr;
  scalar_t* gr;
  const A* a;  // the row's [T * K] coefficients
  SourceMapView map;
  RowNorm<A> norm;
  A D, c;
  bool dense;

  RX_LM_HD bool has_dense() const { return kMaybeDense && dense; }
  RX_LM_HD bool reads_x() const { return has_dense() || kEntriesTimesP; }
  RX_LM_HD A softmax_of(A x) const { return exp_f(minus_lse(x, norm)); }
  RX_LM_HD A dense_value(A x) const { return has_dense() ? -D * softmax_of(x) : static_cast<A>(0); }
  // v plus c * a[e] (kEntriesTimesP: c * (p * a[e]), p = softmax(x)_j) for the entries e of source
  // j, in ascending e.
  RX_LM_HD A plus_entries(A v, int32_t j, A p = static_cast<A>(1)) const {
RX_LM_NO_UNROLL
    for (int32_t e = map.ptr[j]; e < map.ptr[j + 1]; ++e) {
      if constexpr (kEntriesTimesP) {
        v += c * mul_rn(p, a[map.ent[e]]);
      } else {
        v += c * a[map.ent[e]];
      }
    }
    return v;
  }
  RX_LM_HD A scalar_at(int32_t j) const {
    const A x = reads_x() ? static_cast<A>(xr[j]) : static_cast<A>(0);
    if constexpr (kEntriesTimesP) {
      const A p = softmax_of(x);
      return plus_entries(has_dense() ? -D * p : static_cast<A>(0), j, p);
    } else {
      return plus_entries(dense_value(x), j);
    }
  }

  // Chunk ch's logits (the dense term's input; zeros without it): one 128-bit load when kXVec (the
  // x and grad rows share their alignment; xv: the row's aligned body, from element h), else scalars.
  template <bool kXVec>
  RX_LM_HD void load_chunk(const Vec16<scalar_t>* xv, int32_t h, int32_t ch, A (&xs)[Vec16<scalar_t>::V]) const {
    constexpr int V = Vec16<scalar_t>::V;
    if constexpr (kXVec) {
      const Vec16<scalar_t> v = xv[ch];
RX_LM_UNROLL
      for (int i = 0; i < V; ++i) xs[i] = static_cast<A>(v.v[i]);
    } else {
      const int32_t j0 = h + ch * V;
RX_LM_UNROLL
      for (int i = 0; i < V; ++i) xs[i] = reads_x() ? static_cast<A>(xr[j0 + i]) : static_cast<A>(0);
    }
  }

  // Chunk ch's gradient from its logits xs: dense values, then its sources' entries; one 128-bit store.
  // (gv: the gradient row's aligned body, from element h.)
  RX_LM_HD void store_chunk(Vec16<scalar_t>* gv, int32_t h, int32_t ch, const A (&xs)[Vec16<scalar_t>::V]) const {
    constexpr int V = Vec16<scalar_t>::V;
    const int32_t j0 = h + ch * V;
    A out[V];
    [[maybe_unused]] A p[V];
RX_LM_UNROLL
    for (int i = 0; i < V; ++i) {
      if constexpr (kEntriesTimesP) {
        p[i] = softmax_of(xs[i]);
        out[i] = has_dense() ? -D * p[i] : static_cast<A>(0);
      } else {
        out[i] = dense_value(xs[i]);
      }
    }
    // The chunk's sources with entries, one at a time (selects keep out[] in registers).
RX_LM_NO_UNROLL
    for (uint32_t m = chunk_mask(map.bits, j0, V); m != 0; m &= m - 1) {
      const int i = lowest_bit(m);
      A v = out[0];
RX_LM_UNROLL
      for (int k = 1; k < V; ++k) v = k == i ? out[k] : v;
      if constexpr (kEntriesTimesP) {
        A pi = p[0];
RX_LM_UNROLL
        for (int k = 1; k < V; ++k) pi = k == i ? p[k] : pi;
        v = plus_entries(v, j0 + i, pi);
      } else {
        v = plus_entries(v, j0 + i);
      }
RX_LM_UNROLL
      for (int k = 0; k < V; ++k) out[k] = k == i ? v : out[k];
    }
    Vec16<scalar_t> o;
RX_LM_UNROLL
    for (int i = 0; i < V; ++i) o.v[i] = static_cast<scalar_t>(out[i]);
    gv[ch] = o;
  }

  // The lane's elements of the row. With the dense term the body goes kChunks chunks per step, their
  // logits loaded before the first is used (32 B in flight per lane, so that the last partial wave
  // of rows still streams near the copy rate); every element's value and order of additions are the
  // same whatever the step.
  static constexpr int kChunks = kMaybeDense ? 2 : 1;
  // The lane's `left` chunks ch, ch + P, ..., kChunks per step, then one at a time.
  template <bool kXVec>
  RX_LM_HD void write_chunks(const Vec16<scalar_t>* xv, Vec16<scalar_t>* gv, int32_t h, int32_t left, int32_t ch,
                             int32_t P) const {
    constexpr int V = Vec16<scalar_t>::V;
    for (; left >= kChunks; left -= kChunks, ch += kChunks * P) {
      A xs[kChunks][V];
RX_LM_UNROLL
      for (int u = 0; u < kChunks; ++u) load_chunk<kXVec>(xv, h, ch + u * P, xs[u]);
RX_LM_UNROLL
      for (int u = 0; u < kChunks; ++u) store_chunk(gv, h, ch + u * P, xs[u]);
    }
    if constexpr (kChunks > 1) {
      for (; left > 0; --left, ch += P) {
        A xs[V];
        load_chunk<kXVec>(xv, h, ch, xs);
        store_chunk(gv, h, ch, xs);
      }
    }
  }

  // Positions within the row are int32 (no 64-bit index arithmetic per chunk): every caller's row
  // has S < 2^31 - 1 sources (build_source_map's bound), so h + ch V and the lanes' chunk indices fit.
  RX_LM_HD void write(int64_t S, int lane, int log_p) const {
    constexpr int V = Vec16<scalar_t>::V;
    const int32_t s32 = static_cast<int32_t>(S);
    const int32_t h = static_cast<int32_t>(aligned_head<scalar_t>(gr, S)), nv = (s32 - h) / V;
    const bool x_vec = reads_x() && aligned_head<scalar_t>(xr, S) == h;
    const int32_t P = 1 << log_p;
    for (int32_t i = 0, n_j = static_cast<int32_t>(lane_count(0, h, lane, log_p)); i < n_j; ++i) {
      const int32_t j = lane + (i << log_p);
      gr[j] = static_cast<scalar_t>(scalar_at(j));
    }
    const Vec16<scalar_t>* xv = reinterpret_cast<const Vec16<scalar_t>*>(xr + h);
    Vec16<scalar_t>* gv = reinterpret_cast<Vec16<scalar_t>*>(gr + h);
    // The lane's chunks lane, lane + P, ... below nv; the body loop without the scalar-load path when
    // the logits load as 128-bit chunks (the usual case), so that it holds no scalar row addressing.
    const int32_t n_ch = static_cast<int32_t>(lane_count(0, nv, lane, log_p));
    if (x_vec) {
      write_chunks<true>(xv, gv, h, n_ch, lane, P);
    } else {
      write_chunks<false>(xv, gv, h, n_ch, lane, P);
    }
    const int32_t tail = h + nv * V;
    for (int32_t i = 0, n_j = static_cast<int32_t>(lane_count(tail, s32, lane, log_p)); i < n_j; ++i) {
      const int32_t j = tail + lane + (i << log_p);
      gr[j] = static_cast<scalar_t>(scalar_at(j));
    }
  }
};

// The label_map backward without the mapped logits (reduce sum / mean, pre softmax): their
// coefficients c_k = d out_t / d v_k (w_k, or w_k / sum_k w_k) do not depend on the values, so target
// t's entries get b[k] = g_t c_k (0 for padding: the staged kernel's a[e] = (g_t c_k) * p_{s_k}
// without its last factor, which GradRow<..., true> applies), and its part of the dense coefficient
// D = sum_e a[e] = sum_t g_t sum_k c_k p_{s_k} is g_t out_t (out is homogeneous of degree one in the
// values p: sum_k c_k p_{s_k} = out_t), 0 for a group without valid entries (mean's out_t is
// 0 / 0 there, and the staged kernel adds nothing). out_t: the forward's output. wsum is summed over
// the valid k in ascending order, as reduce_group sums it: the same c_k bits.
template <Reduce R, typename A>
RX_LM_HD A target_coefficients(const Group<A>& g, A go, A out_t, A* b) {
  static_assert(Reducer<R>::kSumOfTerms, "sum and mean only: their coefficients do not depend on the values");
  A wsum = 0;
  bool any = false;
  for (int64_t k = 0; k < g.K; ++k) {
    if (g.valid(k)) {
      wsum += g.weight(k);
      any = true;
    }
  }
  for (int64_t k = 0; k < g.K; ++k) {
    b[k] = g.valid(k) ? go * Reducer<R>::coefficient(g.weight(k), wsum, false) : static_cast<A>(0);
  }
  return any ? go * out_t : static_cast<A>(0);
}

}  // namespace label_map
}  // namespace reprogram_ext
