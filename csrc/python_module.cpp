// The Python module stub of the op library: `import reprogram_ext._C` loads it, and loading it
// registers the ops (csrc/schemas.cpp). Compiled only by setup.py (REPROGRAM_EXT_PYTHON_MODULE);
// the CMake library for C++ users needs no Python.
#ifdef REPROGRAM_EXT_PYTHON_MODULE  // defined by setup.py; the CMake library (C++ users) needs no Python
#include <Python.h>

// A plain module init so that `import reprogram_ext._C` loads this library (no pybind11 needed).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif
