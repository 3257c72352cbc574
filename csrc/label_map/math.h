// Per-row math of label_map and mapped_cross_entropy, shared by the C++ CPU kernels and the CUDA
// kernels (every function is __host__ __device__), so the CPU build executes the same code the
// GPU runs. Kernels only map rows / targets / sources to threads and call these functions.
// The group functions are templates on the reduce R (options.h: its Reducer holds the
// reduce-specific steps). Formulas: docs/ops/label_map.md.
//
// One row n of logits x[S]; target t owns the sources s_k = index[t, k], k < K (-1 = padding),
// with weights w_k (1 without a weight tensor). With lse = log sum_j exp(x_j):
//   v_j = pre(x_j):  none x_j,  softmax exp(x_j - lse),  log_softmax x_j - lse
//   label_map:  out_t = sum_k w_k v_{s_k}                  (reduce sum)
//                     = sum_k w_k v_{s_k} / sum_k w_k      (reduce mean)
//                     = max_k w_k v_{s_k}                  (reduce max; first maximal k wins)
//                     = (1/topk) sum_{k in top} v_{s_k}     (reduce topk_mean, unweighted; top: the
//                       topk largest valid entries by logit, ties to the lower k, nan the largest)
// mapped_cross_entropy uses L_t = out_t, except with pre softmax, where L_t = log out_t is
// computed in log space: with m_t = max_k x_{s_k} and e_k = exp(x_{s_k} - m_t),
//   L_t = m_t + log(sum_k w_k e_k  [or max_k w_k e_k]) - log(sum_k w_k  [mean only]) - lse.
// Cross-entropy over the T targets only sees L up to a per-row constant (softmax over t is
// shift invariant), so every "- c * lse" with c equal for all targets is dropped: the softmax
// loss never needs lse at all (ce_needs_lse() says when it does).
//   loss = -(1 - eps) log q_y - eps / T * sum_t log q_t,   q = softmax_t(L),  0 if y == ignore_index
//   dloss/dL_t = q_t - (1 - eps) [t == y] - eps / T      (sums to 0 over t)
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "common/exp_f.h"
#include "label_map/options.h"

namespace reprogram_ext {
namespace label_map {

// Accumulation type: float for float/half/bfloat16, double for double.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;


// A row's log-sum-exp kept as (max, log sum_j exp(x_j - max)), so that x - lse is computed as
// (x - max) - log_sum without rounding a large lse first (softmax's own trick).
template <typename A>
struct RowNorm {
  A max, log_sum;
};

template <typename A>
RX_LM_HD A minus_lse(A x, const RowNorm<A>& r) {
  return (x - r.max) - r.log_sum;
}

// v = pre(x) given the row's normaliser.
template <typename A>
RX_LM_HD A pre_value(A x, Pre pre, const RowNorm<A>& r) {
  if (pre == Pre::kSoftmax) return exp_f(minus_lse(x, r));
  if (pre == Pre::kLogSoftmax) return minus_lse(x, r);
  return x;
}

// The sparse mapping of one target: its K source ids (-1 pads) and weights (nullptr = all 1).
// An id outside [0, S) counts as padding, so no kernel reads outside the row even when called
// directly with a bad index (the front end refuses such an index before any kernel runs).
template <typename A>
struct Group {
  const int64_t* src;
  const A* w;
  int64_t K;
  int64_t S = INT64_MAX;  // the row length
  int64_t topk = 0;       // the k of reduce topk_mean
  RX_LM_HD bool valid(int64_t k) const { return src[k] >= 0 && src[k] < S; }
  RX_LM_HD A weight(int64_t k) const { return w ? w[k] : static_cast<A>(1); }
};

// topk_mean's order of a group's valid entries: by key (the entry's logit) descending, nan above
// every number, equal keys by position k. key_before(a, ka, b, kb): entry (a, ka) comes first.
template <typename A>
RX_LM_HD bool key_greater(A a, A b) { return a > b || (a != a && b == b); }
template <typename A>
RX_LM_HD bool key_before(A a, int64_t ka, A b, int64_t kb) {
  return key_greater(a, b) || (!key_greater(b, a) && ka < kb);
}

// The topk-th entry of that order (the last valid one when the group has fewer; k = -1 when it has
// none): entry k is among the top iff it is the cut or comes before it. topk passes over the group,
// each taking the first entry after the previous cut (no storage: GPU threads call it).
template <typename A>
struct TopCut {
  A key;
  int64_t k;
};

template <typename A, typename F>
RX_LM_HD TopCut<A> top_cut(const Group<A>& g, F key) {
  TopCut<A> cut{static_cast<A>(0), -1};
  for (int64_t i = 0; i < g.topk; ++i) {
    TopCut<A> best{static_cast<A>(0), -1};
    for (int64_t k = 0; k < g.K; ++k) {
      if (!g.valid(k)) continue;
      const A v = key(k);
      if (cut.k >= 0 && !key_before(cut.key, cut.k, v, k)) continue;  // at or before the cut: taken
      if (best.k < 0 || key_before(v, k, best.key, best.k)) best = TopCut<A>{v, k};
    }
    if (best.k < 0) break;
    cut = best;
  }
  return cut;
}

// Whether entry k (its key `key`) takes part in the reduce's value: the selected k of a reduce
// that selects one (max: `arg`), an entry among the top for topk_mean (`arg`, `cut_key`: its cut).
// sum and mean use every valid entry and ignore it.
template <Reduce R, typename A>
RX_LM_HD bool chosen(int64_t arg, A cut_key, A key, int64_t k) {
  if constexpr (Reducer<R>::kSelectsTop) {
    return arg >= 0 && (k == arg || key_before(key, k, cut_key, arg));
  } else {
    return k == arg;
  }
}

// label_map's reduction of one group on values v_{s_k} = pre(x_{s_k}).
template <typename A>
struct GroupValue {
  A out;       // out_t
  A wsum;      // sum of the weights the reduce used (the mean's denominator)
  int64_t arg; // the k the reduce selected (first maximal k of max; topk_mean: the cut), else -1
  A cut_key;   // topk_mean: the cut's key (see chosen())
};

// Reducer<R> over u_k = w_k * value(k) of the group's valid k (topk_mean: its top entries by
// key(k)): acc, wsum = sum_k w_k, and the selected k (arg, -1 if none) with cut_key.
template <Reduce R, typename A, typename F, typename Key>
RX_LM_HD void reduce_group(const Group<A>& g, F value, Key key, A& acc, A& wsum, int64_t& arg, A& cut_key) {
  acc = Reducer<R>::template init<A>();
  wsum = 0;
  arg = -1;
  cut_key = 0;
  if constexpr (Reducer<R>::kSelectsTop) {
    const TopCut<A> cut = top_cut(g, key);
    arg = cut.k;
    cut_key = cut.key;
  }
  for (int64_t k = 0; k < g.K; ++k) {
    if (!g.valid(k)) continue;
    if constexpr (Reducer<R>::kSelectsTop) {
      if (!chosen<R>(arg, cut_key, key(k), k)) continue;
    }
    const A w = g.weight(k);
    wsum += w;
    Reducer<R>::update(acc, arg, w * value(k), k);
  }
}

// The key of entry k: its logit (pre is increasing, so the top entries by logit are the top by
// value; ties are decided on the logits on every backend).
template <typename A, typename scalar_t>
struct LogitKey {
  const scalar_t* x;
  const int64_t* src;
  RX_LM_HD A operator()(int64_t k) const { return static_cast<A>(x[src[k]]); }
};

template <Reduce R, typename A, typename scalar_t>
RX_LM_HD GroupValue<A> group_value(const scalar_t* x, const Group<A>& g, Pre pre, const RowNorm<A>& lse) {
  GroupValue<A> r;
  reduce_group<R>(g, [&](int64_t k) { return pre_value(static_cast<A>(x[g.src[k]]), pre, lse); },
                  LogitKey<A, scalar_t>{x, g.src}, r.out, r.wsum, r.arg, r.cut_key);
  r.out = Reducer<R>::finish(r.out, r.wsum);
  return r;
}

// d out_t / d v_{s_k}: the coefficient c_k of source k in target t's reduction (key: its logit).
template <Reduce R, typename A>
RX_LM_HD A value_coefficient(const Group<A>& g, const GroupValue<A>& gv, int64_t k, A key) {
  return Reducer<R>::coefficient(g.weight(k), gv.wsum, chosen<R>(gv.arg, gv.cut_key, key, k));
}

// d out_t / d w_k, given v_k = pre(x_{s_k}) and its logit `key`.
template <Reduce R, typename A>
RX_LM_HD A value_weight_derivative(const GroupValue<A>& gv, int64_t k, A v, A key) {
  return Reducer<R>::weight_derivative(v, gv.out, gv.wsum, chosen<R>(gv.arg, gv.cut_key, key, k));
}

// pre softmax in log space: L_t + lse = m + log(R) - log_norm(wsum) (log wsum for mean), where
// R = reduce_k w_k e_k (the sum, or the max), e_k = exp(x_{s_k} - m).
template <typename A>
struct GroupLog {
  A L;         // log out_t + lse - shift
  A m, R, wsum;
  int64_t arg; // the k the reduce selected (first maximal k of max; topk_mean: the cut), else -1
  A cut_key;   // topk_mean: the cut's key (see chosen())
};

// `shift` is subtracted from L (cross-entropy ignores a per-row constant): pass the row's largest
// mapped logit so that L stays small and the loss does not cancel large numbers in float32.
template <Reduce R, typename A, typename scalar_t>
RX_LM_HD GroupLog<A> group_log_prob(const scalar_t* x, const Group<A>& g, A shift) {
  GroupLog<A> r;
  r.m = -static_cast<A>(INFINITY);
  for (int64_t k = 0; k < g.K; ++k) {
    if (g.valid(k)) {
      const A xv = static_cast<A>(x[g.src[k]]);
      r.m = xv > r.m ? xv : r.m;
    }
  }
  if (r.m == -static_cast<A>(INFINITY)) r.m = 0;  // every source at -inf: keep e_k = 0, not NaN
  reduce_group<R>(g, [&](int64_t k) { return exp_f(static_cast<A>(x[g.src[k]]) - r.m); },
                  LogitKey<A, scalar_t>{x, g.src}, r.R, r.wsum, r.arg, r.cut_key);
  r.L = (r.m - shift) + log(r.R) - Reducer<R>::log_norm(r.wsum);
  return r;
}

// The largest finite value of v[0, n), or 0 when there is none.
// (Branch-free and a SIMD max reduction on the host: a data-dependent branch here cost a
// misprediction every few entries, a scalar select chain ~8 cycles per entry.)
template <typename A>
RX_LM_HD A finite_max(const A* v, int64_t n) {
  A m = -static_cast<A>(INFINITY);
#ifndef __CUDA_ARCH__
#pragma omp simd reduction(max : m)
#endif
  for (int64_t i = 0; i < n; ++i) {
    const A x = v[i] < static_cast<A>(INFINITY) ? v[i] : -static_cast<A>(INFINITY);  // +inf, NaN: skipped
    m = x > m ? x : m;
  }
  return m == -static_cast<A>(INFINITY) ? static_cast<A>(0) : m;
}

// Responsibility of source k in a log-space group: d L_t / d x_{s_k} without the -p_j term,
// = w_k e_k / R ([k == arg] for a reduce that selects one entry).
// (topk_mean: 0 for the entries outside the top.)
template <Reduce R, typename A, typename scalar_t>
RX_LM_HD A log_group_responsibility(const scalar_t* x, const Group<A>& g, const GroupLog<A>& gl, int64_t k) {
  if constexpr (Reducer<R>::kSelectsOne) {
    return k == gl.arg ? static_cast<A>(1) : static_cast<A>(0);
  } else {
    const A xk = static_cast<A>(x[g.src[k]]);
    if constexpr (Reducer<R>::kSelectsTop) {
      if (!chosen<R>(gl.arg, gl.cut_key, xk, k)) return static_cast<A>(0);
    }
    return g.weight(k) * exp_f(xk - gl.m) / gl.R;
  }
}

// d L_t / d w_k of a log-space group (Reducer::log_weight_derivative of e_k / R).
template <Reduce R, typename A, typename scalar_t>
RX_LM_HD A log_group_weight_derivative(const scalar_t* x, const Group<A>& g, const GroupLog<A>& gl, int64_t k) {
  const A xk = static_cast<A>(x[g.src[k]]);
  const A e = exp_f(xk - gl.m);
  return Reducer<R>::log_weight_derivative(e / gl.R, gl.wsum, chosen<R>(gl.arg, gl.cut_key, xk, k));
}

// Whether mapped_cross_entropy needs the row's lse: only when L_t carries -c_t * lse with c_t
// differing between targets (c_t = sum_k of value_coefficient; Reducer::lse_varies), which only
// pre log_softmax does: none has no lse, softmax is computed in log space where it cancels.
// Host only; options.py's ce_needs_lse is its one Python mirror (fake kernels, Triton launcher).
inline bool ce_needs_lse(Pre pre, Reduce reduce, bool weighted) {
  return pre == Pre::kLogSoftmax &&
         dispatch(reduce, [&](auto R) { return Reducer<decltype(R)::value>::lse_varies(weighted); });
}

// Whether label_map's output needs the row's lse (any pre but none).
RX_LM_HD bool map_needs_lse(Pre pre) { return pre != Pre::kNone; }

// Row normaliser from its max and sum_j exp(x_j - max).
template <typename A>
RX_LM_HD RowNorm<A> row_norm_from(A row_max, A sum_exp) {
  return RowNorm<A>{row_max, static_cast<A>(log(sum_exp))};
}

// log-sum-exp from a max and sum_j exp(x_j - max) (an infinite max is returned as is).
template <typename A>
RX_LM_HD A lse_from(A row_max, A sum_exp) {
  if (row_max == -static_cast<A>(INFINITY) || row_max == static_cast<A>(INFINITY)) return row_max;
  return row_max + log(sum_exp);
}

// Cross-entropy of one row from logsumexp_t(L) and the two sums it needs.
//   loss = -(1 - eps)(L_y - lseL) - eps / T * (sum_t L_t - T * lseL)
template <typename A>
RX_LM_HD A ce_loss(A L_target, A sum_L, A lse_L, int64_t T, A eps) {
  const A nll = lse_L - L_target;
  if (eps == static_cast<A>(0)) return nll;
  const A smooth = lse_L - sum_L / static_cast<A>(T);
  return (static_cast<A>(1) - eps) * nll + eps * smooth;
}

// d loss / d L_t, times the row's scale (the upstream gradient of this row's loss).
// `q` = softmax_t(L) = exp(L_t - lseL).
template <typename A>
RX_LM_HD A ce_logit_grad_q(A q, bool is_target, int64_t T, A eps, A scale) {
  const A onehot = is_target ? static_cast<A>(1) - eps : static_cast<A>(0);
  return scale * (q - onehot - eps / static_cast<A>(T));
}

template <typename A>
RX_LM_HD A ce_logit_grad(A L_t, A lse_L, bool is_target, int64_t T, A eps, A scale) {
  return ce_logit_grad_q(exp_f(L_t - lse_L), is_target, T, eps, scale);
}

// Deterministic batch chunks of the weight-gradient reduction: a function of the shape only, so
// CPU and CUDA sum the per-row contributions in the same order.
RX_LM_HD int64_t weight_grad_chunks(int64_t N, int64_t TK) {
  if (N <= 1) return 1;
  const int64_t target = 1 << 14;
  int64_t n = (target + TK - 1) / (TK > 0 ? TK : 1);
  if (n > N) n = N;
  if (n > 64) n = 64;
  return n < 1 ? 1 : n;
}
RX_LM_HD int64_t chunk_begin(int64_t N, int64_t chunks, int64_t j) { return (N * j) / chunks; }

}  // namespace label_map
}  // namespace reprogram_ext
