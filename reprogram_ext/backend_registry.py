"""Which backends exist, and choosing one for a call (SPEC §5)."""
from __future__ import annotations

import os

import torch

from . import _extension

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")


def backends() -> dict:
    """What was compiled (C++, CUDA archs, OpenMP threads) and found (Triton) on this machine."""
    with_cuda, archs = _extension.build_config()
    return {
        "cpp": _extension.has_kernel("masked_perturb_forward", "CPU"),
        "cpp_load_error": _extension.LOAD_ERROR,
        "cuda_compiled": _extension.has_kernel("masked_perturb_forward", "CUDA"),
        "cuda_archs": archs if with_cuda else "",
        "cuda_device": torch.cuda.is_available(),
        "openmp_threads": torch.get_num_threads(),
        "triton": _extension.triton_available(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }


def resolve_backend(backend: str, device: torch.device, op: str) -> str:
    """The concrete backend ("cuda", "triton", "cpu" or "reference") to run ``op`` on ``device``.

    ``op`` is the compiled op's name (e.g. "masked_perturb_forward"), used to look up kernels.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    on_cuda = device.type == "cuda"
    if backend == "auto":
        if on_cuda:
            if _extension.has_kernel(op, "CUDA"):
                return "cuda"
            if _extension.triton_available():
                return "triton"
            return "reference"
        if device.type == "cpu" and _extension.has_kernel(op, "CPU"):
            return "cpu"
        return "reference"
    if backend == "reference":
        return backend
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"backend='cpu' needs CPU tensors, got tensors on {device}")
        if not _extension.has_kernel(op, "CPU"):
            raise RuntimeError(
                "backend='cpu' is not available: the C++ extension reprogram_ext._C is not built "
                f"({_extension.LOAD_ERROR or 'no CPU kernel registered'}); run `pip install --no-build-isolation -e .`"
            )
        return backend
    if backend == "cuda":
        if not on_cuda:
            raise ValueError(f"backend='cuda' needs CUDA tensors, got tensors on {device}")
        if not _extension.has_kernel(op, "CUDA"):
            raise RuntimeError(
                "backend='cuda' is not available: reprogram_ext was built without CUDA kernels "
                "(rebuild with REPROGRAM_EXT_CUDA=1 and nvcc / CUDA_HOME set)"
            )
        return backend
    # triton
    if not _extension.triton_available():
        raise RuntimeError("backend='triton' is not available: the triton package is not installed")
    if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported "
            f"to run its kernels on {device} tensors under the Triton interpreter"
        )
    return backend
