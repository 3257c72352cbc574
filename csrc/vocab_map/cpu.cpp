// The CPU kernels of vocab_map: the chunked ATen implementation (chunked.cpp; BLAS GEMMs per chunk).
#include <torch/library.h>

#include "vocab_map/chunked.h"

TORCH_LIBRARY_IMPL(reprogram_ext, CPU, m) {
  m.impl("vocab_map_forward", &reprogram_ext::vocab_map::forward);
  m.impl("vocab_map_backward", &reprogram_ext::vocab_map::backward);
}
