"""The options of label_map / mapped_cross_entropy, defined once for the Python side
(docs/ops/label_map.md): the ``reduce`` and ``pre`` names, the loss ``reduction`` names, the
logits dtypes, and what the reference and the fake kernels need per option.

The ops take ``reduce`` and ``pre`` as these strings on every backend (the C++ schemas too:
``str reduce, str pre``; csrc/label_map/options.h parses them). Adding a reduce touches this
module (its name, reference reduction and ``LSE_VARIES`` entry), csrc/label_map/options.h (its
list entry and ``Reducer``) and triton_kernels.py (its tile-wise form).

With ``u_k = w_k v_k`` over the valid entries ``k`` of one target (``v = pre(logits)``):
``sum``: ``Σ_k u_k``; ``mean``: ``Σ_k u_k / Σ_k w_k``; ``max``: ``max_k u_k`` (gradient to the
first maximal k); ``topk_mean`` (``topk=k``, unweighted): ``(1/k) Σ_{j ∈ top_k} v_j`` over the k
largest valid entries, ties to the lower position, nan counting as the largest (the gradient goes
to those k entries).
"""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")

# pre: v = pre(logits) over the last dim.
PRE_FUNCTIONS = {
    "none": lambda x: x,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
}


def _masked_sum(wv: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, topk: int, key: torch.Tensor) -> torch.Tensor:
    return (wv * valid).sum(-1)


def _masked_mean(wv: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, topk: int, key: torch.Tensor) -> torch.Tensor:
    return (wv * valid).sum(-1) / (w * valid).sum(-1)


def _masked_topk_mean(wv: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, topk: int,
                      key: torch.Tensor) -> torch.Tensor:
    """The mean of the ``topk`` valid entries with the largest logits ``key`` (unweighted: w is 1 on
    valid entries; pre is increasing, so these are the largest values). The order is fixed by two
    stable sorts (not torch.topk, whose tie order is implementation-defined): by logit, descending,
    nan first, equal logits in position order; then valid entries before padding (a valid -inf
    entry still comes before the padding)."""
    by_value = torch.sort(key, dim=-1, descending=True, stable=True).indices
    valid_in_order = valid.expand(wv.shape).gather(-1, by_value).to(torch.int8)
    by_valid = torch.sort(valid_in_order, dim=-1, descending=True, stable=True).indices
    top = by_value.gather(-1, by_valid)[..., :topk]
    return wv.gather(-1, top).sum(-1) / topk


def _masked_max(wv: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, topk: int, key: torch.Tensor) -> torch.Tensor:
    """max over the valid k, the gradient to the first valid k reaching it (also when the max is -inf,
    where a padding entry filled with -inf would tie with it); nan when a valid entry is nan."""
    top = wv.masked_fill(~valid, float("-inf")).max(dim=-1, keepdim=True).values
    hit = valid & ((wv == top) | torch.isnan(wv))
    first = hit.int().argmax(dim=-1, keepdim=True)  # argmax returns the first maximal: the first hit
    return wv.gather(-1, first).squeeze(-1)


# reduce: the reference's reduction over the last (K) axis of (w * v [.., T, K], w [T, K], valid [T, K],
# topk: the k of topk_mean, 0 for the others; key [.., T, K]: the gathered logits, topk_mean's order).
REDUCE_FUNCTIONS = {"sum": _masked_sum, "mean": _masked_mean, "max": _masked_max, "topk_mean": _masked_topk_mean}

# reduce: whether L_t of pre log_softmax carries -c_t * lse with c_t differing between targets
# (c_t = the sum over k of d out_t / d v_k), given whether the map is weighted. csrc/label_map/
# options.h Reducer<R>::lse_varies says the same for the compiled kernels.
LSE_VARIES = {"sum": lambda weighted: True, "mean": lambda weighted: False, "max": lambda weighted: weighted,
              "topk_mean": lambda weighted: weighted}

PRES = tuple(PRE_FUNCTIONS)
REDUCES = tuple(REDUCE_FUNCTIONS)
# The reduces that take the ``topk`` parameter (and no weight): the others take ``topk`` = 0 (none).
TOPK_REDUCES = ("topk_mean",)
PLAIN_REDUCES = tuple(r for r in REDUCES if r not in TOPK_REDUCES)


def ce_needs_lse(pre: str, reduce: str, weighted: bool) -> bool:
    """Whether mapped_cross_entropy's gradient has the dense ``-D * softmax(x)`` term (its forward's
    ``dense`` output is ``[N, 3]``, else ``[0]``): pre log_softmax with an ``LSE_VARIES`` reduce.
    The one Python definition (fake kernels, Triton launcher) of csrc/label_map/math.h's
    ce_needs_lse, kept because the Triton backend and the fakes run without the C++ build."""
    return pre == "log_softmax" and LSE_VARIES[reduce](weighted)


def map_needs_lse(pre: str) -> bool:
    """Whether label_map's forward returns each row's log-sum-exp (``row_lse [N, 2]``): any pre but none."""
    return pre != "none"
