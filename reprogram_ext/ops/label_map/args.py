"""Validation of label_map / mapped_cross_entropy arguments and their canonical form.

Every backend computes on ``logits [N, S]`` (leading dims flattened, contiguous), a sparse
``index`` int64 ``[T, K]`` (``-1`` pads ragged groups; an int32 index is kept as the caller's tensor
for the Triton kernels, see ``kernel_index``) with an optional ``weight [T, K]`` in the
accumulation dtype (float32, float64 for float64 logits), or a dense ``weight [S, T]``.
Errors name the argument, what was expected and what was given. Checks on index/target *values*
need a host read: eagerly they read the values and name the first bad one; while ``torch.compile``
traces they become ``torch._assert_async`` checks in the graph (a check on CPU, a device-side
assert on CUDA), so that no backend reads out of bounds, eager or compiled. When the C++ CPU
kernels run, they make the same checks (same messages) in their own pass over the values, eager
and compiled, and the front end skips its own (``check_values=False``: ten fewer small aten ops
per call).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .options import FLOAT_DTYPES, PRES, REDUCES, REDUCTIONS, TOPK_REDUCES

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
INDEX_DTYPES = (torch.int64, torch.int32)  # kept by canonicalize; others are converted to int64


@dataclass
class CanonicalLabelMap:
    logits: torch.Tensor  # [N, S], contiguous
    lead_shape: tuple  # logits.shape[:-1]
    index: Optional[torch.Tensor]  # int64 or int32 [T, K], contiguous (kernel_index); None for the dense form
    weight: Optional[torch.Tensor]  # sparse: [T, K] accumulation dtype; dense: [S, T]
    reduce: str  # one of options.REDUCES
    pre: str  # one of options.PRES
    num_targets: int
    topk: int = 0  # the k of reduce="topk_mean" (>= 1), else 0

    @property
    def dense(self) -> bool:
        return self.index is None


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_values_now() -> bool:
    return not torch.compiler.is_compiling()


def values_checked_by_kernel(chosen: str, c: CanonicalLabelMap) -> bool:
    """Whether the chosen kernel checks index/target values itself: the C++ CPU ops do (a sparse
    map with rows; the dense form and empty batches run the reference)."""
    return chosen == "cpu" and not c.dense and c.logits.shape[0] > 0


def _assert_in_graph(cond: torch.Tensor, message: str) -> None:
    """A value check that torch.compile keeps in the graph: no host read while tracing; it raises
    ``RuntimeError(message)`` on CPU and is a device-side assert on CUDA."""
    torch._assert_async(cond, message)


def check_index_values(op: str, c: CanonicalLabelMap) -> None:
    """Sources in [0, S) or -1, no all-padding group, and (topk_mean) at least topk valid entries in
    every group (eager: a host read; compiled: in-graph asserts)."""
    index, S = c.index, c.logits.shape[-1]
    if index is None or index.numel() == 0:
        return
    if not _check_values_now():
        _assert_in_graph(((index >= -1) & (index < S)).all(),
                         f"{op}: index must hold source classes in [0, S) or -1 (padding)")
        _assert_in_graph((index >= 0).any(dim=1).all(),
                         f"{op}: index has an empty target group (a row of -1); each target needs a source")
        if c.topk:
            _assert_in_graph(((index >= 0).sum(dim=1) >= c.topk).all(),
                             f"{op}: {_too_few_words(c.topk)}")
        return
    lo, hi = int(index.min()), int(index.max())
    if lo < -1 or hi >= S:
        bad = lo if lo < -1 else hi
        raise ValueError(f"{op}: index must hold source classes in [0, S={S}) or -1 (padding), got {bad}")
    empty = (index < 0).all(dim=1)
    if bool(empty.any()):
        t = int(empty.nonzero()[0, 0])
        raise ValueError(f"{op}: index row {t} is an empty target group (every entry is -1); "
                         "each target needs at least one source")
    if c.topk:
        counts = (index >= 0).sum(dim=1)
        short = counts < c.topk
        if bool(short.any()):
            t = int(short.nonzero()[0, 0])
            raise ValueError(f"{op}: {_too_few_words(c.topk)}; index row {t} has {int(counts[t])}")


def _too_few_words(topk: int) -> str:
    return (f"reduce='topk_mean' averages the topk={topk} largest entries of each target group: every index row "
            f"needs at least {topk} valid (non -1) entries")


def check_topk(op: str, reduce: str, topk) -> int:
    """The canonical ``topk``: an int >= 1 for the reduces of options.TOPK_REDUCES, else 0 (``topk``
    must then be None)."""
    if reduce not in TOPK_REDUCES:
        if topk is not None:
            raise ValueError(f"{op}: topk is the k of reduce='topk_mean' and is not used by reduce={reduce!r}; "
                             f"pass topk=None, got topk={topk!r}")
        return 0
    if topk is None:
        raise ValueError(f"{op}: reduce={reduce!r} needs topk=k, the number of largest entries of each target "
                         "group to average; got topk=None")
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise TypeError(f"{op}: topk must be an int >= 1 (reduce={reduce!r}), got {topk!r}")
    if topk < 1:
        raise ValueError(f"{op}: topk must be >= 1 (reduce={reduce!r}), got {topk}")
    return topk


def check_weight_values(op: str, c: CanonicalLabelMap, log_of_mapped: bool) -> None:
    """The sparse weights' values where the formula needs them (eager: a host read; compiled:
    in-graph asserts): ``reduce="mean"`` divides by each group's weight sum, which must not be 0;
    ``log_of_mapped`` (mapped_cross_entropy with ``pre="softmax"`` takes the log of each target's
    weighted probabilities) needs weights >= 0 with a positive one in every group."""
    index, w = c.index, c.weight
    if index is None or w is None or not (c.reduce == "mean" or log_of_mapped):
        return
    valid = index >= 0
    if log_of_mapped:
        group_ok = ((w > 0) & valid).any(dim=1) & ~((w < 0) & valid).any(dim=1)
        words = ("with pre='softmax' the loss takes the log of each target's weighted probabilities: weight must "
                 "be >= 0 with a positive entry in every target group")
    else:
        group_ok = torch.where(valid, w, 0).sum(dim=1) != 0
        words = "reduce='mean' divides by each target's sum of weights: weight must not sum to 0 over a group"
    if not _check_values_now():
        _assert_in_graph(group_ok.all(), f"{op}: {words}")
    elif not bool(group_ok.all()):
        t = int((~group_ok).nonzero()[0, 0])
        raise ValueError(f"{op}: {words}, got weight row {t} = {w[t].tolist()}")


def canonicalize(op: str, logits, index, weight, reduce: str, pre: str, topk=None) -> CanonicalLabelMap:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{op}: logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: logits must be float16/bfloat16/float32/float64, got {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(f"{op}: logits must be [*, S] with S >= 1 source classes, got shape {tuple(logits.shape)}")
    if not isinstance(reduce, str) or reduce not in REDUCES:
        raise ValueError(f"{op}: reduce must be one of {REDUCES}, got {reduce!r}")
    if not isinstance(pre, str) or pre not in PRES:
        raise ValueError(f"{op}: pre must be one of {PRES}, got {pre!r}")
    k = check_topk(op, reduce, topk)
    for name, t in (("index", index), ("weight", weight)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t is not None and t.device != logits.device:
            raise ValueError(f"{op}: {name} is on {t.device} but logits is on {logits.device}")
    S = logits.shape[-1]
    lead = tuple(logits.shape[:-1])
    # [N, S] contiguous is taken as it is: no view, so no extra autograd node per call (bench/notes/label_map.md)
    x2 = logits if logits.dim() == 2 and logits.is_contiguous() else logits.reshape(-1, S).contiguous()
    acc = accumulation_dtype(logits.dtype)
    if weight is not None and not weight.is_floating_point():
        raise TypeError(f"{op}: weight must be a floating tensor, got {weight.dtype}")

    if index is None:  # dense form: out = pre(logits) @ weight
        if weight is None:
            raise ValueError(f"{op}: give index [T, K] (sparse form) or weight [S, T] (dense form); got neither")
        if weight.dim() != 2 or weight.shape[0] != S:
            raise ValueError(f"{op}: dense weight must be [S={S}, T], got shape {tuple(weight.shape)}")
        if weight.shape[1] == 0:
            raise ValueError(f"{op}: dense weight must have T >= 1 target columns, got shape {tuple(weight.shape)}")
        if k:
            raise ValueError(f"{op}: reduce={reduce!r} needs the sparse form (index [T, K]); the dense form "
                             "(index=None, weight [S, T]) computes pre(logits) @ weight")
        return CanonicalLabelMap(x2, lead, None, weight, reduce, pre, weight.shape[1])

    if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        raise TypeError(f"{op}: index must be an integer tensor (int64 source classes, -1 = padding), got {index.dtype}")
    if index.dim() == 1:  # one-to-one mapping [T] == [T, 1], and its weight [T] == [T, 1]
        index = index.unsqueeze(1)
        if weight is not None and weight.dim() == 1:
            weight = weight.unsqueeze(1)
    if index.dim() != 2 or index.shape[0] == 0 or index.shape[1] == 0:
        raise ValueError(f"{op}: index must be [T, K] with T, K >= 1, got shape {tuple(index.shape)}")
    if k and k > index.shape[1]:
        raise ValueError(f"{op}: topk={k} exceeds the index's K={index.shape[1]} entries per target group "
                         f"(index shape {tuple(index.shape)})")
    if k and weight is not None:
        raise ValueError(f"{op}: reduce={reduce!r} takes no weight (it is the plain mean of the topk largest "
                         "entries of each group); pass weight=None")
    if weight is not None:
        if tuple(weight.shape) != tuple(index.shape):
            raise ValueError(f"{op}: sparse weight must have index's shape {tuple(index.shape)}, "
                             f"got shape {tuple(weight.shape)}")
        weight = weight.to(acc).contiguous()
    index = (index if index.dtype in INDEX_DTYPES else index.to(torch.int64)).contiguous()
    return CanonicalLabelMap(x2, lead, index, weight, reduce, pre, index.shape[0], k)


def kernel_index(c: CanonicalLabelMap, chosen: str) -> None:
    """The index the chosen backend computes on: int64, except that the Triton kernels read an int32
    index as it is. They then get the caller's tensor itself (or a view of it), so that the source
    map of its backward, cached per index tensor and version (triton_source_map.py), is found again
    on the next call and sees the caller's in-place writes; a converted copy would be a new tensor
    each call. The empty batch and the dense form run the reference: int64."""
    if c.index is not None and c.index.dtype != torch.int64 and (chosen != "triton" or c.logits.shape[0] == 0):
        c.index = c.index.to(torch.int64)


def canonical_target(op: str, target, lead_shape: tuple, num_targets: int, ignore_index: int,
                     check_values: bool = True) -> torch.Tensor:
    """``target`` as int64 ``[N]``, checked against the logits' leading shape and (``check_values``)
    ``[0, T)``."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise TypeError(f"{op}: target must be an integer tensor of class indices, got {target.dtype}")
    if tuple(target.shape) != lead_shape:
        raise ValueError(f"{op}: target must have logits' leading shape {lead_shape}, got {tuple(target.shape)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if not INT64_MIN <= ignore_index <= INT64_MAX:  # the kernels take it as int64
        raise ValueError(f"{op}: ignore_index must fit in int64, got {ignore_index}")
    y = target if target.dim() == 1 and target.dtype == torch.int64 and target.is_contiguous() else \
        target.reshape(-1).to(torch.int64).contiguous()
    if check_values and not _check_values_now():
        _assert_in_graph(((y == ignore_index) | ((y >= 0) & (y < num_targets))).all(),
                         f"{op}: target must hold classes in [0, T) or ignore_index ({ignore_index})")
    elif check_values and y.numel():
        bad = (y != ignore_index) & ((y < 0) | (y >= num_targets))
        if bool(bad.any()):
            v = int(y[bad.nonzero()[0, 0]])
            raise ValueError(f"{op}: target must hold classes in [0, T={num_targets}) or ignore_index "
                             f"({ignore_index}), got {v}")
    return y


def check_loss_options(op: str, reduction: str, label_smoothing: float) -> float:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(f"{op}: label_smoothing must be a float, got {label_smoothing!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    return float(label_smoothing)
