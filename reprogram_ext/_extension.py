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


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``reprogram_ext::<op>`` has a compiled kernel for ``dispatch_key`` ("CPU"/"CUDA")."""
    if LOAD_ERROR is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"reprogram_ext::{op}", dispatch_key)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def build_config() -> tuple[bool, str]:
    """(built with CUDA, TORCH_CUDA_ARCH_LIST of the build) as recorded by setup.py."""
    try:
        from . import _build_config
    except ImportError:
        return False, ""
    return bool(_build_config.WITH_CUDA), str(_build_config.CUDA_ARCHS)
