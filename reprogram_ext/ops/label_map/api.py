"""``label_map`` and ``mapped_cross_entropy``: batched label-mapping aggregation (docs/ops/label_map.md)."""
from __future__ import annotations

from typing import Optional

import torch

from ... import _extension  # noqa: F401  (loads the compiled kernels when built)
from .args import (
    CanonicalLabelMap,
    canonical_target,
    canonicalize,
    check_index_values,
    check_loss_options,
    check_weight_values,
    kernel_index,
    values_checked_by_kernel,
)
from ...backend_registry import resolve_backend
from .backends import auto_order, refusal
from .reference import label_map_reference, mapped_cross_entropy_reference


def _ops(backend: str):
    """(label_map_forward, mapped_cross_entropy_forward) of a kernel backend ("cpu"/"cuda"/"triton")."""
    if backend == "triton":
        from . import triton_op as triton_label_map

        return triton_label_map.forward_ops()
    return torch.ops.reprogram_ext.label_map_forward, torch.ops.reprogram_ext.mapped_cross_entropy_forward


def _prepare(op: str, logits, index, weight, reduce, pre, topk, backend: str):
    """(canonical inputs, the backend chosen for them, whether its kernel checks the index and target
    values); the index values are checked here when the kernel does not check them."""
    c = canonicalize(op, logits, index, weight, reduce, pre, topk)
    chosen = resolve_backend(backend, logits.device, f"{op}_forward", refusal(c, op), auto_order(c, logits.device.type))
    kernel_index(c, chosen)
    check_weight_values(op, c, log_of_mapped=op == "mapped_cross_entropy" and pre == "softmax")
    kernel_checks = values_checked_by_kernel(chosen, c)
    if not kernel_checks:
        check_index_values(op, c)
    return c, chosen, kernel_checks


def _dense_values(c: CanonicalLabelMap) -> torch.Tensor:
    """Dense form on every backend: ``pre(logits) @ weight`` with aten ops (a GEMM: BLAS/cuBLAS)."""
    return label_map_reference(c.logits, None, c.weight, pre=c.pre)


def label_map(
    logits: torch.Tensor,
    index: Optional[torch.Tensor] = None,
    weight: Optional[torch.Tensor] = None,
    *,
    reduce: str = "mean",
    pre: str = "none",
    topk: Optional[int] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Map source-class scores ``[*, S]`` to target-class scores ``[*, T]``.

    With ``v = pre(logits)`` over the last dim (``pre``: ``none`` / ``softmax`` / ``log_softmax``):

    - sparse form, ``index`` int ``[T, K]`` (``-1`` pads ragged groups; ``[T]`` means K = 1) and
      optional ``weight [T, K]``: over the valid ``k`` of each target ``t``,
      ``sum``: ``Σ_k w v[index[t,k]]``; ``mean``: ``Σ_k w v / Σ_k w``; ``max``: ``max_k w v``
      (gradient to the first maximal entry); ``topk_mean`` with ``topk=k`` (no weight): the mean
      of the k largest valid ``v`` of each target, the gradient to those k entries (ties: the
      lower position first; a group with fewer than k valid entries is an error). Duplicated
      sources are allowed.
    - dense form, ``index=None`` and ``weight [S, T]`` (BLM ω or a learned matrix): ``v @ weight``.

    Differentiable w.r.t. ``logits`` and ``weight``. Output dtype: ``logits.dtype``; math in float32
    at least, in float64 for float64 logits. ``backend``: auto / cuda / triton / cpu / reference.

    Examples::

        # AutoVP / ILM-VP: mean of the logits of k sources per target
        out = label_map(logits, index)                        # index [T, k]
        # Voice2Series / BAR: mean of source probabilities
        probs = label_map(logits, index, pre="softmax")
        # BLM: dense ω [S, T] on probabilities
        probs = label_map(logits, weight=omega, pre="softmax")
        # AttrVR: mean of the 3 largest attribute similarities per class
        score = label_map(similarities, index, reduce="topk_mean", topk=3)
    """
    c, chosen, _ = _prepare("label_map", logits, index, weight, reduce, pre, topk, backend)
    if c.dense:
        out = _dense_values(c)
    elif chosen == "reference" or c.logits.shape[0] == 0:
        out = label_map_reference(c.logits, c.index, c.weight, reduce=c.reduce, pre=c.pre, topk=c.topk)
    else:
        forward, _ = _ops(chosen)
        out, _ = forward(c.logits, c.index, c.weight, c.reduce, c.pre, c.topk)
    return out if len(c.lead_shape) == 1 else out.reshape(*c.lead_shape, c.num_targets)


def mapped_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    index: Optional[torch.Tensor] = None,
    weight: Optional[torch.Tensor] = None,
    *,
    reduce: str = "mean",
    pre: str = "none",
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    topk: Optional[int] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``F.cross_entropy(L, target, reduction, label_smoothing, ignore_index)`` on mapped logits.

    ``L = label_map(logits, index, weight, reduce=reduce, pre=pre)``, except with
    ``pre="softmax"``, where ``L = log(label_map(...))`` (the loss on averaged probabilities of
    Voice2Series / BAR). One fused op forward and backward for the sparse form, computed in log
    space: ``log mean_k p_k = m + log Σ_k w_k exp(x_k − m) − log Σ_k w_k − lse``; the row
    constant ``lse`` cancels in the cross-entropy, so the softmax loss reads only the T·K mapped
    logits, and its backward writes the ``[*, S]`` gradient once. The dense form runs aten ops.

    ``topk``: the k of ``reduce="topk_mean"`` (as in label_map). ``target``: integer class
    indices with logits' leading shape. Returns a scalar (``mean``,
    ``sum``) or the leading shape (``none``), in ``logits.dtype``.

    Example (Voice2Series: 3 source classes per target, loss on their averaged probabilities)::

        loss = mapped_cross_entropy(logits, y, index, pre="softmax")
        loss.backward()
    """
    op = "mapped_cross_entropy"
    eps = check_loss_options(op, reduction, label_smoothing)
    c, chosen, kernel_checks = _prepare(op, logits, index, weight, reduce, pre, topk, backend)
    y = canonical_target(op, target, c.lead_shape, c.num_targets, ignore_index, check_values=not kernel_checks)
    if c.dense or chosen == "reference" or c.logits.shape[0] == 0:
        loss = mapped_cross_entropy_reference(
            c.logits, y, c.index, c.weight, reduce=c.reduce, pre=c.pre, reduction=reduction,
            label_smoothing=eps, ignore_index=ignore_index, topk=c.topk,
        )
        return loss.reshape(c.lead_shape) if reduction == "none" and len(c.lead_shape) != 1 else loss
    counted = _host_count(y, ignore_index) if reduction == "mean" else None
    _, forward = _ops(chosen)
    rows, _, _ = forward(c.logits, y, c.index, c.weight, c.reduce, c.pre, eps, ignore_index, c.topk)
    if reduction == "none":
        loss = rows if len(c.lead_shape) == 1 else rows.reshape(c.lead_shape)
    elif reduction == "sum":
        loss = rows.sum()
    else:
        loss = _mean_over_counted(rows, y, ignore_index, counted)
    return loss.to(logits.dtype)


def _host_count(y: torch.Tensor, ignore_index: int) -> Optional[int]:
    """The number of targets != ignore_index as a Python int, on CPU outside torch.compile (no device
    sync to pay); else None. Taken before the kernel runs, while the interpreter's data is still
    in cache (after it, the same ops measured 3x slower)."""
    if y.device.type == "cpu" and not torch.compiler.is_compiling():
        return int((y != ignore_index).sum())
    return None


def _mean_over_counted(rows: torch.Tensor, y: torch.Tensor, ignore_index: int,
                       counted: Optional[int]) -> torch.Tensor:
    """``rows.sum() / (number of targets != ignore_index)``, as F.cross_entropy: with no target
    counted the loss is nan (0/0) and its gradient zero (every row is ignored), never nan.

    With a host ``counted``, the common case of no ignored target is one ``mean`` (one autograd
    node instead of four ops and two nodes: ~40 us of a ~0.3 ms step at 1000 -> 10 classes)."""
    if counted is not None:
        if counted == 0:  # the nan is a constant: the rows' gradient stays 0 * (their zero unit grad)
            return rows.sum() * 0.0 + float("nan")
        return rows.mean() if counted == rows.numel() else rows.sum() / counted
    count = (y != ignore_index).sum().to(rows.dtype)
    nan_if_none = torch.where(count == 0, float("nan"), 0.0).to(rows.dtype)
    return rows.sum() / count.clamp(min=1) + nan_if_none
