// Autograd of the compiled (C++ CPU and CUDA) label_map / mapped_cross_entropy forward ops, in C++.
//
// The same contract as reprogram_ext/ops/label_map/autograd.py (which does this for the Triton
// ops through torch.library.register_autograd): the backward of each forward op is its registered
// backward op; the auxiliary outputs (label_map's row_lse, mapped_cross_entropy's unit_grad and
// dense) are saved for it and are not differentiable; no zero gradients are materialised for them.
// Written in C++ because these ops are called per step on small tensors: the Python autograd
// wrapper cost ~0.1 ms per forward+backward, as much as the kernels themselves at 1000 -> 10
// classes (bench/notes/label_map.md).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

namespace reprogram_ext {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The backward ops are not themselves differentiable: with create_graph=True the backward refuses
// instead of returning gradients whose second-order terms would silently be missing (the same text
// as the Python autograd of the Triton ops, reprogram_ext/ops/label_map/autograd.py).
constexpr const char* kNoDoubleBackwardSuffix =
    ": higher-order gradients are not supported (the backward was asked to build a graph, "
    "create_graph=True); use backend=\"reference\" for double backward";

// `weight` round-trips through save_for_backward as an undefined tensor when absent.
std::optional<Tensor> optional_of(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// The forward's output kept by LabelMapFunction, if it is still what the forward wrote (its version
// unchanged since); otherwise none, and the backward gathers the mapped logits instead.
std::optional<Tensor> unchanged_output(AutogradContext* ctx) {
  if (ctx->saved_data.find("out") == ctx->saved_data.end()) return std::nullopt;
  Tensor out = ctx->saved_data["out"].toTensor();
  if (static_cast<int64_t>(out._version()) != ctx->saved_data["out_version"].toInt()) return std::nullopt;
  return out;
}

class LabelMapFunction : public torch::autograd::Function<LabelMapFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& index,
                               const std::optional<Tensor>& weight, c10::string_view reduce,
                               c10::string_view pre, int64_t topk) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("reprogram_ext::label_map_forward", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                                                           c10::string_view, c10::string_view, int64_t)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, row_lse] = op.call(logits, index, weight, reduce, pre, topk);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({row_lse});
    // The CUDA backward of reduce sum / mean with pre softmax (float32 / float64) reads the output
    // instead of the mapped logits (label_map_backward's forward_out). It is kept as an alias without
    // autograd history (no reference cycle with the output's node) and with its version, not through
    // save_for_backward: an in-place change of the output (out /= t) must not make the backward fail;
    // it only sends the backward to the kernel that gathers the mapped logits. Kept on every device
    // (the CPU kernel checks and ignores forward_out), so that CPU tests run this code too.
    const bool keep_out = pre == "softmax" && (reduce == "sum" || reduce == "mean") &&
                          (logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble);
    ctx->save_for_backward({logits, index, weight.value_or(Tensor()), row_lse});
    if (keep_out) {
      // An alias of the output's storage that shares its version counter (set explicitly: below the
      // ADInplaceOrView key an alias would get a counter of its own and miss the user's writes).
      Tensor alias = out.alias();
      alias.unsafeGetTensorImpl()->set_version_counter(out.unsafeGetTensorImpl()->version_counter());
      ctx->saved_data["out"] = alias;
      ctx->saved_data["out_version"] = static_cast<int64_t>(out._version());
    }
    ctx->saved_data["reduce"] = std::string(reduce);
    ctx->saved_data["pre"] = std::string(pre);
    ctx->saved_data["topk"] = topk;
    return {out, row_lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("reprogram_ext::label_map_backward", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                           const std::optional<Tensor>&, const Tensor&,
                                                           c10::string_view, c10::string_view, bool, int64_t,
                                                           const std::optional<Tensor>&)>();
    if (!grads[0].defined()) return variable_list(6);
    TORCH_CHECK(!at::GradMode::is_enabled(), "label_map", kNoDoubleBackwardSuffix);
    const auto saved = ctx->get_saved_variables();
    const std::optional<Tensor> weight = optional_of(saved[2]);
    const bool need_w = weight.has_value() && ctx->needs_input_grad(2);
    auto [grad, gw] = op.call(grads[0].contiguous(), saved[0], saved[1], weight, saved[3],
                              ctx->saved_data["reduce"].toStringRef(), ctx->saved_data["pre"].toStringRef(), need_w,
                              ctx->saved_data["topk"].toInt(), unchanged_output(ctx));
    return {grad, Tensor(), need_w ? gw : Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

class MappedCrossEntropyFunction : public torch::autograd::Function<MappedCrossEntropyFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, const Tensor& index,
                               const std::optional<Tensor>& weight, c10::string_view reduce,
                               c10::string_view pre, double label_smoothing, int64_t ignore_index, int64_t topk) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("reprogram_ext::mapped_cross_entropy_forward", "")
                         .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                                   const std::optional<Tensor>&, c10::string_view,
                                                                   c10::string_view, double, int64_t, int64_t)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, unit_grad, dense] =
        op.call(logits, target, index, weight, reduce, pre, label_smoothing, ignore_index, topk);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({unit_grad, dense});
    ctx->save_for_backward({logits, target, index, weight.value_or(Tensor()), unit_grad, dense});
    ctx->saved_data["reduce"] = std::string(reduce);
    ctx->saved_data["pre"] = std::string(pre);
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["topk"] = topk;
    return {loss, unit_grad, dense};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("reprogram_ext::mapped_cross_entropy_backward", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                           const std::optional<Tensor>&, const Tensor&, const Tensor&,
                                                           c10::string_view, c10::string_view, double, int64_t,
                                                           bool, int64_t)>();
    if (!grads[0].defined()) return variable_list(9);
    TORCH_CHECK(!at::GradMode::is_enabled(), "mapped_cross_entropy", kNoDoubleBackwardSuffix);
    const auto saved = ctx->get_saved_variables();
    const std::optional<Tensor> weight = optional_of(saved[3]);
    const bool need_w = weight.has_value() && ctx->needs_input_grad(3);
    auto [grad, gw] = op.call(grads[0].contiguous(), saved[0], saved[1], saved[2], weight, saved[4], saved[5],
                              ctx->saved_data["reduce"].toStringRef(), ctx->saved_data["pre"].toStringRef(),
                              ctx->saved_data["label_smoothing"].toDouble(),
                              ctx->saved_data["ignore_index"].toInt(), need_w, ctx->saved_data["topk"].toInt());
    variable_list out(9);
    out[0] = grad;
    if (need_w) out[3] = gw;
    return out;
  }
};

std::tuple<Tensor, Tensor> label_map_forward_autograd(const Tensor& logits, const Tensor& index,
                                                      const std::optional<Tensor>& weight, c10::string_view reduce,
                                                      c10::string_view pre, int64_t topk) {
  auto out = LabelMapFunction::apply(logits, index, weight, reduce, pre, topk);
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor, Tensor> mapped_cross_entropy_forward_autograd(const Tensor& logits, const Tensor& target,
                                                                         const Tensor& index,
                                                                         const std::optional<Tensor>& weight,
                                                                         c10::string_view reduce, c10::string_view pre,
                                                                         double label_smoothing, int64_t ignore_index,
                                                                         int64_t topk) {
  auto out = MappedCrossEntropyFunction::apply(logits, target, index, weight, reduce, pre, label_smoothing,
                                               ignore_index, topk);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, Autograd, m) {
  m.impl("label_map_forward", &label_map_forward_autograd);
  m.impl("mapped_cross_entropy_forward", &mapped_cross_entropy_forward_autograd);
}

}  // namespace reprogram_ext
