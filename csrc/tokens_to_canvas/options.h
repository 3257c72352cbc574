// tokens_to_canvas's options and canonical arguments, defined once for the C++ side (the schema:
// csrc/schemas.cpp; Python: reprogram_ext/ops/tokens_to_canvas/options.py and args.py).
//
// Schema arguments after (cells, table, program, program_mask, base):
//   Tensor norm [4, C] accumulation dtype = (mean, 1 / std, base_weight, patch_weight),
//   int[] geometry = (Gh, Gw, oy, ox), int[] canvas = (H, W), str activation, str normalize,
//   float[]? clamp = (lo, hi).
// The activations are masked_perturb's (masked_perturb/activation.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common/option_list.h"
#include "masked_perturb/activation.h"

namespace reprogram_ext {
namespace tokens_to_canvas {

#define RX_TOKENS_TO_CANVAS_NORMALIZE(X, E) X(E, kNone, "none") X(E, kAfter, "after")
RX_DEFINE_OPTION(CanvasNormalize, RX_TOKENS_TO_CANVAS_NORMALIZE, "tokens_to_canvas", "normalize")

#define RX_TOKENS_TO_CANVAS_OPTION_PARAMS                                                                 \
  const at::Tensor &norm, at::IntArrayRef geometry, at::IntArrayRef canvas, c10::string_view activation, \
      c10::string_view normalize, std::optional<at::ArrayRef<double>> clamp
#define RX_TOKENS_TO_CANVAS_OPTION_ARGS norm, geometry, canvas, activation, normalize, clamp

// Sizes of the canonical tensors and the options, as the kernels take them (all int64 on the host).
struct CanvasArgs {
  int64_t B, C, V, Ph, Pw;  // cells [B, G], table [V, C, Ph, Pw]
  int64_t Gh, Gw, G, oy, ox;  // grid of Gh x Gw cells at (oy, ox)
  int64_t H, W;             // canvas
  int64_t Bp, Cp, Bm, Cm, Bb, Cb;  // program / mask / base batch and channels (1 = broadcast); 0 when absent
  bool has_program, has_mask, has_base, has_clamp, normalize;
  double lo, hi;
  Activation activation;
};

inline void check_canvas_tensor(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& table,
                                int64_t B, int64_t C, int64_t H, int64_t W) {
  if (!t) return;
  TORCH_CHECK(t->dim() == 4 && (t->size(0) == 1 || t->size(0) == B) && (t->size(1) == 1 || t->size(1) == C) &&
                  t->size(2) == H && t->size(3) == W,
              "tokens_to_canvas: ", name, " must be [1|", B, ", 1|", C, ", ", H, ", ", W, "], got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == table.scalar_type() && t->is_contiguous() && t->device() == table.device(),
              "tokens_to_canvas: ", name, " must be contiguous, with table's dtype and device");
}

// Checks the canonical arguments (guarding direct torch.ops callers against out-of-bounds access)
// and unpacks them. The token values are checked by the kernels' own pass (check_cells).
inline CanvasArgs make_canvas_args(const at::Tensor& cells, const at::Tensor& table,
                                   const std::optional<at::Tensor>& program, const std::optional<at::Tensor>& mask,
                                   const std::optional<at::Tensor>& base, RX_TOKENS_TO_CANVAS_OPTION_PARAMS) {
  TORCH_CHECK(cells.dim() == 2 && cells.scalar_type() == at::kLong && cells.is_contiguous(),
              "tokens_to_canvas: cells must be a contiguous int64 [B, G] tensor, got ", cells.sizes(), " ",
              cells.scalar_type());
  TORCH_CHECK(table.dim() == 4 && table.is_contiguous() && at::isFloatingType(table.scalar_type()),
              "tokens_to_canvas: table must be a contiguous floating [V, C, Ph, Pw] tensor, got ", table.sizes());
  TORCH_CHECK(cells.device() == table.device(), "tokens_to_canvas: cells and table are on different devices");
  TORCH_CHECK(geometry.size() == 4 && canvas.size() == 2,
              "tokens_to_canvas: geometry must be (Gh, Gw, oy, ox) and canvas (H, W)");
  CanvasArgs a;
  a.B = cells.size(0);
  a.G = cells.size(1);
  a.V = table.size(0);
  a.C = table.size(1);
  a.Ph = table.size(2);
  a.Pw = table.size(3);
  a.Gh = geometry[0];
  a.Gw = geometry[1];
  a.oy = geometry[2];
  a.ox = geometry[3];
  a.H = canvas[0];
  a.W = canvas[1];
  TORCH_CHECK(a.Gh >= 1 && a.Gw >= 1 && a.Gh * a.Gw == a.G, "tokens_to_canvas: cells has ", a.G,
              " cells, the grid ", a.Gh, " x ", a.Gw);
  TORCH_CHECK(a.oy >= 0 && a.ox >= 0 && a.oy + a.Gh * a.Ph <= a.H && a.ox + a.Gw * a.Pw <= a.W,
              "tokens_to_canvas: the grid does not fit the canvas ", a.H, " x ", a.W);
  check_canvas_tensor(program, "program", table, a.B, a.C, a.H, a.W);
  check_canvas_tensor(mask, "program_mask", table, a.B, a.C, a.H, a.W);
  check_canvas_tensor(base, "base", table, a.B, a.C, a.H, a.W);
  TORCH_CHECK(!mask || program, "tokens_to_canvas: program_mask needs a program");
  a.has_program = program.has_value();
  a.has_mask = mask.has_value();
  a.has_base = base.has_value();
  a.Bp = program ? program->size(0) : 0;
  a.Cp = program ? program->size(1) : 0;
  a.Bm = mask ? mask->size(0) : 0;
  a.Cm = mask ? mask->size(1) : 0;
  a.Bb = base ? base->size(0) : 0;
  a.Cb = base ? base->size(1) : 0;
  const auto acc = table.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(norm.scalar_type() == acc && norm.dim() == 2 && norm.size(0) == 4 && norm.size(1) == a.C &&
                  norm.is_contiguous() && norm.device() == table.device(),
              "tokens_to_canvas: norm must be a contiguous [4, ", a.C, "] tensor of ", acc, " on table's device");
  a.activation = parse_Activation(activation);
  a.normalize = parse_CanvasNormalize(normalize) == CanvasNormalize::kAfter;
  TORCH_CHECK(!clamp || clamp->size() == 2, "tokens_to_canvas: clamp must be (lo, hi) or None");
  a.has_clamp = clamp.has_value();
  a.lo = clamp ? (*clamp)[0] : 0.0;
  a.hi = clamp ? (*clamp)[1] : 0.0;
  return a;
}

}  // namespace tokens_to_canvas
}  // namespace reprogram_ext
