"""Each backend's input limits for label_map / mapped_cross_entropy (docs/backends.md): the
``refusal`` callback that ``resolve_backend`` asks before choosing a backend. Imports no Triton,
so that ``backend="auto"`` knows the Triton limits without loading it.

- triton: the index's entries and the sources counted in 32 bits (T*K < 2^31: the source map's
  int32 entries and the kernels' int32 tile offsets), at most ``TRITON_GRID_AXIS_LIMIT`` row blocks
  of ``GRID_BLOCK_S`` sources (the gradient writer's second grid axis, 65535 on CUDA), and a group
  of K entries that fits one Triton tensor (K <= 2^20; reduce="topk_mean" compares the K entries
  pairwise in a [K, K] tile: K <= 2^10). T itself is not bounded: the row kernels loop over tiles
  of targets, and the backward reads the index's cached source map (triton_source_map.py), which
  has no one-block scan (the first version's T*K <= 16384 limit is gone).
- cuda, cpu: no input limit.
- cuda, cpu, triton: refused while a torch.func grad/jvp transform runs (ops/transforms.py).
- reference: no limit.
"""
from __future__ import annotations

from typing import Callable, Optional

from ...backend_registry import CUDA_FIRST, order_by_class
from ..transforms import torch_func_refusal
from .args import CanonicalLabelMap

INT32_LIMIT = 2**31  # the source map's entries (ent, ptr) and the kernels' tile offsets are int32
TRITON_GRID_AXIS_LIMIT = 65535  # CUDA grids allow at most 65535 along their second axis
GRID_BLOCK_S = 1024  # the gradient writer's row block on CUDA (triton_op._blocks; 4096 at most elsewhere)
TRITON_TENSOR_LIMIT = 2**20  # Triton's largest tensor (TRITON_MAX_TENSOR_NUMEL)


def triton_limit(S: int, T: int, K: int, topk: int = 0) -> Optional[str]:
    """Why the Triton kernels cannot take logits [*, S] with an index [T, K] (``topk``: the k of
    reduce="topk_mean", else 0), or None (triton_op.py checks the same)."""
    if T * K >= INT32_LIMIT or S >= INT32_LIMIT - 1:
        return (f"the Triton label_map kernels count index entries and sources in 32 bits (T*K and S below 2^31), "
                f"got index [T={T}, K={K}] (T*K = {T * K}) and S = {S}")
    blocks = -(-S // GRID_BLOCK_S)
    if blocks > TRITON_GRID_AXIS_LIMIT:
        return (f"S = {S} sources make {blocks} row blocks of {GRID_BLOCK_S}, more than the {TRITON_GRID_AXIS_LIMIT} "
                "of the Triton gradient writer's second grid axis")
    if topk and K * K > TRITON_TENSOR_LIMIT:
        return (f"reduce='topk_mean' compares each target's K entries pairwise in one [K, K] Triton tensor of at "
                f"most 2^20 elements: K <= 1024, got K = {K}")
    if K > TRITON_TENSOR_LIMIT:
        return f"a target's K entries are one Triton tensor of at most 2^20 elements, got K = {K}"
    return None


def refusal(c: CanonicalLabelMap, op: str = "label_map") -> Callable[[str], Optional[str]]:
    """``refusal(name)``: why backend ``name`` cannot take the canonical inputs ``c``, or None.
    The dense form and empty batches run aten ops (the reference) on every backend: any size."""
    def why(name: str) -> Optional[str]:
        if c.dense or c.logits.shape[0] == 0:
            return None
        limit = triton_limit(c.logits.shape[-1], *c.index.shape, c.topk) if name == "triton" else None
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
