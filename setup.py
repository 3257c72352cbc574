"""Build reprogram_ext's op library (``reprogram_ext/_C*.so``).

The C++ CPU kernels are always built. The CUDA kernels are built when ``REPROGRAM_EXT_CUDA=1``,
skipped when ``REPROGRAM_EXT_CUDA=0``, and otherwise built when nvcc is found. Whether a GPU is
present never matters, so a CPU-only runner can prove that the CUDA code compiles and links.

Environment:
  REPROGRAM_EXT_CUDA      1 / 0 / unset (auto: build CUDA when nvcc is found)
  TORCH_CUDA_ARCH_LIST    default "8.0;9.0+PTX" (sm_80 and sm_90 machine code, PTX for newer)
  CUDA_HOME               toolkit root; default /usr/local/cuda when it holds bin/nvcc
  REPROGRAM_EXT_PTXAS_VERBOSE=1   pass -Xptxas -v (register / spill report) to nvcc
"""
import glob
import os
import shutil

from setuptools import setup


def _default_cuda_home():
    """A toolkit root whose bin/nvcc exists (the nvcc on PATH may be a wrapper script)."""
    for root in ("/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)):
        if os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return root
    return None


if "CUDA_HOME" not in os.environ and _default_cuda_home():
    os.environ["CUDA_HOME"] = _default_cuda_home()
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda():
    flag = os.environ.get("REPROGRAM_EXT_CUDA", "").strip()
    if flag in ("0", "false", "no", "off"):
        return False
    found = CUDA_HOME is not None and os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc"))
    if flag in ("1", "true", "yes", "on"):
        if not found:
            raise RuntimeError("REPROGRAM_EXT_CUDA=1 but no nvcc was found: set CUDA_HOME to the toolkit root")
        return True
    return found or shutil.which("nvcc") is not None and CUDA_HOME is not None


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern), recursive=True))


def _write_build_config(with_cuda):
    """Record what this build compiled, for reprogram_ext.backends()."""
    archs = os.environ["TORCH_CUDA_ARCH_LIST"] if with_cuda else ""
    with open(os.path.join(HERE, "reprogram_ext", "_build_config.py"), "w") as f:
        f.write(f"# Written by setup.py at build time.\nWITH_CUDA = {with_cuda!r}\nCUDA_ARCHS = {archs!r}\n")


def extension():
    with_cuda = _want_cuda()
    _write_build_config(with_cuda)
    sources = _sources("csrc/**/*.cpp")
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-DREPROGRAM_EXT_WITH_OPENMP"]
    kwargs = dict(
        name="reprogram_ext._C",
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
        # Compiles the PyInit__C stub of csrc/python_module.cpp (the CMake build for C++ users leaves
        # it out). Passed to both g++ and nvcc.
        define_macros=[("REPROGRAM_EXT_PYTHON_MODULE", None)],
    )
    if not with_cuda:
        return CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **kwargs)
    nvcc = ["-O3", "-lineinfo", "-DREPROGRAM_EXT_WITH_CUDA"]
    if os.environ.get("REPROGRAM_EXT_PTXAS_VERBOSE") == "1":
        nvcc.append("-Xptxas=-v")
    return CUDAExtension(
        sources=sources + _sources("csrc/**/*.cu"),
        extra_compile_args={"cxx": cxx + ["-DREPROGRAM_EXT_WITH_CUDA"], "nvcc": nvcc},
        **kwargs,
    )


def _requirements():
    """The built library runs only on the torch it was compiled against (its C++ ABI)."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", "numpy"]


setup(
    install_requires=_requirements(),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
