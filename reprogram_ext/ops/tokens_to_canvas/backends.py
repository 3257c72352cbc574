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
