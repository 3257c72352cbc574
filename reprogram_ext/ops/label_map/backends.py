"""Each backend's input limits for label_map / mapped_cross_entropy (docs/backends.md): the
``refusal`` callback that ``resolve_backend`` asks before choosing a backend. Imports no Triton,
so that ``backend="auto"`` knows the Triton limits without loading it.

- triton: at most ``MAX_SORTED_ENTRIES`` index entries T*K (the limit of its first version, whose
  gradient scatter scanned the sorted entries in one block; the cached source map of
  triton_source_map.py that replaced it has no such bound, but the limit stays until a GPU run
  has checked larger indexes).
- cuda, cpu: no input limit.
- cuda, cpu, triton: refused while a torch.func grad/jvp transform runs (ops/transforms.py).
- reference: no limit.
"""
from __future__ import annotations

from typing import Callable, Optional

from ...backend_registry import CUDA_FIRST, order_by_class
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


# ---- backend="auto" on CUDA tensors: the order per input class (docs/backends.md) ----------------
# Predictions (H200, fp32, not measured on GPU) in bench/notes/label_map.md: the CUDA kernels take
# one pass per row and one launch per backward (no sort: the index's CSR is built once and cached);
# label_map fwd / bwd at 32k 1.07-1.3x the roofline, the CE gradient writer 1.06-1.2x, and 1 launch
# each at the small sizes (~4-8 us, launch-bound). The Triton backward also builds the index's source
# map once and caches it (triton_source_map.py), but keeps a coefficient launch before its gradient
# writer (2 launches; 1.11-1.25x at 32k) and compiles on first use: CUDA first for both classes. "dense" (index=None: aten's GEMM on every
# backend) and empty batches run the same code whatever the order.
CUDA_ORDER = {"sparse": CUDA_FIRST, "dense": CUDA_FIRST}


def input_class(dense: bool) -> str:
    """The class of an input for the auto rule: "dense" (index=None, weight [S, T]) or "sparse"."""
    return "dense" if dense else "sparse"


def auto_order(c: CanonicalLabelMap, device_type: str) -> Optional[tuple]:
    """The order "auto" tries for the canonical inputs ``c``: ``CUDA_ORDER[class]`` on CUDA
    tensors, None (the registry's AUTO_ORDER for the device) elsewhere."""
    return order_by_class(device_type, CUDA_ORDER, input_class(c.dense)) if device_type == "cuda" else None
