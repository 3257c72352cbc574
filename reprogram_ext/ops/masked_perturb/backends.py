"""What each backend of masked_perturb cannot take, and the order ``backend="auto"`` tries on CUDA
tensors, for the backend registry (docs/backends.md).

Imported by the front end before any backend runs: it must not import triton.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ...backend_registry import CUDA_FIRST, TRITON_FIRST, order_by_class
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


# ---- backend="auto" on CUDA tensors: the order per input class (docs/backends.md) ----------------
# Predictions (H100 / H200, fp32, not measured on GPU) in bench/notes/cuda_masked_perturb.md and
# triton_masked_perturb.md:
# - "vector" (no resize or nearest, canvas width a multiple of VEC = 16 / element size): the CUDA
#   kernels' 128-bit layouts are predicted at the memory roofline (ILM-VP forward 17.3 / 12.1 us,
#   backward 13.3 / 9.3 us) and Triton at or above it (forward 17-21 / 12-15 us, backward 15-20 /
#   13-18 us): CUDA first.
# - "bilinear": CUDA's fp32 upscale forward reads a three-column window (AutoVP 33.9, SMM 35.2
#   instructions per output: memory-bound on an H100, 1.22x / 1.27x off the 9.3 us roofline on an
#   H200); its 16-bit, downscale and small-upscale forwards and every bilinear backward keep the
#   per-output taps (~75-100 per output, 1.9-3.3x off). The Triton program computes the taps once
#   and reuses them over its batch chunk (SMM 31 instructions per 8 outputs): Triton first.
# - "odd_width" (W % VEC != 0): CUDA's flat forward (Elsayed 32.6 per output, 1.3x off on an H200)
#   serves only one unresized copy with blend add, no clamp, shared delta and mask; the rest and
#   every odd-width backward take its dynamic scalar layout (~150 instructions per output, 3.6x /
#   5x off). Triton keeps its flat-plane code with coalesced scalar accesses: Triton first.
CUDA_ORDER = {"vector": CUDA_FIRST, "bilinear": TRITON_FIRST, "odd_width": TRITON_FIRST}


def input_class(resize_mode: str, width: int, element_size: int) -> str:
    """The class of an input for the auto rule: "bilinear", else "odd_width" when the canvas width is
    not a multiple of VEC = 16 / element_size (the CUDA kernels' 128-bit groups), else "vector"."""
    if resize_mode == "bilinear":
        return "bilinear"
    return "vector" if width % max(1, 16 // element_size) == 0 else "odd_width"


def auto_order(cp: CanonicalPerturb, device_type: str) -> Optional[tuple]:
    """The order "auto" tries for the canonical inputs ``cp``: ``CUDA_ORDER[class]`` on CUDA
    tensors, None (the registry's AUTO_ORDER for the device) elsewhere."""
    if device_type != "cuda":
        return None
    cls = input_class(cp.options.resize_mode, cp.delta.shape[-1], cp.delta.element_size())
    return order_by_class(device_type, CUDA_ORDER, cls)
