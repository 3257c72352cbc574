// masked_perturb's options, defined once for the C++ side: the string options of the schema
// (csrc/schemas.cpp; Python: reprogram_ext/ops/masked_perturb/options.py), their enums, and the one
// struct every kernel and the autograd take them in.
//
// Schema arguments after (x, delta, mask): int[] offsets, Tensor norm, int[] resized_size,
// str resize_mode, str activation, str blend, str normalize, float[]? clamp, int mask_scale, then
// (backward: bool[3] needs,) bool bank (norm travels separately: it is a tensor).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "common/option_list.h"
#include "masked_perturb/activation.h"

namespace reprogram_ext {

#define RX_MASKED_PERTURB_RESIZE_MODES(X, E) X(E, kNone, "none") X(E, kNearest, "nearest") X(E, kBilinear, "bilinear")
RX_DEFINE_OPTION(ResizeMode, RX_MASKED_PERTURB_RESIZE_MODES, "masked_perturb", "resize_mode")

#define RX_MASKED_PERTURB_BLENDS(X, E) X(E, kAdd, "add") X(E, kReplace, "replace")
RX_DEFINE_OPTION(Blend, RX_MASKED_PERTURB_BLENDS, "masked_perturb", "blend")

#define RX_MASKED_PERTURB_NORMALIZE(X, E) X(E, kNone, "none") X(E, kBefore, "before") X(E, kAfter, "after")
RX_DEFINE_OPTION(Normalize, RX_MASKED_PERTURB_NORMALIZE, "masked_perturb", "normalize")

// The schema's option arguments (all but norm), parsed once.
struct MaskedPerturbOptions {
  std::vector<int64_t> offsets;       // (oy, ox) of every copy, flattened
  std::vector<int64_t> resized_size;  // (Hr, Wr)
  ResizeMode resize_mode;
  Activation activation;
  Blend blend;
  Normalize normalize;
  std::optional<std::vector<double>> clamp;  // (lo, hi)
  int64_t mask_scale;
  bool bank;  // delta [V, Cd, H, W] is a prompt bank: output [V * B, C, H, W]
};

// The option parameters of both schemas after (x, delta, mask), and the same names as arguments.
#define RX_MASKED_PERTURB_OPTION_PARAMS                                                                      \
  at::IntArrayRef offsets, const at::Tensor &norm, at::IntArrayRef resized_size, c10::string_view resize_mode, \
      c10::string_view activation, c10::string_view blend, c10::string_view normalize,                      \
      std::optional<at::ArrayRef<double>> clamp, int64_t mask_scale
#define RX_MASKED_PERTURB_OPTION_ARGS \
  offsets, norm, resized_size, resize_mode, activation, blend, normalize, clamp, mask_scale

// The options of a schema call (norm is not an option and is not read).
inline MaskedPerturbOptions parse_masked_perturb_options(RX_MASKED_PERTURB_OPTION_PARAMS, bool bank) {
  TORCH_CHECK(offsets.size() % 2 == 0, "masked_perturb: offsets must hold (oy, ox) pairs, got ", offsets.size(),
              " values");
  TORCH_CHECK(resized_size.size() == 2, "masked_perturb: resized_size must have 2 entries, got ", resized_size);
  TORCH_CHECK(!clamp || clamp->size() == 2, "masked_perturb: clamp must be (lo, hi) or None, got ", *clamp);
  TORCH_CHECK(mask_scale >= 1, "masked_perturb: mask_scale must be >= 1, got ", mask_scale);
  std::optional<std::vector<double>> c;
  if (clamp) c = clamp->vec();
  return {offsets.vec(), resized_size.vec(),  parse_ResizeMode(resize_mode), parse_Activation(activation),
          parse_Blend(blend), parse_Normalize(normalize), std::move(c), mask_scale, bank};
}

}  // namespace reprogram_ext
