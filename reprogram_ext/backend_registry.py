"""The backends as a registry, and choosing one for a call (docs/backends.md).

Each backend answers two questions, in the manner of xformers' ``not_supported_reasons``:
- ``unavailable(op, device)``: why it cannot run ``op`` on ``device`` at all (not built, not
  installed: RuntimeError; wrong device: ValueError), as the error to raise, or None;
- the op's own ``refusal(backend)`` callback: why it cannot take *these* inputs (a backend's size
  limit), or None. Each op states its backends' input limits in its ``ops/<op>/backends.py``.

``backend="auto"`` walks a priority list (``AUTO_ORDER`` for the device type, or the op's own
``auto_order`` for its inputs) and takes the first backend that neither is unavailable nor
refuses; the reference always takes every input. An explicit backend that is unavailable or
refuses raises, naming the reason. Adding a backend: one ``Backend`` entry here, its kernels in
each op's folder, and each op's ``backends.py`` line that routes to them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from . import _extension

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")

# The order "auto" tries, per device type (an op may pass its own order for its inputs).
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

# The two orders an op's per-input rule (``ops/<op>/backends.py: auto_order``) picks from on CUDA
# tensors (docs/backends.md, "How auto chooses"): the predicted-faster kernel first, the other next.
CUDA_FIRST = AUTO_ORDER["cuda"]
TRITON_FIRST = ("triton", "cuda", "reference")


def order_by_class(device_type: str, cuda_orders: dict, cls: str) -> Optional[tuple]:
    """An op's auto rule for input class ``cls``: ``cuda_orders[cls]`` on CUDA tensors, None (the
    device's AUTO_ORDER) elsewhere. An unknown class is a KeyError (a bug in the op's rule)."""
    return cuda_orders[cls] if device_type == "cuda" else None

Refusal = Callable[[str], Optional[str]]


def _compiled_unavailable(dispatch_key: str, device_type: str, build_hint: str):
    def unavailable(op: str, device: torch.device) -> Optional[str]:
        if device.type != device_type:
            return ValueError(f"needs {device_type.upper()} tensors, got tensors on {device}")
        if not _extension.has_kernel(op, dispatch_key):
            detail = _extension.LOAD_ERROR or f"no {dispatch_key} kernel of reprogram_ext::{op} was compiled"
            return RuntimeError(f"is not available: {build_hint} ({detail})")
        return None

    return unavailable


def _triton_unavailable(op: str, device: torch.device) -> Optional[Exception]:
    if not _extension.triton_available():
        return RuntimeError("is not available: the triton package is not installed")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return RuntimeError(f"needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported to run its "
                            f"kernels on {device} tensors under the Triton interpreter")
    return None


@dataclass(frozen=True)
class Backend:
    """One backend: its name and why it cannot run an op on a device (the error to raise; None when it can)."""

    name: str
    unavailable: Callable[[str, torch.device], Optional[Exception]]


REGISTRY = {
    "cuda": Backend("cuda", _compiled_unavailable(
        "CUDA", "cuda", "reprogram_ext was built without CUDA kernels (rebuild with REPROGRAM_EXT_CUDA=1 and nvcc / "
        "CUDA_HOME set)")),
    "triton": Backend("triton", _triton_unavailable),
    "cpu": Backend("cpu", _compiled_unavailable(
        "CPU", "cpu", "the C++ extension reprogram_ext._C is not built; run `pip install --no-build-isolation -e .`")),
    "reference": Backend("reference", lambda op, device: None),
}


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


def why_not(backend: str, op: str, device: torch.device, refusal: Optional[Refusal] = None) -> Optional[Exception]:
    """Why ``backend`` cannot run compiled op ``op`` on ``device`` with these inputs (the error an explicit
    request raises: RuntimeError when it is not available, ValueError when it refuses the inputs), or None."""
    reason = REGISTRY[backend].unavailable(op, device)
    if reason is None and refusal is not None:
        refused = refusal(backend)
        reason = ValueError(f"cannot take these inputs: {refused}") if refused else None
    return reason


def resolve_backend(backend: str, device: torch.device, op: str, refusal: Optional[Refusal] = None,
                    auto_order: Optional[Sequence[str]] = None) -> str:
    """The concrete backend ("cuda", "triton", "cpu" or "reference") to run ``op`` on ``device``.

    ``op`` is the compiled op's name (e.g. "masked_perturb_forward"), used to look up kernels;
    ``refusal(name)`` says why backend ``name`` cannot take these inputs (None: it can);
    ``auto_order`` replaces ``AUTO_ORDER[device.type]`` for "auto".
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        order = auto_order if auto_order is not None else AUTO_ORDER.get(device.type, ())
        for name in order:
            if why_not(name, op, device, refusal) is None:
                return name
        return "reference"
    reason = why_not(backend, op, device, refusal)
    if reason is not None:
        raise type(reason)(f"backend={backend!r} {reason}")
    return backend
