// The options of label_map / mapped_cross_entropy, defined once for the C++ side (formulas:
// docs/ops/label_map.md; the Python side's vocabulary: reprogram_ext/ops/label_map/options.py).
//
// The op schemas take `str reduce, str pre` (csrc/schemas.cpp). parse_reduce / parse_pre turn the
// strings into these enums once per call; dispatch_reduce turns a Reduce into a compile-time
// constant for the kernels, in the manner of pytorch_scatter's AT_DISPATCH_REDUCTION_TYPES (the
// CPU and CUDA kernels are templates on it); Reducer<R> holds each reduce's math, which the group
// functions of math.h call. `pre` stays a run-time value: it picks per-row passes (the row's
// log-sum-exp, one vector pass of pre over the gathered logits), not per-entry math of the loops.
//
// Adding a reduce: its line in RX_LM_REDUCES and its Reducer here, its name and reference in
// options.py, its tile-wise form in triton_kernels.py (plus tests).
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace reprogram_ext {
namespace label_map {

#define RX_LM_HD C10_HOST_DEVICE inline

// The option lists: X(enumerator, name). The names are the schemas' strings.
#define RX_LM_REDUCES(X) X(kSum, "sum") X(kMean, "mean") X(kMax, "max")
#define RX_LM_PRES(X) X(kNone, "none") X(kSoftmax, "softmax") X(kLogSoftmax, "log_softmax")

#define RX_LM_ENUMERATOR(e, name) e,
#define RX_LM_NAME(e, name) name,
enum class Reduce : int { RX_LM_REDUCES(RX_LM_ENUMERATOR) };
enum class Pre : int { RX_LM_PRES(RX_LM_ENUMERATOR) };
inline constexpr const char* kReduceNames[] = {RX_LM_REDUCES(RX_LM_NAME)};
inline constexpr const char* kPreNames[] = {RX_LM_PRES(RX_LM_NAME)};
#undef RX_LM_ENUMERATOR
#undef RX_LM_NAME

namespace detail {
// The enumerator named `given` (enumerators count 0, 1, ... in list order), or a ValueError:
// "<op>: <arg> must be one of ('sum', 'mean', 'max'), got 'x'" (the Python front end's words).
template <typename E, std::size_t N>
E parse_option(const char* op, const char* arg, c10::string_view given, const char* const (&names)[N]) {
  for (std::size_t i = 0; i < N; ++i) {
    if (given == names[i]) return static_cast<E>(i);
  }
  std::string allowed;
  for (std::size_t i = 0; i < N; ++i) allowed += std::string(i ? ", '" : "'") + names[i] + "'";
  TORCH_CHECK_VALUE(false, op, ": ", arg, " must be one of (", allowed, "), got '", std::string(given), "'");
}
}  // namespace detail

// `op` names the public op in the error ("label_map" / "mapped_cross_entropy").
inline Reduce parse_reduce(const char* op, c10::string_view reduce) {
  return detail::parse_option<Reduce>(op, "reduce", reduce, kReduceNames);
}
inline Pre parse_pre(const char* op, c10::string_view pre) {
  return detail::parse_option<Pre>(op, "pre", pre, kPreNames);
}

// Calls f(std::integral_constant<Reduce, reduce>{}), so that the reduce is a constant in f:
//   dispatch_reduce(p.reduce, [&](auto R) { kernel<scalar_t, decltype(R)::value>(...); });
template <typename F>
decltype(auto) dispatch_reduce(Reduce reduce, F&& f) {
  switch (reduce) {
#define RX_LM_DISPATCH_CASE(e, name) \
  case Reduce::e:                    \
    return f(std::integral_constant<Reduce, Reduce::e>{});
    RX_LM_REDUCES(RX_LM_DISPATCH_CASE)
#undef RX_LM_DISPATCH_CASE
  }
  TORCH_CHECK(false, "label_map: unknown reduce ", static_cast<int>(reduce));
}

// Each reduce's math over one target's weighted values u_k = w_k v_k (its valid k only), in the
// manner of pytorch_scatter's Reducer:
//   init(), update(acc, arg, u, k)   the running reduction (arg: the k it selected; stays -1 if none)
//   finish(acc, wsum)                out_t (wsum = sum_k w_k)
//   log_norm(wsum)                   subtracted from log(acc) in log space (pre softmax in the loss)
//   coefficient(w, wsum, is_arg)     d out_t / d v_k      (is_arg: k == arg)
//   weight_derivative(v, out, wsum, is_arg)    d out_t / d w_k
//   log_weight_derivative(e_R, wsum, is_arg)   d L_t / d w_k in log space, e_R = e_k / acc
//   kSelectsOne    out_t is one entry's u (log space: d L_t / d x_k = [k == arg])
//   kSumOfTerms    acc = sum_k u_k (the CPU loss's table path for pre softmax takes these)
//   lse_varies(weighted)  whether c_t = sum_k coefficient differs between targets, so that pre
//                         log_softmax's -c_t * lse does not cancel in the loss (ce_needs_lse)
template <Reduce R>
struct Reducer;

template <>
struct Reducer<Reduce::kSum> {
  static constexpr bool kSelectsOne = false, kSumOfTerms = true;
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
  static constexpr bool kSelectsOne = false, kSumOfTerms = true;
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
  static constexpr bool kSelectsOne = true, kSumOfTerms = false;
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

}  // namespace label_map
}  // namespace reprogram_ext
