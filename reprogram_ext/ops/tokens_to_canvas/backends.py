"""What each backend of tokens_to_canvas cannot take, for the backend registry (docs/backends.md).

- cpu (C++): no input limit; it checks the token values itself.
- cuda: index math in 32 bits: the output and the table must each hold < 2^31 elements.
- triton: the same 32-bit limit.
- cpu, cuda, triton: refused while a torch.func grad/jvp transform runs (ops/transforms.py).
- reference: no limit.
Imported by the front end before any backend runs: it must not import triton.
"""
from __future__ import annotations

from typing import Callable, Optional

from ...backend_registry import CUDA_FIRST, order_by_class
from ..transforms import torch_func_refusal
from .args import CanonicalTokens

INDEX_LIMIT = 2**31


def int32_limit(cp: CanonicalTokens) -> Optional[str]:
    """Why the GPU kernels (32-bit indexing) cannot take these canonical inputs, or None."""
    B, C = cp.cells.shape[0], cp.table.shape[1]
    H, W = cp.canvas
    if B * C * H * W >= INDEX_LIMIT:
        return f"the output [B={B}, C={C}, {H}, {W}] holds 2^31 elements or more (the GPU kernels index in 32 bits)"
    if cp.table.numel() >= INDEX_LIMIT:
        return f"the table {list(cp.table.shape)} holds 2^31 elements or more (the GPU kernels index in 32 bits)"
    return None


def refusal(cp: CanonicalTokens) -> Callable[[str], Optional[str]]:
    """For the registry: backend name -> why it refuses these inputs (None: it takes them)."""
    def why(backend: str) -> Optional[str]:
        limit = int32_limit(cp) if backend in ("cuda", "triton") else None
        return limit or torch_func_refusal(backend, "tokens_to_canvas")

    return why


# ---- backend="auto" on CUDA tensors: the order (docs/backends.md) ---------------------------------
# bench/notes/tokens_to_canvas.md predicts the op from bytes only (forward ~60 us, backward ~70 us +
# ~20 us of stable sort at V = 30k, H100), and the CUDA and Triton kernels share the design (one
# pass over the canvas, the same sort + segmented table gradient): no prediction separates them, so
# one class, CUDA first (no JIT compilation on the first call).
CUDA_ORDER = {"any": CUDA_FIRST}


def auto_order(cp: CanonicalTokens, device_type: str) -> Optional[tuple]:
    """The order "auto" tries: ``CUDA_ORDER["any"]`` on CUDA tensors, None (the registry's AUTO_ORDER
    for the device) elsewhere."""
    return order_by_class(device_type, CUDA_ORDER, "any")
