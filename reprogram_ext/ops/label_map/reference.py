"""Pure-PyTorch label_map and mapped_cross_entropy: the oracle of the tests and the eager
baseline of the benchmarks. Plain torch ops differentiated by autograd, math in float32 at least
(float64 for float64 logits); results in the logits' dtype. No input validation (the public
functions validate before calling these).

    v = pre(logits)  over the S source classes (none / softmax / log_softmax)
    sparse: out[..., t] = reduce_k  w[t, k] * v[..., index[t, k]]  over k with index[t, k] >= 0
            sum: sum_k w v;  mean: sum_k w v / sum_k w;  max: max_k w v (gradient to the first max);
            topk_mean: (1/k) sum of the v of the k valid entries with the largest logits
                       (unweighted; ties: lower position first)
            (options.py holds each pre and reduce as a torch function)
    dense:  out = v @ weight                        (weight [S, T])
    mapped_cross_entropy = F.cross_entropy(L, target, ...),  L = out, or log(out) for pre="softmax"
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .options import PRE_FUNCTIONS, REDUCE_FUNCTIONS


def _compute_dtype(logits: torch.Tensor, compute_dtype: Optional[torch.dtype]) -> torch.dtype:
    if compute_dtype is not None:
        return compute_dtype
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def label_map_reference(logits: torch.Tensor, index: Optional[torch.Tensor] = None,
                        weight: Optional[torch.Tensor] = None, *, reduce: str = "mean",
                        pre: str = "none", compute_dtype: Optional[torch.dtype] = None,
                        topk: int = 0) -> torch.Tensor:
    """``[*, S]`` source scores -> ``[*, T]`` target scores (module docstring has the formula);
    ``topk``: the k of ``reduce="topk_mean"``.

    ``compute_dtype`` overrides the math dtype (tests use the logits' own low precision for the
    fp16/bf16 tolerance rule)."""
    compute = _compute_dtype(logits, compute_dtype)
    v = PRE_FUNCTIONS[pre](logits.to(compute))
    if index is None:
        return (v @ weight.to(compute)).to(logits.dtype)
    if index.dim() == 1:
        index = index.unsqueeze(1)
    valid = index >= 0
    # padding entries hold 0 and weight 0 (never the value of source 0 or a padding weight: an
    # infinite logit or a nan weight there would turn 0 * inf into nan)
    gathered = torch.where(valid, v[..., index.clamp(min=0)], 0.0)  # [*, T, K]
    key = logits.to(compute)[..., index.clamp(min=0)]  # the logits: topk_mean's order
    w = torch.ones(index.shape, dtype=compute, device=logits.device) if weight is None else weight.to(compute)
    w = torch.where(valid, w, 0.0)
    out = REDUCE_FUNCTIONS[reduce](gathered * w, w, valid, topk, key)
    return out.to(logits.dtype)


def mapped_cross_entropy_reference(logits: torch.Tensor, target: torch.Tensor, index: Optional[torch.Tensor] = None,
                                   weight: Optional[torch.Tensor] = None, *, reduce: str = "mean",
                                   pre: str = "none", reduction: str = "mean", label_smoothing: float = 0.0,
                                   ignore_index: int = -100,
                                   compute_dtype: Optional[torch.dtype] = None, topk: int = 0) -> torch.Tensor:
    """``F.cross_entropy(L, target)`` with ``L = label_map(...)``, or its log for ``pre="softmax"``."""
    compute = _compute_dtype(logits, compute_dtype)
    L = label_map_reference(logits.to(compute), index, weight, reduce=reduce, pre=pre, compute_dtype=compute,
                            topk=topk)
    if pre == "softmax":  # the plain formula: -inf once p underflows (the fused kernels work in log space)
        L = torch.log(L)
    T = L.shape[-1]
    loss = F.cross_entropy(L.reshape(-1, T), target.reshape(-1), reduction=reduction,
                           label_smoothing=label_smoothing, ignore_index=ignore_index)
    if reduction == "none":
        loss = loss.reshape(target.shape)
    return loss.to(logits.dtype)

