"""Each backend's input limits for label_map / mapped_cross_entropy (docs/backends.md): the
``refusal`` callback that ``resolve_backend`` asks before choosing a backend. Imports no Triton,
so that ``backend="auto"`` knows the Triton limits without loading it.

- triton: the gradient scatter sorts the T*K index entries and scans them in one block of
  next_pow2(T*K) lanes, so it takes at most ``MAX_SORTED_ENTRIES`` entries.
- cuda, cpu: no input limit.
- cuda, cpu, triton: refused while a torch.func grad/jvp transform runs (ops/transforms.py).
- reference: no limit.
"""
from __future__ import annotations

from typing import Callable, Optional

from ..transforms import torch_func_refusal
from .args import CanonicalLabelMap

MAX_SORTED_ENTRIES = 1 << 14  # T*K handled by the Triton backend's one-block segmented scan


def triton_limit(T: int, K: int) -> Optional[str]:
    """Why the Triton kernels cannot take an index [T, K], or None (triton_op.py checks the same)."""
    if T * K > MAX_SORTED_ENTRIES:
        return (f"the Triton label_map kernels take T*K <= MAX_SORTED_ENTRIES = {MAX_SORTED_ENTRIES} index "
                f"entries (one-block segmented scan), got index [T={T}, K={K}] with T*K = {T * K}")
    return None


def refusal(c: CanonicalLabelMap, op: str = "label_map") -> Callable[[str], Optional[str]]:
    """``refusal(name)``: why backend ``name`` cannot take the canonical inputs ``c``, or None.
    The dense form and empty batches run aten ops (the reference) on every backend: any size."""
    def why(name: str) -> Optional[str]:
        if c.dense or c.logits.shape[0] == 0:
            return None
        limit = triton_limit(*c.index.shape) if name == "triton" else None
        return limit or torch_func_refusal(name, op)

    return why
