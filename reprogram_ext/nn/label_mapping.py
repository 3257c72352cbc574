"""``LabelMapping``: the output side of reprogramming, source-class scores -> target-class scores."""
from __future__ import annotations

from typing import Optional

import torch
from torch import distributed as dist
from torch import nn

from ..mapping import bayesian_mapping, count_matrix, frequency_mapping, identity_mapping, random_mapping

SPARSE_METHODS = ("identity", "random", "frequency", "iterative")
DENSE_METHODS = ("bayesian", "bayesian_plus", "linear")
METHODS = SPARSE_METHODS + DENSE_METHODS
COUNTING_METHODS = ("frequency", "iterative", "bayesian", "bayesian_plus")


def _label_map():
    from ..ops.label_map import label_map  # docs/ops/label_map.md; imported late so this module loads on its own

    return label_map


def _identity_weight(num_source: int, num_target: int, device=None, dtype=None) -> torch.Tensor:
    """Dense identity mapping ``[S, T]``: ``w[t mod S, t] = 1``."""
    w = torch.zeros(num_source, num_target, device=device, dtype=dtype)
    t = torch.arange(num_target, device=device)
    w[t % num_source, t] = 1
    return w


class LabelMapping(nn.Module):
    """Maps source logits ``[*, S]`` to target scores ``[*, T]`` with ``label_map`` (docs/ops/label_map.md).

    Methods (``method=``):
      - ``identity``: target ``t`` takes sources ``t*k .. t*k+k-1`` (Elsayed et al.);
      - ``random``: ``k`` random distinct sources per target, fixed at construction (BAR);
      - ``frequency``: ILM-VP's frequency mapping (FLM), ``frequency_mapping(D, k)`` of the counts ``D``
        gathered by ``update()``, computed once (the first ``end_epoch()`` or ``remap()``) and then kept;
      - ``iterative``: the same, recomputed every ``remap_every`` epochs (ILM-VP's ILM);
      - ``bayesian`` / ``bayesian_plus``: BLM / BLM+, ``omega = bayesian_mapping(D, laplace)`` with
        argmax counts / top-``topk`` probability counts, recomputed every ``remap_every`` epochs;
      - ``linear``: a trainable dense ``[S, T]`` matrix (plus a ``[T]`` bias with ``bias=True``),
        AutoVP's fully connected mapping.
    Sparse methods compute ``out[t] = reduce_{j} pre(logits)[index[t, j]]``; dense methods
    ``out = pre(logits) @ weight (+ bias)``. ``pre`` is applied over ``S`` first.

    Counts come from the training pass itself (no extra pass over the data): call
    ``update(source_logits, target)`` on each batch (``Reprogrammer`` does it) and ``end_epoch()`` after
    each epoch. Before the first remap the mapping is the identity (sparse) or its dense form.
    ``fit(logits, target)`` maps at once from given logits (e.g. a pre-pass, as the papers do).

    Distributed training (docs/distributed.md): when ``torch.distributed`` is initialised, ``remap()``
    (and so ``end_epoch()`` and ``fit()``) first sums the counts over ``process_group`` (default: all
    ranks) with one ``all_reduce``, so every rank computes the same mapping, the one of the union of
    the ranks' data. Every rank must then call ``end_epoch()`` / ``remap()`` / ``fit()`` together.
    ``sync=False`` keeps each rank's own counts. The counts are a plain tensor attribute, not a
    buffer, so that ``DistributedDataParallel`` does not overwrite them with rank 0's at each forward
    (they are saved in the state_dict's extra state).
    """

    def __init__(
        self,
        num_source: int,
        num_target: int,
        method: str = "frequency",
        *,
        k: int = 1,
        pre: str = "none",
        laplace: float = 1.0,
        topk: Optional[int] = None,
        reduce: str = "mean",
        remap_every: int = 1,
        bias: bool = False,
        generator: Optional[torch.Generator] = None,
        sync: bool = True,
        process_group=None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("num_source", num_source), ("num_target", num_target), ("k", k), ("remap_every", remap_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if method not in METHODS:
            raise ValueError(f"{name}: method must be one of {METHODS}, got {method!r}")
        if method in SPARSE_METHODS and k * num_target > num_source:
            raise ValueError(f"{name}: method {method!r} needs k*num_target <= num_source, "
                             f"got k={k}, num_target={num_target}, num_source={num_source}")
        if topk is not None and method != "bayesian_plus":
            raise ValueError(f"{name}: topk is only used by method='bayesian_plus', got method={method!r}")
        if method == "bayesian_plus":
            topk = 3 if topk is None else topk
            if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= num_source:
                raise ValueError(f"{name}: topk must be an int in [1, num_source={num_source}], got {topk!r}")
        if bias and method != "linear":
            raise ValueError(f"{name}: bias=True needs method='linear', got method={method!r}")
        if not isinstance(sync, bool):
            raise TypeError(f"{name}: sync must be a bool, got {sync!r}")
        self.num_source, self.num_target, self.method = num_source, num_target, method
        self.k, self.pre, self.laplace, self.topk = k, pre, float(laplace), topk
        self.reduce, self.remap_every, self.backend = reduce, remap_every, backend
        self.sync, self.process_group = sync, process_group

        if method == "random":
            self.register_buffer("index", random_mapping(num_source, num_target, k, generator, device=device))
        elif method in SPARSE_METHODS:
            self.register_buffer("index", identity_mapping(num_target, k, device=device))
        elif method == "linear":
            self.weight = nn.Parameter(_identity_weight(num_source, num_target, device, dtype))
            self.bias = nn.Parameter(torch.zeros(num_target, device=device, dtype=dtype)) if bias else None
        else:
            self.register_buffer("weight", _identity_weight(num_source, num_target, device, dtype))
        # Float32 counts [S, T] of the data-driven methods; a plain attribute (see the class docstring).
        self.counts = torch.zeros(num_source, num_target, device=device) if method in COUNTING_METHODS else None
        self.epochs = 0  # epochs ended and remaps done: host-side ints (saved in the state_dict's extra state)
        self.remaps = 0

    @property
    def learns_from_counts(self) -> bool:
        """Whether ``update()`` gathers counts for this method (frequency, iterative, BLM, BLM+)."""
        return self.method in COUNTING_METHODS and not (self.method == "frequency" and self.remaps > 0)

    @property
    def syncs_counts(self) -> bool:
        """Whether ``remap()`` sums the counts over the process group (``sync`` and a process group is up)."""
        return self.sync and dist.is_available() and dist.is_initialized()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        label_map = _label_map()
        if self.method in SPARSE_METHODS:
            return label_map(logits, self.index, reduce=self.reduce, pre=self.pre, backend=self.backend)
        out = label_map(logits, None, self.weight, pre=self.pre, backend=self.backend)
        return out + self.bias if getattr(self, "bias", None) is not None else out

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of source logits ``[*, S]`` and target labels ``[*]`` to the counts (no host sync).

        A no-op for methods that do not learn from counts (identity, random, linear, and frequency once
        it has been mapped).
        """
        if self.learns_from_counts:
            self._add_counts(logits, target)

    @torch.no_grad()
    def remap(self) -> torch.Tensor:
        """Recompute the mapping from the gathered counts now (summed over the ranks first, unless
        ``sync=False``), clear the counts, return the new mapping."""
        if self.method not in COUNTING_METHODS:
            raise RuntimeError(f"LabelMapping: method {self.method!r} has no data-driven mapping to recompute")
        if self.syncs_counts:
            dist.all_reduce(self.counts, op=dist.ReduceOp.SUM, group=self.process_group)
        if not bool((self.counts != 0).any()):
            raise RuntimeError("LabelMapping.remap(): no counts gathered yet; call update(logits, target) first")
        if self.method in SPARSE_METHODS:
            self.index.copy_(frequency_mapping(self.counts, self.k))
            result = self.index
        else:
            self.weight.copy_(bayesian_mapping(self.counts, self.laplace))
            result = self.weight
        self.counts.zero_()
        self.remaps += 1
        return result

    @torch.no_grad()
    def end_epoch(self) -> bool:
        """Count an epoch; remap when due (frequency: after the first epoch only; iterative and BLM: every
        ``remap_every`` epochs). Returns whether the mapping changed."""
        if self.method not in COUNTING_METHODS:
            return False
        self.epochs += 1
        due = self.remaps == 0 if self.method == "frequency" else self.epochs % self.remap_every == 0
        if due:
            self.remap()
        return due

    @torch.no_grad()
    def fit(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Map at once from these logits and targets (clears earlier counts); returns the mapping."""
        if self.method not in COUNTING_METHODS:
            raise RuntimeError(f"LabelMapping: method {self.method!r} is not fitted from data")
        self.counts.zero_()
        self._add_counts(logits, target)
        return self.remap()

    def _add_counts(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """``counts += count_matrix(logits, target)``: argmax counts, or top-``topk`` probabilities (BLM+)."""
        count_matrix(logits.detach(), target, self.num_target,
                     topk=self.topk if self.method == "bayesian_plus" else None, counts=self.counts)

    def get_extra_state(self) -> dict:
        state = {"epochs": self.epochs, "remaps": self.remaps}
        if self.counts is not None:
            state["counts"] = self.counts.clone()
        return state

    def set_extra_state(self, state: dict) -> None:
        self.epochs, self.remaps = int(state["epochs"]), int(state["remaps"])
        if self.counts is not None and "counts" in state:
            self._load_counts(state["counts"])

    def _load_counts(self, counts: torch.Tensor) -> None:
        if tuple(counts.shape) != tuple(self.counts.shape):
            raise ValueError(f"LabelMapping: saved counts have shape {tuple(counts.shape)}, "
                             f"expected (num_source, num_target) = {tuple(self.counts.shape)}")
        self.counts = counts.detach().to(device=self.counts.device, dtype=torch.float32).clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # State dicts saved when the counts were a buffer hold them under "<prefix>counts".
        legacy = state_dict.pop(prefix + "counts", None)
        if legacy is not None and self.counts is not None:
            self._load_counts(legacy)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, recurse=True):
        # Counts stay float32 under .to(dtype) (half precision would round them); only their device moves,
        # to the device ``fn`` sends a float32 tensor to.
        super()._apply(fn, recurse)
        if self.counts is not None:
            device = fn(torch.empty(0, device=self.counts.device)).device
            self.counts = self.counts.to(device=device)
        return self

    def extra_repr(self) -> str:
        parts = [f"num_source={self.num_source}", f"num_target={self.num_target}", f"method={self.method!r}"]
        if self.method in SPARSE_METHODS:
            parts += [f"k={self.k}", f"reduce={self.reduce!r}"]
        if self.method in ("bayesian", "bayesian_plus"):
            parts.append(f"laplace={self.laplace}")
        if self.method == "bayesian_plus":
            parts.append(f"topk={self.topk}")
        if self.method in ("iterative", "bayesian", "bayesian_plus") and self.remap_every != 1:
            parts.append(f"remap_every={self.remap_every}")
        if self.method == "linear":
            parts.append(f"bias={self.bias is not None}")
        if self.method in COUNTING_METHODS and not self.sync:
            parts.append("sync=False")
        parts += [f"pre={self.pre!r}", f"backend={self.backend!r}"]
        return ", ".join(parts)
