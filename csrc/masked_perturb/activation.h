// The activations of masked_perturb's program: their names, formulas and derivatives, in one file.
//
// act(d): none = d; tanh = 1 - 2 / (1 + e^(2d)); sigmoid = 1 / (1 + e^-d); relu = max(d, 0)
// (NaN passes through). tanh and sigmoid are written through exp_f
// (common/exp_f.h: expf on the device, a branch-free polynomial on the host) so that the CPU row
// loops vectorise; within ~1e-7 (float) of tanh and the logistic function, exact at d = 0 and
// saturating for large |d|. 1 / y is reciprocal() (masked_perturb/reciprocal.h: no slow-path call
// on the device; a subnormal result flushes to 0 there). In double, tanh is the library's tanh:
// 1 - 2 / (1 + e^(2d)) cancels for small |d| (relative error ~eps / |d|), beyond float64's 1e-12.
// The derivative is written with the activated value a = act(d).
//
// Adding an activation: its entry in RX_MASKED_PERTURB_ACTIVATIONS and its two formulas here, its
// name and reference formula in reprogram_ext/ops/masked_perturb/options.py, its formula in
// reprogram_ext/ops/masked_perturb/triton_kernels.py.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <type_traits>

#include "common/exp_f.h"
#include "common/option_list.h"
#include "masked_perturb/reciprocal.h"

namespace reprogram_ext {

#define RX_MASKED_PERTURB_ACTIVATIONS(X, E) \
  X(E, kNone, "none") X(E, kTanh, "tanh") X(E, kSigmoid, "sigmoid") X(E, kRelu, "relu")
RX_DEFINE_OPTION(Activation, RX_MASKED_PERTURB_ACTIVATIONS, "masked_perturb", "activation")

template <Activation A, typename acc_t>
C10_HOST_DEVICE inline acc_t activate(acc_t d) {
  const acc_t one(1), two(2);
  if constexpr (A == Activation::kTanh && std::is_same_v<acc_t, double>) {
    return tanh(d);
  } else if constexpr (A == Activation::kTanh) {
    return one - two * reciprocal(one + exp_f(two * d));  // 2 * (1 / y) == 2 / y exactly
  } else if constexpr (A == Activation::kSigmoid) {
    return reciprocal(one + exp_f(-d));
  } else if constexpr (A == Activation::kRelu) {
    return d < 0 ? static_cast<acc_t>(0) : d;
  } else {
    return d;
  }
}

// d act / d delta, from a = act(delta).
template <Activation A, typename acc_t>
C10_HOST_DEVICE inline acc_t activation_derivative(acc_t a) {
  if constexpr (A == Activation::kTanh) {
    return static_cast<acc_t>(1) - a * a;
  } else if constexpr (A == Activation::kSigmoid) {
    return a * (static_cast<acc_t>(1) - a);
  } else if constexpr (A == Activation::kRelu) {
    return a > 0 ? static_cast<acc_t>(1) : static_cast<acc_t>(0);
  } else {
    return static_cast<acc_t>(1);
  }
}

}  // namespace reprogram_ext
