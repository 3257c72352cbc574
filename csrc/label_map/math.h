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
  RX_LM_HD bool valid(int64_t k) const { return src[k] >= 0 && src[k] < S; }
  RX_LM_HD A weight(int64_t k) const { return w ? w[k] : static_cast<A>(1); }
};

// label_map's reduction of one group on values v_{s_k} = pre(x_{s_k}).
template <typename A>
struct GroupValue {
  A out;       // out_t
  A wsum;      // sum of the valid weights (the mean's denominator)
  int64_t arg; // the k the reduce selected (first maximal k of max), else -1
};

// Reducer<R> over u_k = w_k * value(k) of the group's valid k: acc, wsum = sum_k w_k, and the
// selected k (arg, -1 if none).
template <Reduce R, typename A, typename F>
RX_LM_HD void reduce_group(const Group<A>& g, F value, A& acc, A& wsum, int64_t& arg) {
  acc = Reducer<R>::template init<A>();
  wsum = 0;
  arg = -1;
  for (int64_t k = 0; k < g.K; ++k) {
    if (!g.valid(k)) continue;
    const A w = g.weight(k);
    wsum += w;
    Reducer<R>::update(acc, arg, w * value(k), k);
  }
}

template <Reduce R, typename A, typename scalar_t>
RX_LM_HD GroupValue<A> group_value(const scalar_t* x, const Group<A>& g, Pre pre, const RowNorm<A>& lse) {
  GroupValue<A> r;
  reduce_group<R>(g, [&](int64_t k) { return pre_value(static_cast<A>(x[g.src[k]]), pre, lse); }, r.out, r.wsum,
                  r.arg);
  r.out = Reducer<R>::finish(r.out, r.wsum);
  return r;
}

// d out_t / d v_{s_k}: the coefficient c_k of source k in target t's reduction.
template <Reduce R, typename A>
RX_LM_HD A value_coefficient(const Group<A>& g, const GroupValue<A>& gv, int64_t k) {
  return Reducer<R>::coefficient(g.weight(k), gv.wsum, k == gv.arg);
}

// d out_t / d w_k, given v_k = pre(x_{s_k}).
template <Reduce R, typename A>
RX_LM_HD A value_weight_derivative(const GroupValue<A>& gv, int64_t k, A v) {
  return Reducer<R>::weight_derivative(v, gv.out, gv.wsum, k == gv.arg);
}

// pre softmax in log space: L_t + lse = m + log(R) - log_norm(wsum) (log wsum for mean), where
// R = reduce_k w_k e_k (the sum, or the max), e_k = exp(x_{s_k} - m).
template <typename A>
struct GroupLog {
  A L;         // log out_t + lse - shift
  A m, R, wsum;
  int64_t arg; // the k the reduce selected (first maximal k of max), else -1
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
  reduce_group<R>(g, [&](int64_t k) { return exp_f(static_cast<A>(x[g.src[k]]) - r.m); }, r.R, r.wsum, r.arg);
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
template <Reduce R, typename A, typename scalar_t>
RX_LM_HD A log_group_responsibility(const scalar_t* x, const Group<A>& g, const GroupLog<A>& gl, int64_t k) {
  if constexpr (Reducer<R>::kSelectsOne) {
    return k == gl.arg ? static_cast<A>(1) : static_cast<A>(0);
  } else {
    return g.weight(k) * exp_f(static_cast<A>(x[g.src[k]]) - gl.m) / gl.R;
  }
}

// d L_t / d w_k of a log-space group (Reducer::log_weight_derivative of e_k / R).
template <Reduce R, typename A, typename scalar_t>
RX_LM_HD A log_group_weight_derivative(const scalar_t* x, const Group<A>& g, const GroupLog<A>& gl, int64_t k) {
  const A e = exp_f(static_cast<A>(x[g.src[k]]) - gl.m);
  return Reducer<R>::log_weight_derivative(e / gl.R, gl.wsum, k == gl.arg);
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
