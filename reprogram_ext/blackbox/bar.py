"""BAR's loss and label mapping (Tsai et al. 2020, yunyuntsai/Black-box-Adversarial-Reprogramming).

``bar_focal_loss`` — its ``cal_func.multi_focal_loss(4, 0.8, y, p)`` on the mapped probabilities
``p [B, T]`` and one-hot targets ``y``, with ``p`` clipped to ``[ε, 1 − ε]`` (ε = 1e-7)::

    y_t = y·p + (1 − y)(1 − p),   α_t = y·α + (1 − y)(1 − α)
    FL  = mean_c( α_t · (1 − y_t)^γ · (−log y_t) )      per sample, γ = 4, α = 0.8

and the estimator of ``estimator.py`` averages the per-sample losses over the batch, so the loss of a
query is ``mean_b FL_b``.

``bar_frequency_mapping`` — its multi-label mapping (``mapping_func.freq_idx_search``, ``mlm_num = 6``):
before training, each training sample is queried once with the initial program; for each target
class ``t`` and source ``s``, ``avg[t, s]`` is the mean of ``p_n[s]`` over the samples ``n`` of class
``t`` whose top-30 source probabilities include ``s`` (0 when none do). Each class ranks its sources by
``avg`` (top 30); a source ranked ``i`` by class ``t`` is kept for ``t`` unless another class ranks it
higher (``k < i``), or at the same rank with a larger ``avg`` (the original's rule for its two classes,
applied to every pair of classes). Each class takes its first ``k = 6`` kept sources; the mapped score
is their mean probability, ``out[:, t] = mean_j p[:, index[t, j]]``.

Deliberate differences from the original: it is written for two classes (ABIDE); this is the same rule
for any number. Ties in ``avg`` rank the lower source id first (NumPy's unstable ``argsort()[::-1]``
leaves them to the sort). The original ``freq_mapping`` reshapes the gathered ``[B, 2·6]`` probabilities
to ``[B, 6, 2]``, so each "class" averages alternating entries of both classes' lists (a layout bug);
here each class averages its own ``k`` sources. A class left with fewer than ``k`` sources is an error
(the original builds a ragged array).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_GAMMA, FOCAL_ALPHA, FOCAL_EPS = 4.0, 0.8, 1e-7
MLM_NUM, TOP = 6, 30


def bar_focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA,
                   alpha: float = FOCAL_ALPHA, reduction: str = "mean") -> torch.Tensor:
    """``mean_b mean_c α_t (1 − y_t)^γ (−log y_t)`` on mapped probabilities ``probs [B, T]`` (see the module).

    ``reduction="sum"``: summed over the batch instead (the white-box original differentiates the sum
    of the per-sample losses, ``presets.focal_loss``).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"bar_focal_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    if probs.dim() != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"bar_focal_loss: expected probs [B, T] and target [B], got {tuple(probs.shape)} and "
                         f"{tuple(target.shape)}")
    y = F.one_hot(target.long(), probs.shape[1]).to(probs.dtype)
    p = probs.clamp(FOCAL_EPS, 1.0 - FOCAL_EPS)
    y_t = y * p + (1 - y) * (1 - p)
    alpha_t = y * alpha + (1 - y) * (1 - alpha)
    per_sample = (alpha_t * (1 - y_t) ** gamma * -torch.log(y_t)).mean(1)
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def _average_top_probabilities(probs: torch.Tensor, target: torch.Tensor, num_target: int, top: int) -> torch.Tensor:
    """``avg [T, S]``: per class, the mean of each source's probability over the samples whose top-``top`` holds it."""
    values, idx = probs.double().topk(top, dim=1)
    sums = torch.zeros(num_target, probs.shape[1], dtype=torch.float64)
    counts = torch.zeros_like(sums)
    rows = target.long().cpu()[:, None].expand_as(idx)
    sums.index_put_((rows.reshape(-1), idx.cpu().reshape(-1)), values.cpu().reshape(-1), accumulate=True)
    counts.index_put_((rows.reshape(-1), idx.cpu().reshape(-1)), torch.ones(idx.numel(), dtype=torch.float64),
                      accumulate=True)
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))


def bar_frequency_mapping(probs: torch.Tensor, target: torch.Tensor, num_target: int, k: int = MLM_NUM,
                          top: int = TOP, layout: str = "per_class") -> torch.Tensor:
    """BAR's multi-label mapping ``index [T, k]`` from source probabilities ``probs [N, S]`` (see the module).

    ``layout="per_class"``: row ``t`` holds class ``t``'s own ``k`` kept sources. ``layout="original"``:
    the original's ``reshape``: the classes' lists, class after class, read as a ``[k, T]`` array, so
    target ``t`` averages ``flat[j·T + t]`` (for ``T > 1`` a mix of the classes' lists, the white-box
    preset's ``presets.bar_frequency_index``).
    """
    if layout not in ("per_class", "original"):
        raise ValueError(f"bar_frequency_mapping: layout must be 'per_class' or 'original', got {layout!r}")
    if probs.dim() != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"bar_frequency_mapping: expected probs [N, S] and target [N], got {tuple(probs.shape)} "
                         f"and {tuple(target.shape)}")
    S = probs.shape[1]
    for name, value in (("num_target", num_target), ("k", k), ("top", top)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"bar_frequency_mapping: {name} must be a positive int, got {value!r}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_target):
        raise ValueError(f"bar_frequency_mapping: target values must lie in [0, {num_target})")
    top = min(top, S)
    avg = _average_top_probabilities(probs, target, num_target, top)
    # Stable descending order: ties rank the lower source id first.
    order = torch.sort(-avg, dim=1, stable=True).indices[:, :top]  # [T, top]
    rank = torch.full((num_target, S), top, dtype=torch.long)  # top = "not in the list"
    rank.scatter_(1, order, torch.arange(top).expand(num_target, top).contiguous())
    index = []
    for t in range(num_target):
        kept = []
        for i, s in enumerate(order[t].tolist()):
            others = [u for u in range(num_target) if u != t]
            if all(rank[u, s] > i or (rank[u, s] == i and avg[t, s] > avg[u, s]) for u in others):
                kept.append(s)
        if len(kept) < k:
            raise ValueError(f"bar_frequency_mapping: target class {t} keeps only {len(kept)} source classes of its "
                             f"top {top} (the others rank them higher), fewer than k={k}. Use a smaller k or more "
                             f"source classes")
        index.append(kept[:k])
    index = torch.tensor(index, dtype=torch.long, device=probs.device)
    return index if layout == "per_class" else index.reshape(k, num_target).t().contiguous()


__all__ = ["bar_focal_loss", "bar_frequency_mapping"]
