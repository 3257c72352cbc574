// Autograd of the compiled (C++ CPU and CUDA) masked_perturb forward op, in C++.
//
// The same contract as reprogram_ext/ops/masked_perturb/autograd.py, which does this for the
// Triton op through torch.library.register_autograd (that backend must work without this library): the backward runs the registered
// masked_perturb_backward op, which returns canvas-resolution partials for delta and x and the mask's at
// mask resolution (float32; float64 for float64 tensors; a prompt bank's x / mask partials summed over
// its V programs), and reduces them with plain aten ops to each input's shape and dtype:
//   grad_delta: summed over channels when delta has one channel;
//   grad_mask : [Bm, Cm, ceil(H / s), ceil(W / s)], each cell already the sum over its s x s footprint
//               (mask_scale s) and, for a one-channel mask (Cm = 1), over the canvas channels (inside the
//               op, in channel order): summed here over broadcast spatial dims only;
//   grad_x    : the placed-input gradient cropped back from each copy (the adjoint of placing it,
//               a constant pad with the opposite amounts) and added, summed over channels for grey
//               input, then through the adjoint of the resize (upsample backward).
// x, delta, mask and norm are saved; no canvas-sized tensor is. Written in C++ because the prompt
// runs once per step on a small batch, where the Python autograd wrapper cost about as much as the
// kernels (bench/notes/e2e_step.md).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "masked_perturb/options.h"

namespace reprogram_ext {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardFn = Tensor(const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                         RX_MASKED_PERTURB_OPTION_PARAMS, bool bank);
using BackwardFn = std::tuple<Tensor, Tensor, Tensor>(const Tensor& grad_out, const Tensor& x, const Tensor& delta,
                                                      const std::optional<Tensor>& mask,
                                                      RX_MASKED_PERTURB_OPTION_PARAMS, std::array<bool, 3> needs,
                                                      bool bank);

// The backward is not itself differentiable: with create_graph=True it refuses instead of returning
// gradients whose second-order terms would silently be missing (the same text as the Python autograd).
constexpr const char* kNoDoubleBackward =
    "masked_perturb: higher-order gradients are not supported (the backward was asked to build a graph, "
    "create_graph=True); use backend=\"reference\" for double backward";

// backward() returns one gradient per argument of forward() after ctx: x, delta, mask, norm, options.
constexpr int64_t kNumInputs = 5;

// [Bm, Cm, Hm, Wm] mask-resolution mask gradient (the op's, already with the mask's channels) -> the
// mask's own shape [Bm, Cm, Hm | 1, Wm | 1]: the sums over the broadcast spatial dims.
Tensor reduce_mask_grad(Tensor gm, const Tensor& mask) {
  if (mask.size(2) == 1 && gm.size(2) != 1) gm = gm.sum(2, /*keepdim=*/true);
  if (mask.size(3) == 1 && gm.size(3) != 1) gm = gm.sum(3, /*keepdim=*/true);
  return gm;
}

// Placed-input gradient [B, C, H, W] -> gradient of x [B, Cx, Hin, Win] (offsets: flattened pairs).
Tensor reduce_input_grad(const Tensor& gp, const Tensor& x, const MaskedPerturbOptions& o) {
  const std::vector<int64_t>& offsets = o.offsets;
  const int64_t hr = o.resized_size[0], wr = o.resized_size[1], H = gp.size(2), W = gp.size(3);
  Tensor g = at::zeros({gp.size(0), gp.size(1), hr, wr}, gp.options());
  for (size_t k = 0; k + 1 < offsets.size(); k += 2) {
    const int64_t oy = offsets[k], ox = offsets[k + 1];
    if (!(oy < H && oy + hr > 0 && ox < W && ox + wr > 0)) continue;  // the copy is off the canvas
    g = g + at::constant_pad_nd(gp, {-ox, -(W - ox - wr), -oy, -(H - oy - hr)});
  }
  if (x.size(1) == 1 && g.size(1) != 1) g = g.sum(1, /*keepdim=*/true);
  if (o.resize_mode == ResizeMode::kNearest) {
    g = at::upsample_nearest2d_backward(g.contiguous(), {hr, wr}, x.sizes(), std::nullopt, std::nullopt);
  } else if (o.resize_mode == ResizeMode::kBilinear) {
    g = at::upsample_bilinear2d_backward(g.contiguous(), {hr, wr}, x.sizes(), false, std::nullopt, std::nullopt);
  }
  return g;
}

// The schema arguments of a call, kept for the backward (the strings as given).
struct SavedOptions {
  std::vector<int64_t> offsets, resized_size;
  std::string resize_mode, activation, blend, normalize;
  std::optional<std::vector<double>> clamp;
  int64_t mask_scale;
  bool bank;
};

class MaskedPerturbFunction : public torch::autograd::Function<MaskedPerturbFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                        const Tensor& norm, const SavedOptions& s) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("reprogram_ext::masked_perturb_forward", "")
                         .typed<ForwardFn>();
    at::AutoDispatchBelowADInplaceOrView guard;
    const std::optional<at::ArrayRef<double>> clamp =
        s.clamp ? std::optional<at::ArrayRef<double>>(*s.clamp) : std::nullopt;
    Tensor out = op.call(x, delta, mask, s.offsets, norm, s.resized_size, s.resize_mode, s.activation, s.blend,
                         s.normalize, clamp, s.mask_scale, s.bank);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({x, delta, mask.value_or(Tensor()), norm});
    ctx->saved_data["offsets"] = s.offsets;
    ctx->saved_data["resized_size"] = s.resized_size;
    ctx->saved_data["modes"] = std::vector<std::string>{s.resize_mode, s.activation, s.blend, s.normalize};
    ctx->saved_data["clamp"] = s.clamp.value_or(std::vector<double>{});
    ctx->saved_data["mask_scale"] = s.mask_scale;
    ctx->saved_data["bank"] = s.bank;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("reprogram_ext::masked_perturb_backward", "")
                         .typed<BackwardFn>();
    variable_list out(kNumInputs);
    if (!grads[0].defined()) return out;
    TORCH_CHECK(!at::GradMode::is_enabled(), kNoDoubleBackward);
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &delta = saved[1], &norm = saved[3];
    const std::optional<Tensor> mask = saved[2].defined() ? std::optional<Tensor>(saved[2]) : std::nullopt;
    const auto offsets = ctx->saved_data["offsets"].toIntVector();
    const auto resized_size = ctx->saved_data["resized_size"].toIntVector();
    const auto modes = ctx->saved_data["modes"].toList();
    const std::string resize_mode = modes.get(0).toStringRef(), activation = modes.get(1).toStringRef(),
                      blend = modes.get(2).toStringRef(), normalize = modes.get(3).toStringRef();
    const auto clamp_values = ctx->saved_data["clamp"].toDoubleVector();
    const std::optional<at::ArrayRef<double>> clamp =
        clamp_values.empty() ? std::nullopt : std::optional<at::ArrayRef<double>>(clamp_values);
    const int64_t mask_scale = ctx->saved_data["mask_scale"].toInt();
    const bool bank = ctx->saved_data["bank"].toBool();
    const std::array<bool, 3> needs{ctx->needs_input_grad(1), mask.has_value() && ctx->needs_input_grad(2),
                                    ctx->needs_input_grad(0) && x.is_floating_point()};
    auto [gd, gm, gp] = op.call(grads[0].contiguous(), x, delta, mask, RX_MASKED_PERTURB_OPTION_ARGS, needs, bank);
    if (needs[0]) {
      out[1] = (delta.size(1) == 1 && gd.size(1) != 1 ? gd.sum(1, /*keepdim=*/true) : gd).to(delta.scalar_type());
    }
    if (needs[1]) out[2] = reduce_mask_grad(gm, *mask).to(mask->scalar_type());
    if (needs[2]) {
      out[0] = reduce_input_grad(gp, x, parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_ARGS, bank))
                   .to(x.scalar_type());
    }
    return out;
  }
};

Tensor masked_perturb_forward_autograd(const Tensor& x, const Tensor& delta, const std::optional<Tensor>& mask,
                                       RX_MASKED_PERTURB_OPTION_PARAMS, bool bank) {
  std::optional<std::vector<double>> c;
  if (clamp) c = clamp->vec();
  const SavedOptions s{offsets.vec(),         resized_size.vec(),  std::string(resize_mode), std::string(activation),
                       std::string(blend),    std::string(normalize), std::move(c),          mask_scale,
                       bank};
  return MaskedPerturbFunction::apply(x, delta, mask, norm, s);
}

}  // namespace

TORCH_LIBRARY_IMPL(reprogram_ext, Autograd, m) {
  m.impl("masked_perturb_forward", &masked_perturb_forward_autograd);
}

}  // namespace reprogram_ext
