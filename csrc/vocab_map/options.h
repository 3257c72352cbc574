// The options of vocab_map, defined once for the C++ side (formulas: docs/ops/vocab_map.md; the
// Python side's vocabulary: reprogram_ext/ops/vocab_map/options.py, the same names).
//
// The op schemas take `str mode` (csrc/schemas.cpp); common/option_list.h makes the list below an
// enum with parse_Mode (a ValueError naming the argument, the allowed names and what was given).
#pragma once

#include "common/option_list.h"

namespace reprogram_ext {
namespace vocab_map {

#define RX_VOCAB_MAP_MODES(X, E) \
  X(E, kSoftmax, "softmax") X(E, kGumbel, "gumbel") X(E, kGumbelHard, "gumbel_hard") X(E, kNone, "none")
RX_DEFINE_OPTION(Mode, RX_VOCAB_MAP_MODES, "vocab_map", "mode")

inline bool has_softmax(Mode m) { return m != Mode::kNone; }
inline bool has_noise(Mode m) { return m == Mode::kGumbel || m == Mode::kGumbelHard; }
inline bool is_hard(Mode m) { return m == Mode::kGumbelHard; }

}  // namespace vocab_map
}  // namespace reprogram_ext
