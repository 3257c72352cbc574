// The options of label_map / mapped_cross_entropy, defined once for the C++ side (formulas:
// docs/ops/label_map.md; the Python side's vocabulary: reprogram_ext/ops/label_map/options.py).
//
// The op schemas take `str reduce, str pre` (csrc/schemas.cpp). common/option_list.h makes each
// list below an enum with parse_Reduce / parse_Pre (the strings, parsed once per call: a
// ValueError naming the argument, the allowed names and what was given) and dispatch(Reduce, f),
// the one switch that turns the reduce into a compile-time constant for the kernels (in the
// manner of pytorch_scatter's AT_DISPATCH_REDUCTION_TYPES; the CPU and CUDA kernels are templates
// on it). Reducer<R> holds each reduce's math, which the group functions of math.h call. `pre`
// stays a run-time value: it picks per-row passes (the row's log-sum-exp, one vector pass of pre
// over the gathered logits), not per-entry math of the loops.
//
// Adding a reduce: its entry in RX_LABEL_MAP_REDUCES and its Reducer here, its name and reference
// in options.py, its tile-wise form in triton_kernels.py (plus tests).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "common/option_list.h"

namespace reprogram_ext {
namespace label_map {

#define RX_LM_HD C10_HOST_DEVICE inline

#define RX_LABEL_MAP_REDUCES(X, E) \
  X(E, kSum, "sum") X(E, kMean, "mean") X(E, kMax, "max") X(E, kTopkMean, "topk_mean")
RX_DEFINE_OPTION(Reduce, RX_LABEL_MAP_REDUCES, "label_map", "reduce")

#define RX_LABEL_MAP_PRES(X, E) X(E, kNone, "none") X(E, kSoftmax, "softmax") X(E, kLogSoftmax, "log_softmax")
RX_DEFINE_OPTION(Pre, RX_LABEL_MAP_PRES, "label_map", "pre")

// Each reduce's math over one target's weighted values u_k = w_k v_k (its valid k only), in the
// manner of pytorch_scatter's Reducer:
//   init(), update(acc, arg, u, k)   the running reduction (arg: the k it selected; stays -1 if none)
//   finish(acc, wsum)                out_t (wsum = sum_k w_k over the entries update() saw)
//   log_norm(wsum)                   subtracted from log(acc) in log space (pre softmax in the loss)
//   coefficient(w, wsum, chosen)     d out_t / d v_k      (chosen: math.h chosen(): k == arg for
//                                    max, k among the top k for topk_mean; sum/mean ignore it)
//   weight_derivative(v, out, wsum, chosen)    d out_t / d w_k
//   log_weight_derivative(e_R, wsum, chosen)   d L_t / d w_k in log space, e_R = e_k / acc
//   kSelectsOne    out_t is one entry's u (log space: d L_t / d x_k = [k == arg])
//   kSelectsTop    update() sees only the group's topk largest entries (math.h top_cut)
//   kSumOfTerms    acc = sum_k u_k over every valid k (the CPU loss's table path for pre softmax
//                  takes these)
//   lse_varies(weighted)  whether c_t = sum_k coefficient differs between targets, so that pre
//                         log_softmax's -c_t * lse does not cancel in the loss (ce_needs_lse)
template <Reduce R>
struct Reducer;

template <>
struct Reducer<Reduce::kSum> {
  static constexpr bool kSelectsOne = false, kSelectsTop = false, kSumOfTerms = true;
  template <typename A> static RX_LM_HD A init() { return static_cast<A>(0); }
  template <typename A> static RX_LM_HD void update(A& acc, int64_t&, A u, int64_t) { acc += u; }
  template <typename A> static RX_LM_HD A finish(A acc, A) { return acc; }
  template <typename A> static RX_LM_HD A log_norm(A) { return static_cast<A>(0); }
  template <typename A> static RX_LM_HD A coefficient(A w, A, bool) { return w; }
  template <typename A> static RX_LM_HD A weight_derivative(A v, A, A, bool) { return v; }
  template <typename A> static RX_LM_HD A log_weight_derivative(A e_R, A, bool) { return e_R; }
  static constexpr bool lse_varies(bool) { return true; }
};

template <>
struct Reducer<Reduce::kMean> {
  static constexpr bool kSelectsOne = false, kSelectsTop = false, kSumOfTerms = true;
  template <typename A> static RX_LM_HD A init() { return static_cast<A>(0); }
  template <typename A> static RX_LM_HD void update(A& acc, int64_t&, A u, int64_t) { acc += u; }
  template <typename A> static RX_LM_HD A finish(A acc, A wsum) { return acc / wsum; }
  template <typename A> static RX_LM_HD A log_norm(A wsum) { return static_cast<A>(log(wsum)); }
  template <typename A> static RX_LM_HD A coefficient(A w, A wsum, bool) { return w / wsum; }
  template <typename A> static RX_LM_HD A weight_derivative(A v, A out, A wsum, bool) { return (v - out) / wsum; }
  template <typename A> static RX_LM_HD A log_weight_derivative(A e_R, A wsum, bool) {
    return e_R - static_cast<A>(1) / wsum;
  }
  static constexpr bool lse_varies(bool) { return false; }
};

template <>
struct Reducer<Reduce::kMax> {  // the first maximal k wins
  static constexpr bool kSelectsOne = true, kSelectsTop = false, kSumOfTerms = false;
  template <typename A> static RX_LM_HD A init() { return -static_cast<A>(INFINITY); }
  template <typename A> static RX_LM_HD void update(A& acc, int64_t& arg, A u, int64_t k) {
    if (arg < 0 || u > acc) {
      acc = u;
      arg = k;
    }
  }
  template <typename A> static RX_LM_HD A finish(A acc, A) { return acc; }
  template <typename A> static RX_LM_HD A log_norm(A) { return static_cast<A>(0); }
  template <typename A> static RX_LM_HD A coefficient(A w, A, bool is_arg) { return is_arg ? w : static_cast<A>(0); }
  template <typename A> static RX_LM_HD A weight_derivative(A v, A, A, bool is_arg) {
    return is_arg ? v : static_cast<A>(0);
  }
  template <typename A> static RX_LM_HD A log_weight_derivative(A e_R, A, bool is_arg) {
    return is_arg ? e_R : static_cast<A>(0);
  }
  static constexpr bool lse_varies(bool weighted) { return weighted; }
};

// The mean over the group's topk largest entries (math.h top_cut: ties to the lower k, nan the
// largest): update() sees only those, so wsum = topk (the op takes no weight with topk_mean).
template <>
struct Reducer<Reduce::kTopkMean> {
  static constexpr bool kSelectsOne = false, kSelectsTop = true, kSumOfTerms = false;
  template <typename A> static RX_LM_HD A init() { return static_cast<A>(0); }
  template <typename A> static RX_LM_HD void update(A& acc, int64_t&, A u, int64_t) { acc += u; }
  template <typename A> static RX_LM_HD A finish(A acc, A wsum) { return acc / wsum; }
  template <typename A> static RX_LM_HD A log_norm(A wsum) { return static_cast<A>(log(wsum)); }
  template <typename A> static RX_LM_HD A coefficient(A w, A wsum, bool chosen) {
    return chosen ? w / wsum : static_cast<A>(0);
  }
  template <typename A> static RX_LM_HD A weight_derivative(A v, A out, A wsum, bool chosen) {
    return chosen ? (v - out) / wsum : static_cast<A>(0);
  }
  template <typename A> static RX_LM_HD A log_weight_derivative(A e_R, A wsum, bool chosen) {
    return chosen ? e_R - static_cast<A>(1) / wsum : static_cast<A>(0);
  }
  static constexpr bool lse_varies(bool weighted) { return weighted; }
};

}  // namespace label_map
}  // namespace reprogram_ext
