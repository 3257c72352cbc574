"""Similarity-based label mapping (Yen et al. 2021): each target class takes the ``k`` source classes
most similar to it, by class embeddings or by the source model's mean predictions.

- ``similarity_mapping(target_embeddings [T, E], source_embeddings [S, E], k)``:
  ``sim[t, s] = cos(target_t, source_s)`` (``metric="dot"``: the dot product);
- ``mean_prediction_mapping(logits [*, S], target [*], T, k)``: ``sim[t, s]`` = the mean over the
  samples of class t of ``softmax(logits)[s]`` (``pre="none"``: of the logits).

Both return an index ``[T, k]`` for ``label_map``'s sparse form: per target, the k most similar
sources in decreasing similarity (ties: the lower source first). ``distinct=True`` gives each source
to at most one target, greedily by the global maximum of what remains (ILM-VP's
``frequency_mapping`` on ``simᵀ``; needs ``k·T <= S``).
"""
from __future__ import annotations

import torch

from . import frequency_mapping

METRICS = ("cosine", "dot")
PRES = ("softmax", "none")


def _check_k(fn: str, k, S: int, T: int, distinct: bool) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{fn}: k must be a positive int, got {k!r}")
    if k > S:
        raise ValueError(f"{fn}: k must be <= S={S} source classes, got k={k}")
    if distinct and k * T > S:
        raise ValueError(f"{fn}: distinct=True needs k*T <= S (each source used once), got k={k}, T={T}, S={S}")
    return k


def top_sources(sim: torch.Tensor, k: int, distinct: bool = False) -> torch.Tensor:
    """index ``[T, k]``: per row of ``sim [T, S]`` the k largest columns (stable: ties keep the lower
    column first); ``distinct``: the greedy one-source-per-target assignment."""
    if distinct:
        return frequency_mapping(sim.t().contiguous(), k)
    return torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k].contiguous()


def similarity_mapping(target_embeddings: torch.Tensor, source_embeddings: torch.Tensor, k: int = 1, *,
                       metric: str = "cosine", distinct: bool = False) -> torch.Tensor:
    """index ``[T, k]`` of the sources whose embeddings are most similar to each target's."""
    fn = "similarity_mapping"
    for name, t in (("target_embeddings", target_embeddings), ("source_embeddings", source_embeddings)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point() or 0 in t.shape:
            raise ValueError(f"{fn}: {name} must be a non-empty floating [*, E] matrix, got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    if target_embeddings.shape[1] != source_embeddings.shape[1]:
        raise ValueError(f"{fn}: target_embeddings [T, E] and source_embeddings [S, E] must share E, got "
                         f"{tuple(target_embeddings.shape)} and {tuple(source_embeddings.shape)}")
    if metric not in METRICS:
        raise ValueError(f"{fn}: metric must be one of {METRICS}, got {metric!r}")
    T, S = target_embeddings.shape[0], source_embeddings.shape[0]
    _check_k(fn, k, S, T, distinct)
    a, b = target_embeddings.detach().float(), source_embeddings.detach().float().to(target_embeddings.device)
    if metric == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        b = torch.nn.functional.normalize(b, dim=1)
    return top_sources(a @ b.t(), k, distinct)


def mean_predictions(logits: torch.Tensor, target: torch.Tensor, num_targets: int, *,
                     pre: str = "softmax") -> torch.Tensor:
    """``[T, S]``: row t the mean of ``pre(logits)`` over the samples of target class t."""
    fn = "mean_prediction_mapping"
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise TypeError(f"{fn}: logits must be a floating tensor [*, S], got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"{fn}: target must be an integer tensor [*], got {getattr(target, 'dtype', type(target))}")
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{fn}: target must have logits' leading shape {tuple(logits.shape[:-1])}, got "
                         f"{tuple(target.shape)}")
    if isinstance(num_targets, bool) or not isinstance(num_targets, int) or num_targets < 1:
        raise ValueError(f"{fn}: num_targets must be a positive int, got {num_targets!r}")
    if pre not in PRES:
        raise ValueError(f"{fn}: pre must be one of {PRES}, got {pre!r}")
    S = logits.shape[-1]
    x = logits.detach().reshape(-1, S).float()
    y = target.reshape(-1).to(torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_targets):
        raise ValueError(f"{fn}: target must hold classes in [0, T={num_targets}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    v = torch.softmax(x, dim=1) if pre == "softmax" else x
    sums = v.new_zeros(num_targets, S).index_add_(0, y, v)
    counts = torch.bincount(y, minlength=num_targets)
    if bool((counts == 0).any()):
        t = int((counts == 0).nonzero()[0, 0])
        raise ValueError(f"{fn}: target class {t} has no sample: its mean prediction is undefined")
    return sums / counts[:, None].to(sums.dtype)


def mean_prediction_mapping(logits: torch.Tensor, target: torch.Tensor, num_targets: int, k: int = 1, *,
                            pre: str = "softmax", distinct: bool = False) -> torch.Tensor:
    """index ``[T, k]`` of the sources with the largest mean prediction over each target class's samples."""
    sim = mean_predictions(logits, target, num_targets, pre=pre)
    _check_k("mean_prediction_mapping", k, sim.shape[1], num_targets, distinct)
    return top_sources(sim, k, distinct)
