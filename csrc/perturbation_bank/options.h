// perturbation_bank's option: the kind of directions (Python: reprogram_ext/ops/perturbation_bank/
// options.py). The input transform's options are masked_perturb's (csrc/masked_perturb/options.h).
#pragma once

#include "common/option_list.h"

namespace reprogram_ext {

#define RX_BANK_DIRECTIONS(X, E) X(E, kSphere, "sphere") X(E, kGaussian, "gaussian") X(E, kSegmented, "segmented")
RX_DEFINE_OPTION(Directions, RX_BANK_DIRECTIONS, "perturbation_bank", "directions")

}  // namespace reprogram_ext
