"""What each backend of masked_perturb cannot take, for the backend registry (docs/backends.md).

Imported by the front end before any backend runs: it must not import triton.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..transforms import torch_func_refusal
from .args import CanonicalPerturb

# The Triton kernels index within one spatial plane in 32 bits.
TRITON_PLANE_LIMIT = 2**31


def _max_plane_offset(t: torch.Tensor) -> int:
    return sum((n - 1) * s for n, s in zip(t.shape[2:], t.stride()[2:]))


def triton_limits(x: torch.Tensor, delta: torch.Tensor, mask: Optional[torch.Tensor]) -> Optional[str]:
    """Why the Triton kernels cannot take these canonical tensors, or None."""
    for name, t in (("x", x), ("delta", delta), ("mask", mask)):
        if t is not None and _max_plane_offset(t) >= TRITON_PLANE_LIMIT:
            return f"{name}'s spatial extent exceeds 2^31 elements (the Triton kernels index a plane in 32 bits)"
    H, W = delta.shape[-2:]
    if H * W >= TRITON_PLANE_LIMIT:
        return f"the canvas {H} x {W} exceeds 2^31 elements (the Triton kernels index a plane in 32 bits)"
    return None


def refusal(cp: CanonicalPerturb) -> Callable[[str], Optional[str]]:
    """For the registry: backend name -> why it refuses these inputs (None: it takes them)."""
    def why(backend: str) -> Optional[str]:
        limit = triton_limits(cp.x, cp.delta, cp.mask) if backend == "triton" else None
        return limit or torch_func_refusal(backend, "masked_perturb")

    return why
