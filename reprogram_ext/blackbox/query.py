"""The black box: any callable ``query(batch) -> scores``, called, checked and counted.

``BlackBoxQuery(query)`` accepts a torch module (run in eval mode under ``torch.no_grad()``, its
parameters frozen), a function of torch tensors, or, with ``as_numpy=True``, a function of NumPy
arrays (a NumPy model, a wrapper of a remote API). Whatever it returns — a tensor, an array, a list,
an output object with ``.logits`` — becomes a float tensor ``[N, S]`` on the batch's device, and is
refused with a clear error unless it has one row per input of the batch, the same ``S`` on every
call, and only finite values.

One *query* is one input sent to the model (an API bills per image): a call with a batch of ``N``
canvases spends ``N`` queries. With a ``budget``, ``reserve(n)`` raises ``QueryBudgetExceeded``
before a step whose ``n`` queries would pass it, so no step is ever cut short by the budget.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..nn.reprogrammer import _logits_of


class QueryBudgetExceeded(RuntimeError):
    """The query budget cannot pay for the next step; nothing was queried or updated."""


def _check_count(name: str, value, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"BlackBoxQuery: {name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return value


class BlackBoxQuery:
    """Calls ``query`` on batches of canvases and returns checked float scores ``[N, S]``.

    Attributes: ``queries`` (inputs sent so far), ``calls`` (calls made), ``budget`` (``None``: no
    limit), ``num_scores`` (``S``: fixed by ``num_scores=`` or by the first call).
    """

    def __init__(self, query: Callable, *, budget: Optional[int] = None, num_scores: Optional[int] = None,
                 as_numpy: bool = False) -> None:
        if not callable(query):
            raise TypeError(f"BlackBoxQuery: query must be callable (batch -> scores), got {type(query).__name__}")
        if not isinstance(as_numpy, bool):
            raise TypeError(f"BlackBoxQuery: as_numpy must be a bool, got {as_numpy!r}")
        if isinstance(query, nn.Module):
            query.requires_grad_(False).eval()
        self.query, self.as_numpy = query, as_numpy
        self.budget = _check_count("budget", budget)
        self.num_scores = _check_count("num_scores", num_scores)
        self.queries = 0
        self.calls = 0

    @property
    def remaining(self) -> Optional[int]:
        """Queries left in the budget (``None`` without a budget)."""
        return None if self.budget is None else self.budget - self.queries

    def reserve(self, n: int, what: str = "this step") -> None:
        """Raise ``QueryBudgetExceeded`` unless ``n`` more queries fit in the budget."""
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"query budget exhausted: {what} needs {n} queries but only {self.remaining} of the budget of "
                f"{self.budget} are left ({self.queries} spent); nothing was queried or updated")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not isinstance(batch, torch.Tensor) or batch.dim() < 2:
            raise TypeError(f"BlackBoxQuery: expected a batch tensor [N, ...], got {batch!r:.80}")
        n = batch.shape[0]
        self.reserve(n, f"a call with {n} inputs")
        with torch.no_grad():
            sent = batch.detach().cpu().numpy() if self.as_numpy else batch.detach()
            raw = self.query(sent)
        self.queries += n
        self.calls += 1
        return self._scores(raw, n, batch.device)

    def _scores(self, raw, n: int, device: torch.device) -> torch.Tensor:
        if not isinstance(raw, (torch.Tensor, np.ndarray, list, tuple)):
            raw = _logits_of(raw)  # an output object with .logits (else a TypeError naming the type)
        scores = torch.as_tensor(np.asarray(raw) if isinstance(raw, (list, tuple)) else raw)
        if scores.is_complex() or scores.dtype == torch.bool:
            raise TypeError(f"BlackBoxQuery: the query returned scores of dtype {scores.dtype}; expected real numbers")
        if not scores.is_floating_point() or scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()
        expected = f"[{n}, {self.num_scores if self.num_scores is not None else 'S'}]"
        if scores.dim() != 2 or scores.shape[0] != n or (self.num_scores is not None and scores.shape[1] != self.num_scores):
            raise ValueError(f"BlackBoxQuery: the query returned scores of shape {tuple(scores.shape)} for a batch of "
                             f"{n} inputs; expected {expected} (one row of source-class scores per input)")
        if not bool(torch.isfinite(scores).all()):
            bad = int((~torch.isfinite(scores)).any(1).sum())
            raise ValueError(f"BlackBoxQuery: the query returned non-finite scores (NaN or inf) for {bad} of {n} inputs")
        if self.num_scores is None:
            self.num_scores = int(scores.shape[1])
        return scores.to(device)


class RefusesGradients(nn.Module):
    """A frozen model seen only through its predicted probabilities: ``softmax(model(x))``, never a gradient.

    Wraps a torch model as a black box for demos and tests: the forward runs under ``no_grad`` and
    raises if the input requires grad (an attempt to differentiate through the black box).
    """

    def __init__(self, model: nn.Module, probabilities: bool = True) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.probabilities = probabilities

    def train(self, mode: bool = True) -> "RefusesGradients":
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(x) and x.requires_grad:
            raise RuntimeError("RefusesGradients: this model is a black box; it returns scores, not gradients")
        with torch.no_grad():
            out = _logits_of(self.model(x))
            return out.softmax(-1) if self.probabilities else out


__all__ = ["BlackBoxQuery", "QueryBudgetExceeded", "RefusesGradients"]
