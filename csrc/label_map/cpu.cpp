// C++ CPU kernels of label_map and mapped_cross_entropy (formulas: csrc/common/label_map_math.h).
//
// Rows are split over threads with at::parallel_for; one thread owns a row, so the scatter of a
// row's gradient into its mapped sources is sequential (in (t, k) order) and deterministic.
// Bytes per row: the forward gathers the T*K mapped logits (in address order, into a compact
// buffer), plus reads the whole row once (twice, the second time from cache) only when the row's
// log-sum-exp is needed. mapped_cross_entropy's forward also stores the per-entry gradient of a
// unit loss ([N, T, K], small next to [N, S]), so its backward does not read the logits: it
// writes each gradient row once (a fused zero or -p*D fill, then the sparse scatter).
// The weight gradient is summed per batch chunk (weight_grad_chunks(), a function of the shape
// only), then over chunks: deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "label_map/args.h"
#include "common/cpu_clones.h"
#include "runtime/cpu_block_cache.h"

namespace reprogram_ext {
namespace label_map {
namespace {

using at::Tensor;

template <typename A>
Group<A> group_of(const int64_t* pos, const A* weight, int64_t K, int64_t t) {
  return Group<A>{pos + t * K, weight ? weight + t * K : nullptr, K};
}

// The distinct valid sources in ascending order, and each index entry's position among them:
// a row's mapped logits are gathered once, in address order, into a compact buffer that the
// group math then indexes with `pos` (random access into a 128 KB row costs a cache miss each).
struct CompactSources {
  std::vector<int64_t> sources;
  std::vector<int64_t> pos;  // [T * K], -1 for padding
};

CompactSources compact_sources(const int64_t* index, int64_t TK) {
  CompactSources c;
  for (int64_t e = 0; e < TK; ++e) {
    if (index[e] >= 0) c.sources.push_back(index[e]);
  }
  std::sort(c.sources.begin(), c.sources.end());
  c.sources.erase(std::unique(c.sources.begin(), c.sources.end()), c.sources.end());
  c.pos.resize(TK);
  for (int64_t e = 0; e < TK; ++e) {
    c.pos[e] = index[e] < 0 ? -1
                            : std::lower_bound(c.sources.begin(), c.sources.end(), index[e]) - c.sources.begin();
  }
  return c;
}

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

// e_u = exp(v_u - shift).
template <typename A>
void exp_shifted_generic(A* e, const A* v, int64_t n, A shift) {
#pragma omp simd
  for (int64_t u = 0; u < n; ++u) e[u] = exp_f(v[u] - shift);
}

// v[u] = pre(v[u]) over a row's gathered logits: one vector pass, so that softmax's exp is taken
// once per source rather than at every use of it.
template <typename A>
void apply_pre_generic(A* v, int64_t n, int64_t pre, RowNorm<A> lse) {
  if (pre == kPreSoftmax) {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) v[u] = exp_f(minus_lse(v[u], lse));
  } else if (pre == kPreLogSoftmax) {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) v[u] = minus_lse(v[u], lse);
  }
}

// float32 rows, the common case, also compiled for AVX2 and AVX-512 and chosen at load time
// (cpu/cpu_clones.h; these loops are bound by exp arithmetic, not memory).
RX_CPU_CLONES RowNorm<float> row_normaliser_f32(const float* x, int64_t S) {
  return row_normaliser_generic<float>(x, S);
}
RX_CPU_CLONES void softmax_scaled_f32(float* g, const float* x, int64_t S, float c, RowNorm<float> norm) {
  softmax_scaled_generic<float>(g, x, S, c, norm);
}
RX_CPU_CLONES void exp_shifted_f32(float* e, const float* v, int64_t n, float shift) {
  exp_shifted_generic<float>(e, v, n, shift);
}
RX_CPU_CLONES void apply_pre_f32(float* v, int64_t n, int64_t pre, RowNorm<float> lse) {
  apply_pre_generic<float>(v, n, pre, lse);
}

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
void apply_pre(A* v, int64_t n, int64_t pre, const RowNorm<A>& lse) {
  if constexpr (std::is_same<A, float>::value) {
    apply_pre_f32(v, n, pre, lse);
  } else {
    apply_pre_generic<A>(v, n, pre, lse);
  }
}

template <typename A>
void exp_shifted(A* e, const A* v, int64_t n, A shift) {
  if constexpr (std::is_same<A, float>::value) {
    exp_shifted_f32(e, v, n, shift);
  } else {
    exp_shifted_generic<A>(e, v, n, shift);
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
int64_t row_chunks(const LabelMapArgs& p, bool need_weight_grad, int64_t row_elements) {
  if (need_weight_grad) return weight_grad_chunks(p.N, p.T * p.K);
  if (p.N * row_elements < kSerialElements) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(p.N, at::get_num_threads()));
}

// Elements a forward touches per row (the T*K mapped logits, the row when its lse is needed), and
// a backward (the gradient row it writes, plus the mapped entries).
int64_t forward_row_elements(const LabelMapArgs& p, bool need_lse) { return p.T * p.K + (need_lse ? p.S : 0); }
int64_t backward_row_elements(const LabelMapArgs& p) { return p.S + p.T * p.K; }

// ------------------------------------------------------------------------------------------- label_map

template <typename scalar_t>
void label_map_forward_kernel(const LabelMapArgs& p, const scalar_t* x, const CompactSources& cs,
                              const acc_t<scalar_t>* weight, scalar_t* out, acc_t<scalar_t>* row_lse) {
  using A = acc_t<scalar_t>;
  for_row_chunks(p.N, row_chunks(p, false, forward_row_elements(p, map_needs_lse(p.pre))), [&](int64_t, int64_t n0, int64_t n1) {
    std::vector<A> buf;
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const RowNorm<A> lse = map_needs_lse(p.pre) ? row_normaliser<A>(xr, p.S) : RowNorm<A>{0, 0};
      store_norm(row_lse, n, lse);
      gather_sources(xr, cs, buf);
      apply_pre(buf.data(), static_cast<int64_t>(buf.size()), p.pre, lse);
      for (int64_t t = 0; t < p.T; ++t) {
        const GroupValue<A> gv = group_value<A>(buf.data(), group_of(cs.pos.data(), weight, p.K, t), p.reduce, kPreNone, lse);
        out[n * p.T + t] = static_cast<scalar_t>(gv.out);
      }
    }
  });
}

template <typename scalar_t>
void label_map_backward_kernel(const LabelMapArgs& p, const scalar_t* grad_out, const scalar_t* x,
                               const int64_t* index, const CompactSources& cs, const acc_t<scalar_t>* weight,
                               const acc_t<scalar_t>* row_lse, scalar_t* grad, acc_t<scalar_t>* grad_weight_chunks,
                               int64_t chunks) {
  using A = acc_t<scalar_t>;
  const int64_t TK = p.T * p.K;
  for_row_chunks(p.N, chunks, [&](int64_t j, int64_t n0, int64_t n1) {
    std::vector<A> a(TK), acc_row, buf;
    A* gw = grad_weight_chunks ? grad_weight_chunks + j * TK : nullptr;
    if (gw) std::fill(gw, gw + TK, static_cast<A>(0));
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const RowNorm<A> lse = load_norm(row_lse, n);
      gather_sources(xr, cs, buf);
      apply_pre(buf.data(), static_cast<int64_t>(buf.size()), p.pre, lse);  // buf now holds v = pre(x)
      A D = 0;
      for (int64_t t = 0; t < p.T; ++t) {
        const Group<A> g = group_of(cs.pos.data(), weight, p.K, t);
        const GroupValue<A> gv = group_value<A>(buf.data(), g, p.reduce, kPreNone, lse);
        const A go = static_cast<A>(grad_out[n * p.T + t]);
        for (int64_t k = 0; k < p.K; ++k) {
          A ak = 0;
          if (g.valid(k)) {
            const A v = buf[g.src[k]];
            ak = go * value_coefficient(g, gv, p.reduce, k) * (p.pre == kPreSoftmax ? v : static_cast<A>(1));
            if (gw) gw[t * p.K + k] += go * value_weight_derivative(gv, p.reduce, k, v);
          }
          a[t * p.K + k] = ak;
          D += ak;
        }
      }
      write_grad_row<A>(grad + n * p.S, xr, p, index, a.data(), static_cast<A>(1), p.pre != kPreNone, lse, D,
                        acc_row);
    }
  });
}

// --------------------------------------------------------------------------------- mapped_cross_entropy

// L_t of one row (shifted by a per-row constant that cross-entropy ignores; see the header) and
// the per-group state the gradient needs.
template <typename A>
struct RowLogits {
  std::vector<A> L;
  std::vector<GroupValue<A>> value;  // pre none / log_softmax
  std::vector<GroupLog<A>> logp;     // pre softmax
  std::vector<A> q;                  // softmax_t(L): the cross-entropy's probabilities
  std::vector<A> e, ew, c;           // softmax_ce_row's scratch: exp table, w_i e_i, per-group sums
  A lse_L = 0, sum_L = 0;
};

// r.lse_L = logsumexp_t(L) and r.q = softmax_t(L), given m = max_t L_t.
template <typename A>
void finish_lse_and_softmax(const LabelMapArgs& p, A m, RowLogits<A>& r) {
  A s = 0;
  r.q.resize(p.T);
  if (m != -static_cast<A>(INFINITY) && m != static_cast<A>(INFINITY)) {
    exp_shifted<A>(r.q.data(), r.L.data(), p.T, m);
    for (int64_t t = 0; t < p.T; ++t) s += r.q[t];
    for (int64_t t = 0; t < p.T; ++t) r.q[t] /= s;
  } else {
    for (int64_t t = 0; t < p.T; ++t) r.q[t] = exp_f(r.L[t] - m);  // NaN, as exp(L_t - lseL) is
  }
  r.lse_L = lse_from(m, s);
}

template <typename A>
void mapped_logits(const LabelMapArgs& p, const A* buf, int64_t U, const int64_t* pos, const A* weight,
                   const RowNorm<A>& lse, RowLogits<A>& r) {
  r.L.resize(p.T);
  if (p.pre == kPreSoftmax) r.logp.resize(p.T);
  else r.value.resize(p.T);
  const A shift = p.pre == kPreSoftmax ? finite_max(buf, U) : static_cast<A>(0);  // the largest mapped logit
  A m = -static_cast<A>(INFINITY);
  r.sum_L = 0;
  for (int64_t t = 0; t < p.T; ++t) {
    const Group<A> g = group_of(pos, weight, p.K, t);
    if (p.pre == kPreSoftmax) {
      r.logp[t] = group_log_prob<A>(buf, g, p.reduce, shift);
      r.L[t] = r.logp[t].L;
    } else {
      r.value[t] = group_value<A>(buf, g, p.reduce, p.pre, lse);
      r.L[t] = r.value[t].out;
    }
    m = r.L[t] > m ? r.L[t] : m;
    r.sum_L += r.L[t];
  }
  finish_lse_and_softmax(p, m, r);
}

// The gradient of one row's loss (unit upstream gradient): a[t*K + k] = d loss / d x through
// entry (t, k) (when `a`), the dense coefficient D = sum_t dL_t * sum_k c_tk (pre log_softmax;
// the -D * p_j term is kept only when ce_needs_lse), and gw += scale * d loss / d w (when `gw`).
template <typename A>
void ce_row_gradient(const LabelMapArgs& p, const A* buf, const int64_t* pos, const A* weight, const RowLogits<A>& r,
                     int64_t y, const RowNorm<A>& lse, A eps, A scale, A* a, A* D, A* gw) {
  A dsum = 0;
  for (int64_t t = 0; t < p.T; ++t) {
    const Group<A> g = group_of(pos, weight, p.K, t);
    const A dL = ce_logit_grad_q<A>(r.q[t], t == y, p.T, eps, scale);
    for (int64_t k = 0; k < p.K; ++k) {
      A ak = 0;
      if (g.valid(k)) {
        if (p.pre == kPreSoftmax) {
          ak = dL * log_group_responsibility<A>(buf, g, r.logp[t], p.reduce, k);
          if (gw) gw[t * p.K + k] += dL * log_group_weight_derivative<A>(buf, g, r.logp[t], p.reduce, k);
        } else {
          ak = dL * value_coefficient(g, r.value[t], p.reduce, k);
          if (gw) gw[t * p.K + k] += dL * value_weight_derivative(r.value[t], p.reduce, k,
                                                                    pre_value(buf[g.src[k]], p.pre, lse));
        }
      }
      dsum += ak;
      if (a) a[t * p.K + k] = ak;
    }
  }
  if (D) *D = p.pre == kPreSoftmax ? static_cast<A>(0) : dsum;
}

// pre softmax with reduce sum / mean, the loss's common case: the valid index entries in (t, k)
// order with what a row needs that does not depend on the row, so that the row's loops have no
// padding, weight or reduce branches and vectorise (gathers and scatters over the entries).
template <typename A>
struct SoftmaxGroups {
  std::vector<int32_t> begin;  // [T + 1]: group t's entries are [begin[t], begin[t + 1])
  std::vector<int32_t> u;      // each entry's position among the row's compact sources
  std::vector<int32_t> slot;   // its t * K + k
  std::vector<int32_t> group;  // its t
  std::vector<A> w;            // its weight (1 unweighted)
  std::vector<A> log_wsum;     // [T]: log sum_k w_k (mean), 0 (sum)
};

// Whether the softmax row path applies: pre softmax, reduce sum / mean, 32-bit entry indices.
bool softmax_rows(const LabelMapArgs& p) {
  return p.pre == kPreSoftmax && p.reduce != kMax && p.T * p.K <= std::numeric_limits<int32_t>::max();
}

template <typename A>
SoftmaxGroups<A> softmax_groups(const LabelMapArgs& p, const CompactSources& cs, const A* weight) {
  SoftmaxGroups<A> sg;
  sg.begin.push_back(0);
  for (int64_t t = 0; t < p.T; ++t) {
    A wsum = 0;
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t e = t * p.K + k;
      if (cs.pos[e] < 0) continue;
      sg.u.push_back(static_cast<int32_t>(cs.pos[e]));
      sg.slot.push_back(static_cast<int32_t>(e));
      sg.group.push_back(static_cast<int32_t>(t));
      sg.w.push_back(weight ? weight[e] : static_cast<A>(1));
      wsum += sg.w.back();
    }
    sg.begin.push_back(static_cast<int32_t>(sg.u.size()));
    sg.log_wsum.push_back(p.reduce == kMean ? static_cast<A>(log(wsum)) : static_cast<A>(0));
  }
  return sg;
}

// Natural log of a positive normal float: x = 2^n * m with m in [sqrt(1/2), sqrt(2)), then
// log(m) = f - f^2/2 + f^3 P(f), f = m - 1, with the degree-8 minimax P of the Cephes logf
// (relative error ~1 ulp), n * log 2 added in two parts. Branch-free, so it vectorises. Garbage
// (not UB) for zero, subnormal, inf or NaN: callers use it only on normal finite inputs.
C10_ALWAYS_INLINE float log_f(float x) {
  union { float f; int32_t i; } v{x};
  int32_t n = ((v.i >> 23) & 0xff) - 127;
  v.i = (v.i & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  const bool big = v.f > 1.41421356f;
  const float m = big ? v.f * 0.5f : v.f;
  n += big ? 1 : 0;
  const float f = m - 1.0f, z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  const float fn = static_cast<float>(n);
  y = y * f * z + fn * -2.12194440e-4f - 0.5f * z;
  return f + y + fn * 0.693359375f;
}
C10_ALWAYS_INLINE double log_f(double x) { return log(x); }

// One row of the pre-softmax loss from the gathered mapped logits `buf` [U]: returns the loss and
// writes the unit gradient `a` [T*K]. The formulas of mapped_logits + ce_row_gradient: e_u =
// exp(x_u - shift) against the row's largest mapped logit, R_t = sum_k w_k e_k, L_t = log R_t -
// log wsum_t (group_log_prob's group-max form where R_t is not a finite float >= 1e-20), and
// a_tk = (dL_t / R_t) w_k e_k.
template <typename A>
A softmax_ce_row_generic(const LabelMapArgs& p, const SoftmaxGroups<A>& sg, const CompactSources& cs,
                         const A* weight, const A* buf, int64_t U, int64_t y, A eps, RowLogits<A>& r, A* a) {
  const int64_t T = p.T, E = static_cast<int64_t>(sg.u.size());
  const int32_t *ui = sg.u.data(), *slot = sg.slot.data(), *group = sg.group.data();
  const A* w = sg.w.data();
  const A shift = finite_max(buf, U);
  r.e.resize(U);
  r.ew.resize(E);
  r.L.resize(T);
  r.logp.resize(T);
  r.c.resize(T);
  A *e = r.e.data(), *ew = r.ew.data(), *L = r.L.data(), *c = r.c.data();
#pragma omp simd
  for (int64_t v = 0; v < U; ++v) e[v] = exp_f(buf[v] - shift);
#pragma omp simd
  for (int64_t i = 0; i < E; ++i) ew[i] = w[i] * e[ui[i]];
  for (int64_t t = 0; t < T; ++t) {
    A R = 0;
    for (int64_t i = sg.begin[t]; i < sg.begin[t + 1]; ++i) R += ew[i];
    c[t] = R;
  }
#pragma omp simd
  for (int64_t t = 0; t < T; ++t) L[t] = log_f(c[t]) - sg.log_wsum[t];
  A m = -static_cast<A>(INFINITY);
  r.sum_L = 0;
  bool all_table = true;
  for (int64_t t = 0; t < T; ++t) {
    GroupLog<A>& gl = r.logp[t];
    if (c[t] >= static_cast<A>(1e-20) && c[t] <= std::numeric_limits<A>::max()) {
      gl.m = shift;
      gl.R = c[t];
      gl.L = L[t];
    } else {
      gl = group_log_prob<A>(buf, group_of(cs.pos.data(), weight, p.K, t), p.reduce, shift);
      L[t] = gl.L;
      all_table = false;
    }
    m = L[t] > m ? L[t] : m;
    r.sum_L += L[t];
  }
  finish_lse_and_softmax(p, m, r);
  const A* q = r.q.data();
  for (int64_t t = 0; t < T; ++t) {
    c[t] = ce_logit_grad_q<A>(q[t], t == y, T, eps, static_cast<A>(1)) / r.logp[t].R;
  }
  if (E == T * p.K) {  // no padding: entry i is slot i
#pragma omp simd
    for (int64_t i = 0; i < E; ++i) a[i] = c[group[i]] * ew[i];
  } else {  // (a scalar scatter: AVX-512 scatters measured slower here)
    std::fill(a, a + T * p.K, static_cast<A>(0));
    for (int64_t i = 0; i < E; ++i) a[slot[i]] = c[group[i]] * ew[i];
  }
  if (!all_table) {  // groups on their own max: e_k against gl.m
    for (int64_t t = 0; t < T; ++t) {
      const GroupLog<A>& gl = r.logp[t];
      if (gl.m == shift) continue;
      for (int64_t i = sg.begin[t]; i < sg.begin[t + 1]; ++i) a[slot[i]] = c[t] * w[i] * exp_f(buf[ui[i]] - gl.m);
    }
  }
  return ce_loss<A>(L[y], r.sum_L, r.lse_L, T, eps);
}

RX_CPU_CLONES float softmax_ce_row_f32(const LabelMapArgs& p, const SoftmaxGroups<float>& sg,
                                      const CompactSources& cs, const float* weight, const float* buf, int64_t U,
                                      int64_t y, float eps, RowLogits<float>& r, float* a) {
  return softmax_ce_row_generic<float>(p, sg, cs, weight, buf, U, y, eps, r, a);
}

template <typename A>
A softmax_ce_row(const LabelMapArgs& p, const SoftmaxGroups<A>& sg, const CompactSources& cs, const A* weight,
                 const A* buf, int64_t U, int64_t y, A eps, RowLogits<A>& r, A* a) {
  if constexpr (std::is_same<A, float>::value) {
    return softmax_ce_row_f32(p, sg, cs, weight, buf, U, y, eps, r, a);
  } else {
    return softmax_ce_row_generic<A>(p, sg, cs, weight, buf, U, y, eps, r, a);
  }
}

template <typename scalar_t>
void ce_forward_kernel(const LabelMapArgs& p, const scalar_t* x, const int64_t* target, const CompactSources& cs,
                       const acc_t<scalar_t>* weight, double eps, int64_t ignore_index, acc_t<scalar_t>* loss,
                       acc_t<scalar_t>* unit_grad, acc_t<scalar_t>* dense) {
  using A = acc_t<scalar_t>;
  const int64_t TK = p.T * p.K;
  const bool need_lse = ce_needs_lse(p.pre, p.reduce, p.weighted);
  const bool softmax_sum = softmax_rows(p);
  const SoftmaxGroups<A> sg = softmax_sum ? softmax_groups<A>(p, cs, weight) : SoftmaxGroups<A>{};
  for_row_chunks(p.N, row_chunks(p, false, forward_row_elements(p, need_lse)), [&](int64_t, int64_t n0, int64_t n1) {
    RowLogits<A> r;
    std::vector<A> buf;
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const int64_t y = target[n];
      A* a = unit_grad + n * TK;
      A D = 0;
      RowNorm<A> lse{0, 0};
      if (y == ignore_index) {
        loss[n] = 0;
        std::fill(a, a + TK, static_cast<A>(0));
      } else {
        if (need_lse) lse = row_normaliser<A>(xr, p.S);
        gather_sources(xr, cs, buf);
        if (softmax_sum) {
          loss[n] = softmax_ce_row<A>(p, sg, cs, weight, buf.data(), static_cast<int64_t>(buf.size()), y,
                                      static_cast<A>(eps), r, a);
          continue;  // pre softmax: no dense part
        }
        mapped_logits<A>(p, buf.data(), static_cast<int64_t>(buf.size()), cs.pos.data(), weight, lse, r);
        loss[n] = ce_loss<A>(r.L[y], r.sum_L, r.lse_L, p.T, static_cast<A>(eps));
        ce_row_gradient<A>(p, buf.data(), cs.pos.data(), weight, r, y, lse, static_cast<A>(eps), static_cast<A>(1), a,
                           &D, nullptr);
      }
      if (dense) {
        dense[3 * n] = lse.max;
        dense[3 * n + 1] = lse.log_sum;
        dense[3 * n + 2] = D;
      }
    }
  });
}

template <typename scalar_t>
void ce_backward_kernel(const LabelMapArgs& p, const acc_t<scalar_t>* grad_loss, const scalar_t* x,
                        const int64_t* target, const int64_t* index, const CompactSources& cs,
                        const acc_t<scalar_t>* weight, const acc_t<scalar_t>* unit_grad, const acc_t<scalar_t>* dense,
                        double eps, int64_t ignore_index, scalar_t* grad, acc_t<scalar_t>* grad_weight_chunks,
                        int64_t chunks) {
  using A = acc_t<scalar_t>;
  const int64_t TK = p.T * p.K;
  for_row_chunks(p.N, chunks, [&](int64_t j, int64_t n0, int64_t n1) {
    std::vector<A> acc_row, buf;
    RowLogits<A> r;
    A* gw = grad_weight_chunks ? grad_weight_chunks + j * TK : nullptr;
    if (gw) std::fill(gw, gw + TK, static_cast<A>(0));
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* xr = x + n * p.S;
      const RowNorm<A> lse = dense ? RowNorm<A>{dense[3 * n], dense[3 * n + 1]} : RowNorm<A>{0, 0};
      const A D = dense ? dense[3 * n + 2] : static_cast<A>(0);
      if (gw && target[n] != ignore_index) {  // weight gradient: recompute the row
        gather_sources(xr, cs, buf);
        mapped_logits<A>(p, buf.data(), static_cast<int64_t>(buf.size()), cs.pos.data(), weight, lse, r);
        ce_row_gradient<A>(p, buf.data(), cs.pos.data(), weight, r, target[n], lse, static_cast<A>(eps),
                           grad_loss[n], nullptr, nullptr, gw);
      }
      write_grad_row<A>(grad + n * p.S, xr, p, index, unit_grad + n * TK, grad_loss[n], dense != nullptr && D != 0,
                        lse, D, acc_row);
    }
  });
}

// ------------------------------------------------------------------------------------------- ops

template <typename scalar_t>
const acc_t<scalar_t>* weight_ptr(const std::optional<Tensor>& weight) {
  return weight.has_value() ? weight->const_data_ptr<acc_t<scalar_t>>() : nullptr;
}

Tensor empty_acc(const Tensor& logits, at::IntArrayRef size) {
  return empty_large_cpu(size, logits.options().dtype(acc_scalar_type(logits.scalar_type())));
}

// Sums the [chunks, T, K] weight-gradient partials in a fixed order (or passes the empty tensor).
Tensor finish_weight_grad(const Tensor& partials, bool need) { return need ? partials.sum(0) : partials; }

std::tuple<Tensor, Tensor> label_map_forward_cpu(const Tensor& logits, const Tensor& index,
                                                 const std::optional<Tensor>& weight, int64_t reduce, int64_t pre) {
  const LabelMapArgs p = make_label_map_args("label_map", logits, index, weight, reduce, pre);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  Tensor out = at::empty({p.N, p.T}, logits.options());
  Tensor row_lse = empty_acc(logits, map_needs_lse(pre) ? at::IntArrayRef({p.N, 2}) : at::IntArrayRef({0}));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_forward_cpu", [&] {
    label_map_forward_kernel<scalar_t>(p, logits.const_data_ptr<scalar_t>(), cs, weight_ptr<scalar_t>(weight),
                                       out.mutable_data_ptr<scalar_t>(),
                                       row_lse.numel() ? row_lse.mutable_data_ptr<acc_t<scalar_t>>() : nullptr);
  });
  return {out, row_lse};
}

std::tuple<Tensor, Tensor> label_map_backward_cpu(const Tensor& grad_out_in, const Tensor& logits,
                                                  const Tensor& index, const std::optional<Tensor>& weight,
                                                  const Tensor& row_lse, int64_t reduce, int64_t pre,
                                                  bool need_weight_grad) {
  const LabelMapArgs p = make_label_map_args("label_map", logits, index, weight, reduce, pre);
  check_label_map_backward_args(p, logits, grad_out_in, row_lse);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  const Tensor grad_out = grad_out_in.contiguous();
  const bool need_w = need_weight_grad && p.weighted;
  const int64_t chunks = row_chunks(p, need_w, backward_row_elements(p));
  Tensor grad = empty_large_cpu({p.N, p.S}, logits.options());
  Tensor gw = empty_acc(logits, need_w ? at::IntArrayRef({chunks, p.T, p.K}) : at::IntArrayRef({0}));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "label_map_backward_cpu", [&] {
    label_map_backward_kernel<scalar_t>(
        p, grad_out.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(), cs,
        weight_ptr<scalar_t>(weight), map_needs_lse(pre) ? row_lse.const_data_ptr<acc_t<scalar_t>>() : nullptr,
        grad.mutable_data_ptr<scalar_t>(), need_w ? gw.mutable_data_ptr<acc_t<scalar_t>>() : nullptr, chunks);
  });
  return {grad, finish_weight_grad(gw, need_w)};
}

std::tuple<Tensor, Tensor, Tensor> mapped_cross_entropy_forward_cpu(const Tensor& logits, const Tensor& target,
                                                                    const Tensor& index,
                                                                    const std::optional<Tensor>& weight,
                                                                    int64_t reduce, int64_t pre,
                                                                    double label_smoothing, int64_t ignore_index) {
  const LabelMapArgs p = make_label_map_args("mapped_cross_entropy", logits, index, weight, reduce, pre);
  check_target(target, p, ignore_index);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  Tensor loss = empty_acc(logits, {p.N});
  Tensor unit_grad = empty_acc(logits, {p.N, p.T, p.K});
  Tensor dense = empty_acc(logits, ce_needs_lse(pre, reduce, p.weighted) ? at::IntArrayRef({p.N, 3})
                                                                         : at::IntArrayRef({0}));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mapped_ce_forward_cpu", [&] {
    using A = acc_t<scalar_t>;
    ce_forward_kernel<scalar_t>(p, logits.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(), cs,
                                weight_ptr<scalar_t>(weight), label_smoothing, ignore_index,
                                loss.mutable_data_ptr<A>(), unit_grad.mutable_data_ptr<A>(),
                                dense.numel() ? dense.mutable_data_ptr<A>() : nullptr);
  });
  return {loss, unit_grad, dense};
}

std::tuple<Tensor, Tensor> mapped_cross_entropy_backward_cpu(const Tensor& grad_loss_in, const Tensor& logits,
                                                             const Tensor& target, const Tensor& index,
                                                             const std::optional<Tensor>& weight,
                                                             const Tensor& unit_grad_in, const Tensor& dense_in,
                                                             int64_t reduce, int64_t pre, double label_smoothing,
                                                             int64_t ignore_index, bool need_weight_grad) {
  const LabelMapArgs p = make_label_map_args("mapped_cross_entropy", logits, index, weight, reduce, pre);
  check_target(target, p, ignore_index);
  const bool has_dense = check_mapped_ce_backward_args(p, logits.scalar_type(), grad_loss_in, unit_grad_in, dense_in);
  const CompactSources cs = compact_sources(index.const_data_ptr<int64_t>(), p.T * p.K);
  const Tensor grad_loss = grad_loss_in.contiguous(), unit_grad = unit_grad_in.contiguous();
  const Tensor dense = dense_in.contiguous();
  const bool need_w = need_weight_grad && p.weighted;
  const int64_t chunks = row_chunks(p, need_w, backward_row_elements(p));
  Tensor grad = empty_large_cpu({p.N, p.S}, logits.options());
  Tensor gw = empty_acc(logits, need_w ? at::IntArrayRef({chunks, p.T, p.K}) : at::IntArrayRef({0}));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mapped_ce_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    ce_backward_kernel<scalar_t>(p, grad_loss.const_data_ptr<A>(), logits.const_data_ptr<scalar_t>(),
                                 target.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(), cs,
                                 weight_ptr<scalar_t>(weight), unit_grad.const_data_ptr<A>(),
                                 has_dense ? dense.const_data_ptr<A>() : nullptr, label_smoothing, ignore_index,
                                 grad.mutable_data_ptr<scalar_t>(), need_w ? gw.mutable_data_ptr<A>() : nullptr,
                                 chunks);
  });
  return {grad, finish_weight_grad(gw, need_w)};
}

}  // namespace
}  // namespace label_map

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("label_map_forward", &label_map::label_map_forward_cpu);
  m.impl("label_map_backward", &label_map::label_map_backward_cpu);
  m.impl("mapped_cross_entropy_forward", &label_map::mapped_cross_entropy_forward_cpu);
  m.impl("mapped_cross_entropy_backward", &label_map::mapped_cross_entropy_backward_cpu);
}

}  // namespace reprogram_ext
