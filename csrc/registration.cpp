// Every schema of the reprogram_ext op library, forward and backward, in one TORCH_LIBRARY block.
// Kernels are registered per device in csrc/cpu/*.cpp and csrc/cuda/*.cu (TORCH_LIBRARY_IMPL);
// fake (meta) kernels and autograd are registered from Python (reprogram_ext/_registration_*.py).
#include <torch/library.h>

#ifdef REPROGRAM_EXT_PYTHON_MODULE  // defined by setup.py; the CMake library (C++ users) needs no Python
#include <Python.h>

// A plain module init so that `import reprogram_ext._C` loads this library (no pybind11 needed).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

TORCH_LIBRARY(reprogram_ext, m) {
  // ---- masked_perturb (SPEC §1). Canonical 4-D layout [B, C, H, W]; 1-D signals use H = 1.
  // offsets: (oy, ox) of every copy, flattened; norm: float32 [2, C] = (mean, 1 / std).
  // resize_mode 0 none / 1 nearest / 2 bilinear; activation 0 none / 1 tanh / 2 sigmoid;
  // blend 0 add / 1 replace.
  m.def(
      "masked_perturb_forward(Tensor x, Tensor delta, Tensor? mask, int[] offsets, Tensor norm, "
      "int[] resized_size, int resize_mode, int activation, int blend, bool normalize_before, "
      "bool normalize_after, bool has_clamp, float clamp_lo, float clamp_hi, int mask_scale) -> Tensor");
  // Returns float32 (grad_delta [Bd, C, H, W] summed over the batch when Bd == 1,
  //                  grad_mask  [Bm, C, H, W] at canvas resolution, summed over the batch when Bm == 1,
  //                  grad_placed [B, C, H, W]: gradient w.r.t. the raw placed input u);
  // an output not asked for by needs = [delta, mask, input] is an empty tensor.
  m.def(
      "masked_perturb_backward(Tensor grad_out, Tensor x, Tensor delta, Tensor? mask, int[] offsets, "
      "Tensor norm, int[] resized_size, int resize_mode, int activation, int blend, bool normalize_before, "
      "bool normalize_after, bool has_clamp, float clamp_lo, float clamp_hi, int mask_scale, bool[3] needs) "
      "-> (Tensor, Tensor, Tensor)");

  // ---- label_map / mapped_cross_entropy (SPEC §2): schemas below this line.
}
