"""Loads the compiled op library ``reprogram_ext._C`` (C++ CPU kernels, CUDA kernels when built)."""
from __future__ import annotations

import importlib
import importlib.util

import torch

LOAD_ERROR: str | None = None
try:
    importlib.import_module("reprogram_ext._C")
except ImportError as exc:  # not built: only the reference (and Triton) backends are usable
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def _compiled_kernels() -> frozenset:
    """{(op, dispatch_key)} of the compiled library, read once at import (a constant for torch.compile)."""
    if LOAD_ERROR is not None:
        return frozenset()
    ops = [name for name in torch._C._dispatch_get_all_op_names() if name.startswith("reprogram_ext::")]
    return frozenset((name.split("::")[1], key) for name in ops for key in ("CPU", "CUDA")
                     if torch._C._dispatch_has_kernel_for_dispatch_key(name, key))


COMPILED_KERNELS = _compiled_kernels()


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``reprogram_ext::<op>`` has a compiled kernel for ``dispatch_key`` ("CPU"/"CUDA")."""
    return (op, dispatch_key) in COMPILED_KERNELS


TRITON_FOUND = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether the triton package is installed (read once at import; triton itself is not imported)."""
    return TRITON_FOUND


def build_config() -> tuple[bool, str]:
    """(built with CUDA, TORCH_CUDA_ARCH_LIST of the build) as recorded by setup.py."""
    try:
        from . import _build_config
    except ImportError:
        return False, ""
    return bool(_build_config.WITH_CUDA), str(_build_config.CUDA_ARCHS)
