// The CUDA backend of vocab_map: host code running the chunked ATen implementation (chunked.cpp) on
// CUDA tensors (cuBLAS GEMMs per chunk, the θ gradient by ATen's sorted, deterministic accumulating
// index_put_). Compiled only in CUDA builds (setup.py passes REPROGRAM_EXT_WITH_CUDA to g++ there).
#ifdef REPROGRAM_EXT_WITH_CUDA
#include <torch/library.h>

#include "vocab_map/chunked.h"

TORCH_LIBRARY_IMPL(reprogram_ext, CUDA, m) {
  m.impl("vocab_map_forward", &reprogram_ext::vocab_map::forward);
  m.impl("vocab_map_backward", &reprogram_ext::vocab_map::backward);
}
#endif
