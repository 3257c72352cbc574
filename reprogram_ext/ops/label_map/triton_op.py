"""Triton backend of label_map and mapped_cross_entropy: the ops
``reprogram_ext::label_map_{forward,backward}_triton`` and
``reprogram_ext::mapped_cross_entropy_{forward,backward}_triton``, with the schemas and results of
the compiled ops (csrc/schemas.cpp: ``str reduce, str pre``, the names of options.py). Kernels:
``triton_kernels.py``.

Imported lazily on the first ``backend="triton"`` call (TRITON_INTERPRET must be set before
triton is imported). On CUDA tensors the kernels run on the current stream; on CPU tensors under
the Triton interpreter.

Launch plan: one program per row for the per-target math (forward, gradient coefficients, the
latter also writing each row's D = sum of its coefficients); the backward then writes each gradient
element once in [row, block] programs: the dense term (-D softmax, or 0) plus its source's summed
coefficients, from the index's source -> entries map (triton_source_map.py: sorted once per index
tensor and cached, eagerly and under torch.compile, where the writer is an opaque op that finds the map
at run time; deterministic, no atomics). label_map's backward is 2 launches, mapped CE's 1
(plus the map's sort on the first call with an index, and aten's sum of the weight-gradient rows).
Where every target fits one register tile (T <= BLOCK_T) the forwards load the index and the mapped
logits once, and where they also stream the row for its normaliser they take the mapped logits during
that pass, so that the row is read once (``captures``, ``ce_tiling``; bench/notes/label_map.md, session 9).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import autograd as registration
from . import triton_kernels as kernels
from .args import accumulation_dtype as _acc_torch
from .backends import GRID_BLOCK_S, triton_limit
from .options import PRES, REDUCES, TOPK_REDUCES, ce_needs_lse, map_needs_lse
from .triton_source_map import source_map


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _blocks(S: int, T: int, K: int, device: torch.device, topk: int = 0) -> dict:
    """Tile sizes: a [BLOCK_T, BLOCK_K] mapping tile of <= 1024 entries (topk_mean: its
    [BLOCK_T, BLOCK_K, BLOCK_K] rank comparisons <= 4096: 106 registers on sm_90 at K = 8, 191 at 8192),
    BLOCK_S row blocks."""
    block_k = triton.next_power_of_2(K)
    tile = 1024 if not topk else max(block_k, 4096 // block_k)
    block_t = max(1, min(triton.next_power_of_2(T), tile // block_k))
    block_s = GRID_BLOCK_S if device.type == "cuda" else min(triton.next_power_of_2(S), 4096)
    return dict(BLOCK_T=block_t, BLOCK_K=block_k, BLOCK_S=block_s)


def captures(S: int, T: int, blocks: dict, pre: str) -> bool:
    """Whether the label_map forward takes the mapped logits during its row pass (CAPTURE): when it has a
    row pass (pre softmax / log_softmax), the row spans several row blocks (with one block the gathers
    after the pass read the block just loaded, from L1 / L2) and every target fits one tile of registers
    (T <= BLOCK_T; more targets keep the gathers after the pass)."""
    return map_needs_lse(pre) and S > blocks["BLOCK_S"] and T <= blocks["BLOCK_T"]


def ce_tiling(S: int, T: int, blocks: dict, need_lse: bool, weight_grad: bool) -> dict:
    """mapped_ce_kernel's ONE_TILE (every target in one tile, T <= BLOCK_T: the index and the mapped
    logits loaded once, kept in registers for all three steps) and CAPTURE (ONE_TILE and a forward row
    pass over several row blocks: the mapped logits taken during the pass, as in captures())."""
    one_tile = T <= blocks["BLOCK_T"]
    return dict(ONE_TILE=one_tile, CAPTURE=one_tile and need_lse and not weight_grad and S > blocks["BLOCK_S"])


def _reduce_launch(reduce: str, topk: int) -> dict:
    """The kernels' reduce constexprs: topk_mean is the mean over the entries SELECT_TOP keeps."""
    select = reduce in TOPK_REDUCES
    return dict(REDUCE="mean" if select else reduce, SELECT_TOP=select)


def _check(logits: Tensor, index: Tensor, reduce: str, pre: str, topk: int = 0) -> None:
    """What would make these kernels silently wrong, checked again for direct callers of the ops:
    the option names (options.py) and the input limits (backends.py triton_limit: backend="auto"
    never picks Triton past them, backend="triton" refuses). The other checks of the canonical form
    are the front end's (args.py canonicalize); the ops are called with its output."""
    torch._check_value(reduce in REDUCES,
                       lambda: f"label_map (triton): reduce must be one of {REDUCES}, got {reduce!r}")
    torch._check_value(pre in PRES, lambda: f"label_map (triton): pre must be one of {PRES}, got {pre!r}")
    T, K = index.shape
    if reduce in TOPK_REDUCES:
        torch._check_value(1 <= topk <= K, lambda: f"label_map (triton): reduce={reduce!r} needs topk in [1, K={K}], "
                                                   f"got topk={topk}")
    else:
        torch._check_value(topk == 0, lambda: f"label_map (triton): topk must be 0 for reduce={reduce!r}, got {topk}")
    limit = triton_limit(logits.shape[-1], T, K, topk)
    torch._check_value(limit is None, lambda: f"label_map (triton): {limit}")


def _write_gradient(logits: Tensor, index: Tensor, coefficients: Tensor, dense: Optional[Tensor],
                    scale: Optional[Tensor]) -> Tensor:
    """grad[n] = scale[n] * (-D_n softmax(x[n]) [dense = (max, log_sum, D) rows] + sum of coefficients[n]
    over each source's entries), one launch of [row, block] programs (kernels.gradient_row_kernel).

    Eagerly the launch is made here. While torch.compile traces the op's body (dynamo, or the fake /
    functional tensors of AOT autograd: on CUDA, triton_op's body is traced into the graph), it is the
    opaque op ``reprogram_ext::label_map_gradient_rows_triton`` instead: its body runs at run time on the
    real index, so the index's source map is looked up in the cache (triton_source_map.py) on every
    compiled call and sorted only when that index tensor is new or was written in place, never traced
    into the graph as a sort per step."""
    if torch.compiler.is_compiling() or type(index) is not torch.Tensor:
        return torch.ops.reprogram_ext.label_map_gradient_rows_triton(logits, index, coefficients, dense, scale)
    return _launch_gradient_writer(logits, index, coefficients, dense, scale)


def _launch_gradient_writer(logits: Tensor, index: Tensor, coefficients: Tensor, dense: Optional[Tensor],
                            scale: Optional[Tensor]) -> Tensor:
    N, S = logits.shape
    grad = torch.empty_like(logits)
    if N == 0:
        return grad
    block_s = _blocks(S, 1, 1, logits.device)["BLOCK_S"]
    m = source_map(index, S, block_s)
    wrap_triton(kernels.gradient_row_kernel)[(N, triton.cdiv(S, block_s))](
        logits, dense if dense is not None else logits, coefficients, scale if scale is not None else logits,
        m.has, m.ptr, m.ent, m.block_max, grad, S, index.numel(), DENSE=dense is not None,
        HAS_SCALE=scale is not None, BLOCK_S=block_s, ACC=_acc(logits.dtype))
    return grad


@torch.library.custom_op("reprogram_ext::label_map_gradient_rows_triton", mutates_args=())
def _gradient_rows_op(logits: Tensor, index: Tensor, coefficients: Tensor, dense: Optional[Tensor],
                      scale: Optional[Tensor]) -> Tensor:
    """_write_gradient's launch as an op that torch.compile does not trace into (its docstring)."""
    return _launch_gradient_writer(logits, index, coefficients, dense, scale)


@_gradient_rows_op.register_fake
def _(logits, index, coefficients, dense, scale):
    return torch.empty_like(logits)


def label_map_forward_triton(logits: Tensor, index: Tensor, weight: Optional[Tensor], reduce: str,
                             pre: str, topk: int = 0) -> Tuple[Tensor, Tensor]:
    _check(logits, index, reduce, pre, topk)
    N, S = logits.shape
    T, K = index.shape
    out = logits.new_empty((N, T))
    stats = logits.new_empty((N, 2) if map_needs_lse(pre) else (0,), dtype=_acc_torch(logits.dtype))
    if N > 0:
        blocks = _blocks(S, T, K, logits.device, topk)
        wrap_triton(kernels.label_map_forward_kernel)[(N,)](
            logits, index, weight if weight is not None else logits, out, stats if map_needs_lse(pre) else out, S, T, K,
            topk, PRE=pre, HAS_W=weight is not None, ACC=_acc(logits.dtype), **_reduce_launch(reduce, topk),
            CAPTURE=captures(S, T, blocks, pre), **blocks)
    return out, stats


def label_map_backward_triton(grad_out: Tensor, logits: Tensor, index: Tensor, weight: Optional[Tensor],
                              row_lse: Tensor, reduce: str, pre: str,
                              need_weight_grad: bool, topk: int = 0) -> Tuple[Tensor, Tensor]:
    _check(logits, index, reduce, pre, topk)
    N, S = logits.shape
    T, K = index.shape
    acc = _acc_torch(logits.dtype)
    need_w = need_weight_grad and weight is not None
    a = logits.new_empty((N, T, K), dtype=acc)
    gw_rows = logits.new_empty((N, T, K) if need_w else (0,), dtype=acc)
    dense = logits.new_empty((N, 3), dtype=acc) if map_needs_lse(pre) else None  # (max, log_sum, D) per row
    if N > 0:
        wrap_triton(kernels.label_map_coefficients_kernel)[(N,)](
            grad_out.contiguous(), logits, index, weight if weight is not None else logits,
            row_lse if map_needs_lse(pre) else logits, a, gw_rows if need_w else a, dense if dense is not None else a,
            S, T, K, topk, PRE=pre, HAS_W=weight is not None, WEIGHT_GRAD=need_w, ACC=_acc(logits.dtype),
            **_reduce_launch(reduce, topk), BLOCK_T=_blocks(S, T, K, logits.device, topk)["BLOCK_T"],
            BLOCK_K=triton.next_power_of_2(K))
    grad = _write_gradient(logits, index, a, dense, None)
    gw = gw_rows.sum(0) if need_w else gw_rows
    return grad, gw


def _ce_launch(logits, target, index, weight, scale, stats, loss, a, dense, reduce, pre, label_smoothing,
               ignore_index, topk: int, weight_grad: bool) -> None:
    N, S = logits.shape
    T, K = index.shape
    if N == 0:
        return
    blocks = _blocks(S, T, K, logits.device, topk)
    need_lse = ce_needs_lse(pre, reduce, weight is not None)
    wrap_triton(kernels.mapped_ce_kernel)[(N,)](
        logits, target, index, weight if weight is not None else logits, scale, stats, loss, a, dense,
        S, T, K, ignore_index, topk, EPS=float(label_smoothing), PRE=pre, HAS_W=weight is not None,
        NEED_LSE=need_lse, WEIGHT_GRAD=weight_grad, ACC=_acc(logits.dtype), **_reduce_launch(reduce, topk),
        **ce_tiling(S, T, blocks, need_lse, weight_grad), **blocks)


def mapped_cross_entropy_forward_triton(logits: Tensor, target: Tensor, index: Tensor, weight: Optional[Tensor],
                                        reduce: str, pre: str, label_smoothing: float,
                                        ignore_index: int, topk: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    _check(logits, index, reduce, pre, topk)
    N = logits.shape[0]
    T, K = index.shape
    acc = _acc_torch(logits.dtype)
    loss = logits.new_empty((N,), dtype=acc)
    unit_grad = logits.new_empty((N, T, K), dtype=acc)
    dense = logits.new_empty((N, 3) if ce_needs_lse(pre, reduce, weight is not None) else (0,), dtype=acc)
    _ce_launch(logits, target, index, weight, loss, loss, loss, unit_grad, dense if dense.numel() else loss,
               reduce, pre, label_smoothing, ignore_index, topk, weight_grad=False)
    return loss, unit_grad, dense


def mapped_cross_entropy_backward_triton(grad_loss: Tensor, logits: Tensor, target: Tensor, index: Tensor,
                                         weight: Optional[Tensor], unit_grad: Tensor, dense: Tensor, reduce: str,
                                         pre: str, label_smoothing: float, ignore_index: int,
                                         need_weight_grad: bool, topk: int = 0) -> Tuple[Tensor, Tensor]:
    _check(logits, index, reduce, pre, topk)
    N = logits.shape[0]
    T, K = index.shape
    need_w = need_weight_grad and weight is not None
    has_dense = ce_needs_lse(pre, reduce, weight is not None)
    grad_loss = grad_loss.contiguous()
    grad = _write_gradient(logits, index, unit_grad.contiguous(), dense if has_dense else None, grad_loss)
    gw_rows = logits.new_empty((N, T, K) if need_w else (0,), dtype=_acc_torch(logits.dtype))
    if need_w:
        _ce_launch(logits, target, index, weight, grad_loss, dense if has_dense else grad_loss, grad_loss, gw_rows,
                   grad_loss, reduce, pre, label_smoothing, ignore_index, topk, weight_grad=True)
    return grad, gw_rows.sum(0) if need_w else gw_rows


def forward_ops():
    """(label_map_forward, mapped_cross_entropy_forward) of the Triton backend."""
    return torch.ops.reprogram_ext.label_map_forward_triton, torch.ops.reprogram_ext.mapped_cross_entropy_forward_triton


def _define_ops() -> None:
    """Defines the four ops with ``torch.library.triton_op`` (torch.compile sees the launches). Under
    TRITON_INTERPRET=1 the kernels are interpreted functions that wrap_triton cannot trace (tracing
    would run them on fake tensors), so the ops are opaque ``custom_op``s with the same bodies and
    the fake kernels of the compiled ops instead."""
    traceable = isinstance(kernels.mapped_ce_kernel, triton.runtime.JITFunction)
    define = torch.library.triton_op if traceable else torch.library.custom_op
    fakes = {
        "label_map_forward": (label_map_forward_triton, registration.fake_label_map_forward),
        "label_map_backward": (label_map_backward_triton, registration.fake_label_map_backward),
        "mapped_cross_entropy_forward": (mapped_cross_entropy_forward_triton, registration.fake_ce_forward),
        "mapped_cross_entropy_backward": (mapped_cross_entropy_backward_triton, registration.fake_ce_backward),
    }
    for name, (fn, fake) in fakes.items():
        op = define(f"reprogram_ext::{name}_triton", mutates_args=())(fn)
        if not traceable:
            op.register_fake(fake)
    ops = torch.ops.reprogram_ext
    registration.register_autograd("reprogram_ext::label_map_forward_triton", ops.label_map_backward_triton,
                                   "reprogram_ext::mapped_cross_entropy_forward_triton",
                                   ops.mapped_cross_entropy_backward_triton)


_define_ops()
