// Row helpers shared by the C++ CPU kernels of label_map (cpu_label_map.cpp) and
// mapped_cross_entropy (cpu_cross_entropy.cpp): the compact gather of a row's mapped logits, the
// row normaliser, the gradient-row writer, the row chunks of at::parallel_for.
//
// Rows are split over threads with at::parallel_for; one thread owns a row, so the scatter of a
// row's gradient into its mapped sources is sequential (in (t, k) order) and deterministic.
// The weight gradient is summed per batch chunk (weight_grad_chunks(), a function of the shape
// only), then over chunks: deterministic.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/cpu_clones.h"
#include "label_map/args.h"
#include "runtime/cpu_block_cache.h"

namespace reprogram_ext {
namespace label_map {
namespace cpu {

using at::Tensor;

template <typename A>
inline Group<A> group_of(const int64_t* pos, const A* weight, const LabelMapArgs& p, int64_t t) {
  return Group<A>{pos + t * p.K, weight ? weight + t * p.K : nullptr, p.K, INT64_MAX, p.topk};
}

// The distinct valid sources in ascending order, and each index entry's position among them:
// a row's mapped logits are gathered once, in address order, into a compact buffer that the
// group math then indexes with `pos` (random access into a 128 KB row costs a cache miss each).
struct CompactSources {
  std::vector<int64_t> sources;
  std::vector<int64_t> pos;  // [T * K], -1 for padding
};

CompactSources compact_sources(const int64_t* index, int64_t TK);

// buf[u] = x_row[sources[u]] (ascending addresses; each gather is a cache miss: latency bound).
template <typename A, typename scalar_t>
void gather_sources(const scalar_t* xr, const CompactSources& c, std::vector<A>& buf) {
  const int64_t U = static_cast<int64_t>(c.sources.size());
  buf.resize(U);
  const int64_t* src = c.sources.data();
  for (int64_t u = 0; u < U; ++u) buf[u] = static_cast<A>(xr[src[u]]);
}

// The row normaliser (max, log sum_j exp(x_j - max)): a max pass and a sum-of-exp pass (the row
// is in cache the second time).
template <typename A, typename scalar_t>
RowNorm<A> row_normaliser_generic(const scalar_t* x, int64_t S) {
  A m = -static_cast<A>(INFINITY);
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < S; ++j) {
    const A v = static_cast<A>(x[j]);
    m = v > m ? v : m;
  }
  A s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < S; ++j) s += exp_f(static_cast<A>(x[j]) - m);
  return row_norm_from(m, s);
}

// g_j = c * exp((x_j - max) - log_sum): the dense part of a gradient row.
template <typename A, typename scalar_t>
void softmax_scaled_generic(A* g, const scalar_t* x, int64_t S, A c, RowNorm<A> norm) {
#pragma omp simd
  for (int64_t j = 0; j < S; ++j) g[j] = c * exp_f(minus_lse(static_cast<A>(x[j]), norm));
}

// float32 rows, the common case, also compiled for AVX2 and AVX-512 and chosen at load time
// (common/cpu_clones.h; these loops are bound by exp arithmetic, not memory). In cpu_rows.cpp.
RowNorm<float> row_normaliser_f32(const float* x, int64_t S);
void softmax_scaled_f32(float* g, const float* x, int64_t S, float c, RowNorm<float> norm);

template <typename A, typename scalar_t>
RowNorm<A> row_normaliser(const scalar_t* x, int64_t S) {
  if constexpr (std::is_same<scalar_t, float>::value) {
    return row_normaliser_f32(x, S);
  } else {
    return row_normaliser_generic<A>(x, S);
  }
}

template <typename A, typename scalar_t>
void softmax_scaled(A* g, const scalar_t* x, int64_t S, A c, const RowNorm<A>& norm) {
  if constexpr (std::is_same<scalar_t, float>::value) {
    softmax_scaled_f32(g, x, S, c, norm);
  } else {
    softmax_scaled_generic<A>(g, x, S, c, norm);
  }
}

template <typename A>
RowNorm<A> load_norm(const A* stats, int64_t n) {
  return stats ? RowNorm<A>{stats[2 * n], stats[2 * n + 1]} : RowNorm<A>{0, 0};
}

template <typename A>
void store_norm(A* stats, int64_t n, const RowNorm<A>& r) {
  if (stats) {
    stats[2 * n] = r.max;
    stats[2 * n + 1] = r.log_sum;
  }
}

// Writes one gradient row: g_j = -scale * D * softmax(x)_j when `dense` (else 0), then adds
// scale * a[t*K + k] at source index[t, k] for every valid entry, in (t, k) order. Low-precision
// rows are accumulated in `acc_row` (accumulation dtype) and rounded once.
template <typename A, typename scalar_t>
void write_grad_row(scalar_t* grad, const scalar_t* x, const LabelMapArgs& p, const int64_t* index, const A* a,
                    A scale, bool dense, const RowNorm<A>& lse, A D, std::vector<A>& acc_row) {
  const int64_t S = p.S, TK = p.T * p.K;
  constexpr bool direct = std::is_same<scalar_t, A>::value;
  A* g = nullptr;
  if constexpr (direct) {
    g = grad;
  } else {
    acc_row.resize(S);
    g = acc_row.data();
  }
  if (dense) {
    softmax_scaled<A>(g, x, S, -scale * D, lse);
  } else {
    std::memset(g, 0, sizeof(A) * S);
  }
  for (int64_t e = 0; e < TK; ++e) {
    if (index[e] >= 0) g[index[e]] += scale * a[e];
  }
  if constexpr (!direct) {
#pragma omp simd
    for (int64_t j = 0; j < S; ++j) grad[j] = static_cast<scalar_t>(g[j]);
  }
}

// Rows [chunk_begin(j), chunk_begin(j + 1)) for each of `chunks` chunks, in parallel over chunks.
template <typename F>
void for_row_chunks(int64_t N, int64_t chunks, F&& f) {
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) f(j, chunk_begin(N, chunks, j), chunk_begin(N, chunks, j + 1));
  });
}

// Calls that touch fewer elements than this run on the calling thread: waking the OpenMP team
// costs more than their work (see bench/notes/label_map.md).
constexpr int64_t kSerialElements = int64_t(1) << 14;

// Row chunks: the deterministic weight-gradient chunks; else one per thread (at::parallel_for
// hands each thread one contiguous block of chunks anyway, and each chunk allocates its row
// scratch), or one (no parallel region) when the call touches fewer than kSerialElements elements
// (`row_elements` per row).
inline int64_t row_chunks(const LabelMapArgs& p, bool need_weight_grad, int64_t row_elements) {
  if (need_weight_grad) return weight_grad_chunks(p.N, p.T * p.K);
  if (p.N * row_elements < kSerialElements) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(p.N, at::get_num_threads()));
}

// Elements a forward touches per row (the T*K mapped logits, the row when its lse is needed), and
// a backward (the gradient row it writes, plus the mapped entries).
inline int64_t forward_row_elements(const LabelMapArgs& p, bool need_lse) { return p.T * p.K + (need_lse ? p.S : 0); }
inline int64_t backward_row_elements(const LabelMapArgs& p) { return p.S + p.T * p.K; }


template <typename scalar_t>
const acc_t<scalar_t>* weight_ptr(const std::optional<Tensor>& weight) {
  return weight.has_value() ? weight->const_data_ptr<acc_t<scalar_t>>() : nullptr;
}

inline Tensor empty_acc(const Tensor& logits, at::IntArrayRef size) {
  return empty_large_cpu(size, logits.options().dtype(acc_scalar_type(logits.scalar_type())));
}

// A backward's outputs: grad_logits [N, S] in logits' dtype, and the weight gradient's per-chunk
// partials [chunks, T, K] (or [0] unless it is needed), summed over chunks in a fixed order.
struct BackwardOutputs {
  bool need_w;
  int64_t chunks;
  Tensor grad, gw_partials;

  BackwardOutputs(const LabelMapArgs& p, const Tensor& logits, bool need_weight_grad)
      : need_w(need_weight_grad && p.weighted),
        chunks(row_chunks(p, need_w, backward_row_elements(p))),
        grad(empty_large_cpu({p.N, p.S}, logits.options())),
        gw_partials(empty_acc(logits, weight_grad_shape(p, need_w, chunks))) {}

  template <typename A>
  A* gw() { return need_w ? gw_partials.mutable_data_ptr<A>() : nullptr; }
  // (grad_logits, grad_weight [T, K] or the empty tensor).
  std::tuple<Tensor, Tensor> finish() const { return {grad, need_w ? gw_partials.sum(0) : gw_partials}; }
};

}  // namespace cpu
}  // namespace label_map
}  // namespace reprogram_ext
