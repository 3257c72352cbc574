"""Choosing the output label mapping from source predictions (docs/mapping.md).

``count_matrix`` gathers ``D[s, t]``: how often source class ``s`` is predicted for samples of target
class ``t`` (or, BLM+, how much top-k probability it receives). The mappings are then chosen from
``D``: ILM-VP's greedy frequency mapping (``frequency_mapping``, an index ``[T, k]`` for the sparse
form of ``label_map``) or BLM's Bayesian weights (``bayesian_mapping``, a dense ``[S, T]`` matrix).
``random_mapping`` and ``identity_mapping`` are the data-free baselines (BAR / Elsayed).

Everything stays on the counts' device; ``count_matrix`` never synchronises with the host.
"""
from __future__ import annotations

from typing import Optional

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _check_count(value, name: str, fn: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return value


def count_matrix(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_targets: int,
    *,
    topk: Optional[int] = None,
    counts: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Source-prediction / target-label count matrix ``D`` of shape ``[S, T]``.

    For every sample ``n`` (``logits [*, S]``, ``target [*]`` with values in ``[0, T)``):

    - ``topk=None``: ``D[argmax_s logits[n, s], target[n]] += 1`` (ties: the lowest index ``s``);
    - ``topk=k`` (BLM+): ``D[s, target[n]] += softmax(logits[n])[s]`` for the ``k`` most probable
      ``s`` (ties: lower indices first).

    ``counts``: an existing floating ``[S, T]`` tensor on the logits' device to accumulate into (in
    place; it is returned). Otherwise a new float32 tensor is returned. Runs on the logits' device with
    scatter-adds only (no host synchronisation); logits are detached (no gradient flows into counts).
    """
    fn = "count_matrix"
    if not isinstance(logits, torch.Tensor) or logits.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{fn}: logits must be a floating tensor [*, S], got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(f"{fn}: logits must have shape [*, S] with S >= 1, got {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor) or target.dtype not in _INT_DTYPES:
        raise TypeError(f"{fn}: target must be an integer tensor [*], got "
                        f"{getattr(target, 'dtype', type(target).__name__)}")
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{fn}: target must have shape {tuple(logits.shape[:-1])} (logits' leading dims), "
                         f"got {tuple(target.shape)}")
    if target.device != logits.device:
        raise ValueError(f"{fn}: target is on {target.device} but logits are on {logits.device}")
    T = _check_count(num_targets, "num_targets", fn)
    S = logits.shape[-1]
    if topk is not None:
        _check_count(topk, "topk", fn)
        if topk > S:
            raise ValueError(f"{fn}: topk must be <= S={S}, got {topk}")
    if counts is None:
        counts = torch.zeros(S, T, dtype=torch.float32, device=logits.device)
    else:
        if not isinstance(counts, torch.Tensor) or counts.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{fn}: counts must be a floating tensor [S, T], got "
                            f"{getattr(counts, 'dtype', type(counts).__name__)}")
        if tuple(counts.shape) != (S, T):
            raise ValueError(f"{fn}: counts must have shape (S, T) = {(S, T)}, got {tuple(counts.shape)}")
        if counts.device != logits.device:
            raise ValueError(f"{fn}: counts is on {counts.device} but logits are on {logits.device}")
    if target.device.type == "cpu" and target.numel() > 0:  # free on the host; on a GPU it would sync
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= T:
            raise ValueError(f"{fn}: target values must lie in [0, {T}), got values in [{lo}, {hi}]")

    flat_logits = logits.detach().reshape(-1, S)
    flat_target = target.reshape(-1).long()
    if topk is None:
        source = flat_logits.argmax(dim=1)  # first maximal index on ties
        value = torch.ones(source.shape, dtype=counts.dtype, device=counts.device)
    else:
        probs = torch.softmax(flat_logits.float(), dim=1)
        top_prob, top_source = torch.sort(probs, dim=1, descending=True, stable=True)
        source = top_source[:, :topk].reshape(-1)
        value = top_prob[:, :topk].reshape(-1).to(counts.dtype)
        flat_target = flat_target.repeat_interleave(topk)
    counts.view(-1).index_add_(0, source * T + flat_target, value)
    return counts


def _check_counts_matrix(counts, fn: str) -> None:
    if not isinstance(counts, torch.Tensor) or counts.dtype not in _FLOAT_DTYPES + _INT_DTYPES:
        raise TypeError(f"{fn}: counts must be a real tensor [S, T], got "
                        f"{getattr(counts, 'dtype', type(counts).__name__)}")
    if counts.dim() != 2 or counts.shape[0] == 0 or counts.shape[1] == 0:
        raise ValueError(f"{fn}: counts must have shape [S, T] with S, T >= 1, got {tuple(counts.shape)}")


def frequency_mapping(counts: torch.Tensor, k: int = 1) -> torch.Tensor:
    """ILM-VP's greedy frequency label mapping: an index ``[T, k]`` (int64) of source classes.

    Repeat ``k*T`` times: take the global maximum ``(s, t)`` of the remaining entries of ``counts``
    (the first one in row-major order on ties), assign source ``s`` to target ``t`` (next free slot
    of row ``t`` of the index), remove row ``s``, and remove column ``t`` once it holds ``k`` sources.
    Each source is used at most once, so ``k*T <= S`` is required. Sources of one target are listed in
    the order they were assigned. Runs on the counts' device (one small host read per assignment).
    """
    fn = "frequency_mapping"
    _check_counts_matrix(counts, fn)
    _check_count(k, "k", fn)
    S, T = counts.shape
    if k * T > S:
        raise ValueError(f"{fn}: needs k*T <= S (each source class is used once), got k={k}, T={T}, S={S}")
    work = counts.detach().to(torch.float64 if counts.dtype == torch.float64 else torch.float32).clone()
    if not bool(torch.isfinite(work).all()):
        raise ValueError(f"{fn}: counts must be finite")
    # Per remaining row: its maximum over the remaining columns and the first column reaching it.
    # The global row-major-first maximum is then (first row with the largest row maximum, its column).
    # Removing a row only drops it; removing a column re-scans just the rows whose maximum sat there.
    row_arg = work.argmax(dim=1)
    row_max = work.gather(1, row_arg[:, None]).squeeze(1)
    index = torch.empty((T, k), dtype=torch.int64, device=work.device)
    filled = [0] * T
    for _ in range(k * T):
        s = int(row_max.argmax())
        t = int(row_arg[s])
        index[t, filled[t]] = s
        filled[t] += 1
        row_max[s] = float("-inf")
        if filled[t] == k:
            work[:, t] = float("-inf")
            stale = ((row_arg == t) & (row_max > float("-inf"))).nonzero().squeeze(1)
            if stale.numel() > 0:
                rows = work.index_select(0, stale)
                new_arg = rows.argmax(dim=1)
                row_arg[stale] = new_arg
                row_max[stale] = rows.gather(1, new_arg[:, None]).squeeze(1)
    return index


def bayesian_mapping(counts: torch.Tensor, laplace: float = 1.0) -> torch.Tensor:
    """BLM's Bayesian label-mapping weights ``omega [S, T]`` (float32, or float64 for float64 counts).

    ``P[s, t] = D[s, t] / (sum_t' D[s, t'] + laplace)`` (the conditional ``p(t | s)`` with Laplace
    smoothing ``laplace >= 0``; rows with a zero denominator give 0), then each column is normalised
    over the sources: ``omega[s, t] = P[s, t] / sum_s' P[s', t]`` (columns summing to 0 give 0).
    Use with the dense form of ``label_map``: ``target_logits = source_logits @ omega``.
    """
    fn = "bayesian_mapping"
    _check_counts_matrix(counts, fn)
    if isinstance(laplace, bool) or not isinstance(laplace, (int, float)):
        raise TypeError(f"{fn}: laplace must be a float, got {type(laplace).__name__}")
    if not laplace >= 0:
        raise ValueError(f"{fn}: laplace must be >= 0, got {laplace}")
    d = counts.detach().to(torch.float64 if counts.dtype == torch.float64 else torch.float32)
    row = d.sum(1, keepdim=True) + laplace
    p = torch.where(row > 0, d / torch.where(row > 0, row, torch.ones_like(row)), torch.zeros_like(d))
    col = p.sum(0, keepdim=True)
    return torch.where(col > 0, p / torch.where(col > 0, col, torch.ones_like(col)), torch.zeros_like(p))


def random_mapping(
    num_source: int,
    num_target: int,
    k: int = 1,
    generator: Optional[torch.Generator] = None,
    *,
    device=None,
) -> torch.Tensor:
    """A random mapping (BAR's random multi-label mapping): index ``[T, k]`` of distinct sources.

    ``index = randperm(S, generator)[:k*T].view(T, k)``: every target gets ``k`` different source
    classes and no source is shared. Needs ``k*T <= S``.
    """
    fn = "random_mapping"
    S = _check_count(num_source, "num_source", fn)
    T = _check_count(num_target, "num_target", fn)
    _check_count(k, "k", fn)
    if k * T > S:
        raise ValueError(f"{fn}: needs k*T <= S, got k={k}, num_target={T}, num_source={S}")
    gen_device = generator.device if generator is not None else "cpu"
    perm = torch.randperm(S, generator=generator, device=gen_device)
    return perm[: k * T].view(T, k).to(device if device is not None else gen_device)


def identity_mapping(num_target: int, k: int = 1, *, device=None) -> torch.Tensor:
    """The hard-coded mapping (Elsayed et al.): target ``t`` takes sources ``t*k, ..., t*k + k - 1``.

    ``index = arange(k*T).view(T, k)``, i.e. the first ``k*T`` source classes in order.
    """
    fn = "identity_mapping"
    T = _check_count(num_target, "num_target", fn)
    _check_count(k, "k", fn)
    return torch.arange(k * T, dtype=torch.int64, device=device).view(T, k)


__all__ = ["count_matrix", "frequency_mapping", "bayesian_mapping", "random_mapping", "identity_mapping"]

from .similarity import mean_prediction_mapping, mean_predictions, similarity_mapping  # noqa: E402  (uses frequency_mapping)

__all__ += ["similarity_mapping", "mean_prediction_mapping", "mean_predictions"]
