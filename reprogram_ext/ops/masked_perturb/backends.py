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
# The Triton forward's grid is (blocks, channels, bank entries x batch chunks); CUDA grids allow at
# most 65535 along their second and third axes.
TRITON_GRID_AXIS_LIMIT = 65535


def _max_plane_offset(t: torch.Tensor) -> int:
    return sum((n - 1) * s for n, s in zip(t.shape[2:], t.stride()[2:]))


def triton_limits(x: torch.Tensor, delta: torch.Tensor, mask: Optional[torch.Tensor],
                  bank: bool = False) -> Optional[str]:
    """Why the Triton kernels cannot take these canonical tensors (bank: delta [V, Cd, H, W] is a prompt
    bank), or None."""
    for name, t in (("x", x), ("delta", delta), ("mask", mask)):
        if t is not None and _max_plane_offset(t) >= TRITON_PLANE_LIMIT:
            return f"{name}'s spatial extent exceeds 2^31 elements (the Triton kernels index a plane in 32 bits)"
    H, W = delta.shape[-2:]
    if H * W >= TRITON_PLANE_LIMIT:
        return f"the canvas {H} x {W} exceeds 2^31 elements (the Triton kernels index a plane in 32 bits)"
    channels = max(x.shape[1], delta.shape[1])
    if channels > TRITON_GRID_AXIS_LIMIT:
        return f"{channels} channels exceed {TRITON_GRID_AXIS_LIMIT} (one axis of the Triton forward's grid)"
    if bank and delta.shape[0] > TRITON_GRID_AXIS_LIMIT:
        return (f"a bank of {delta.shape[0]} entries exceeds {TRITON_GRID_AXIS_LIMIT} (one axis of the Triton "
                "forward's grid)")
    return None


def refusal(cp: CanonicalPerturb) -> Callable[[str], Optional[str]]:
    """For the registry: backend name -> why it refuses these inputs (None: it takes them)."""
    def why(backend: str) -> Optional[str]:
        limit = triton_limits(cp.x, cp.delta, cp.mask, cp.options.bank) if backend == "triton" else None
        return limit or torch_func_refusal(backend, "masked_perturb")

    return why


# ---- backend="auto" on CUDA tensors: the order per input class (docs/backends.md) ----------------
# Predictions (H100 / H200, fp32, not measured on GPU) in bench/notes/cuda_masked_perturb.md and
# triton_masked_perturb.md:
# - "vector" (no resize or nearest, canvas width a multiple of VEC = 16 / element size): the CUDA
#   kernels' 128-bit layouts are predicted at the memory roofline (ILM-VP forward 17.3 / 12.1 us,
#   backward 13.3 / 9.3 us); Triton's forward too, its backward at 13.3-14.5 / 9.3-10.5 us: CUDA
#   first (the tie goes to the kernels with the fixed summation order of the CPU's tests).
# - "bilinear_fp32" (bilinear resize, 4-byte elements): CUDA's upscale forward reads a three-column
#   window (AutoVP 24.3, SMM 24.9 instructions per output: both at the memory roofline on both
#   GPUs); the backward of AutoVP (delta only) is the linear backward at the roofline, SMM's is one
#   kernel reading grad_out once (13.5 / 9.4 us against 13.4 / 9.3). Triton: AutoVP within 1.07x,
#   SMM's forward 1.0-1.12x on an H200, its backward's cell kernel 1.0-1.13x (13.5-15 / 9.4-10.5 us;
#   both backends then sum a one-channel mask's cells in a separate launch): CUDA first.
# - "bilinear" (other element sizes): CUDA's 16-bit window needs a ~7x upscale (AutoVP's 6x keeps
#   the per-output taps, ~75 per output); its SMM 16-bit forward (an 8 x 8 tile per thread, 16.5 per
#   output) is 1.18x off on an H200. Triton computes the taps once per program and reuses them over
#   its batch chunk, whatever the upscale: Triton first.
# - "odd_width" (W % VEC != 0): for Elsayed's case (223x225, B = 17, fp32) CUDA's flat forward
#   (22.9 per output) is at the H200 roofline by issue and its flat backward 1.0-1.1x / 1.05-1.2x
#   (two loads in flight per thread); Triton's forward 1.0-1.1x on an H200 (was 1.4x: per-program set-up),
#   its backward within 1.13x: a tie on the pair. CUDA's flat kernels serve only one unresized copy
#   with blend add, no clamp, shared delta and mask (and, backward, no input gradient); every other
#   odd-width call takes CUDA's dynamic scalar layout (~150 per output, 3.6x / 5x off), where Triton
#   keeps its coalesced flat-plane code: Triton first.
CUDA_ORDER = {"vector": CUDA_FIRST, "bilinear_fp32": CUDA_FIRST, "bilinear": TRITON_FIRST, "odd_width": TRITON_FIRST}


def input_class(resize_mode: str, width: int, element_size: int) -> str:
    """The class of an input for the auto rule: "bilinear_fp32" / "bilinear" (4-byte / other elements)
    under a bilinear resize, else "odd_width" when the canvas width is not a multiple of
    VEC = 16 / element_size (the CUDA kernels' 128-bit groups), else "vector"."""
    if resize_mode == "bilinear":
        return "bilinear_fp32" if element_size == 4 else "bilinear"
    return "vector" if width % max(1, 16 // element_size) == 0 else "odd_width"


def auto_order(cp: CanonicalPerturb, device_type: str) -> Optional[tuple]:
    """The order "auto" tries for the canonical inputs ``cp``: ``CUDA_ORDER[class]`` on CUDA
    tensors, None (the registry's AUTO_ORDER for the device) elsewhere."""
    if device_type != "cuda":
        return None
    cls = input_class(cp.options.resize_mode, cp.delta.shape[-1], cp.delta.element_size())
    return order_by_class(device_type, CUDA_ORDER, cls)
