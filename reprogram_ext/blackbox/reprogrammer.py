"""``BlackBoxReprogrammer``: train an input transformation through a model that only answers queries.

One ``step(x, target)``, with ``Q`` the estimator's number of queries and ``k`` the step number:

1. ``seed_k = (seed · 2³² + k) mod 2⁶³`` names the step's directions; β is the estimator's, or the
   optimiser's ``perturbation_scale()`` (SPSA-GC's ``c_k``) when the estimator leaves it ``None``.
2. The ``Q·B`` canvases: one fused ``perturbation_bank`` call for a prompt layer, or the module run
   with each perturbed parameter vector (``canvases.py``).
3. ``scores = query(canvases)`` (``query.py``: counted, shape- and finiteness-checked);
   ``f_j = loss(output_mapping(scores_j), target)`` for each query ``j``.
4. ``ĝ = zo_gradient(f, θ, seed=seed_k, beta=β, ...)`` is written to the parameters' ``.grad`` and the
   optimiser steps (default: ``BarAdam`` for RGE, ``SpsaGC`` for SPSA, see ``optim.py``).

Nothing changes (parameters, optimiser state, step count) unless the whole step succeeds: a budget
that cannot pay for the step's ``Q·B`` queries is refused before anything is queried
(``QueryBudgetExceeded``), and a failing query, scores of the wrong shape, or a non-finite loss raise
before the update.

With a ``torch.distributed`` process group (``distributed=None``: whenever one is initialised), every
rank passes the same batch, evaluates its own block of the ``Q`` queries (``sharding.py``), and the
ranks all-reduce only the ``Q`` losses: every rank then makes the single-process estimate and update.
``queries`` counts the training queries of all ranks plus this process's own evaluation queries.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .canvases import canvas_source
from .optim import BarAdam, SpsaGC
from .query import BlackBoxQuery
from .sharding import group_layout, rank_queries, share_losses
from .zo_estimator import ZOEstimator, as_estimator, check_beta


def _zo_gradient():
    from . import zo_gradient  # the estimators' public function (reprogram_ext/blackbox/__init__.py)

    return zo_gradient


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s directions: ``(seed · 2³² + step) mod 2⁶³``."""
    return (seed * 2 ** 32 + step) % 2 ** 63


class BlackBoxReprogrammer(nn.Module):
    """``output_mapping(query(input_transform(x)))``, trained from zeroth-order estimates (module docstring).

    Arguments: ``query`` — any callable batch -> scores ``[N, S]`` (a torch module, run frozen under
    ``no_grad``; a function; with ``as_numpy=True`` a function of NumPy arrays); ``input_transform`` —
    the trainable module (its parameters with ``requires_grad`` are optimised); ``output_mapping`` —
    source scores -> target scores, kept fixed; ``estimator`` — a ``ZOEstimator`` or ``"rge"`` / ``"spsa"``;
    ``optimizer`` — an optimiser over the transform's trainable parameters, or a factory
    ``params -> optimizer``; ``loss(output, target)`` — the loss of one query (default cross entropy);
    ``budget`` — the most queries (inputs sent) allowed; ``seed`` — the directions' seed;
    ``inputs_per_call`` — the most canvases per call of ``query`` (default: all of a step's at once).
    """

    def __init__(self, query: Callable, input_transform: nn.Module, output_mapping: nn.Module,
                 estimator: Union[str, ZOEstimator] = "rge", *, optimizer=None, loss: Optional[Callable] = None,
                 budget: Optional[int] = None, seed: int = 0, inputs_per_call: Optional[int] = None,
                 as_numpy: bool = False, process_group=None, distributed: Optional[bool] = None) -> None:
        super().__init__()
        for name, module in (("input_transform", input_transform), ("output_mapping", output_mapping)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"BlackBoxReprogrammer: {name} must be an nn.Module, got {type(module).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"BlackBoxReprogrammer: seed must be a non-negative int, got {seed!r}")
        if inputs_per_call is not None and (isinstance(inputs_per_call, bool) or not isinstance(inputs_per_call, int)
                                            or inputs_per_call < 1):
            raise ValueError(f"BlackBoxReprogrammer: inputs_per_call must be a positive int or None, "
                             f"got {inputs_per_call!r}")
        self.input_transform, self.output_mapping = input_transform, output_mapping
        self.estimator = as_estimator(estimator)
        self.black_box = BlackBoxQuery(query, budget=budget, as_numpy=as_numpy,
                                       num_scores=getattr(output_mapping, "num_source", None))
        self.source = canvas_source(input_transform)
        self.optimizer = self._make_optimizer(optimizer)
        self.loss_fn = loss if loss is not None else F.cross_entropy
        self.seed, self.inputs_per_call = seed, inputs_per_call
        self.process_group, self.distributed = process_group, distributed
        self.steps = 0
        self.history = []  # the loss of each step (RGE: at θ; SPSA: the mean over its ± queries)

    def _make_optimizer(self, optimizer):
        if optimizer is None:
            return BarAdam(self.source.params) if self.estimator.kind == "rge" else SpsaGC(self.source.params)
        if isinstance(optimizer, torch.optim.Optimizer):
            mine = {id(p) for p in self.source.params}
            theirs = {id(p) for g in optimizer.param_groups for p in g["params"]}
            if theirs != mine:
                raise ValueError("BlackBoxReprogrammer: optimizer must hold exactly the input transformation's "
                                 "trainable parameters")
            return optimizer
        if callable(optimizer):
            return self._make_optimizer(optimizer(self.source.params))
        raise TypeError(f"BlackBoxReprogrammer: optimizer must be an Optimizer, a factory params -> Optimizer or None, "
                        f"got {type(optimizer).__name__}")

    # -- counting ---------------------------------------------------------------------------------------
    @property
    def queries(self) -> int:
        """Queries spent: the training steps' (all ranks) and this process's evaluations."""
        return self.black_box.queries

    @property
    def budget(self) -> Optional[int]:
        return self.black_box.budget

    def step_queries(self, batch: int) -> int:
        """Queries one step on ``batch`` samples costs (over all ranks): ``Q · batch``."""
        return self.estimator.num_queries * batch

    # -- evaluation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def source_scores(self, x: torch.Tensor) -> torch.Tensor:
        """``query(input_transform(x))`` at the current parameters (``x.shape[0]`` queries)."""
        return self._ask(self.input_transform(x))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Target scores ``output_mapping(query(input_transform(x)))`` (counted queries)."""
        return self.output_mapping(self.source_scores(x))

    def _ask(self, canvases: torch.Tensor) -> torch.Tensor:
        n = canvases.shape[0]
        size = self.inputs_per_call or n
        return torch.cat([self.black_box(canvases[i:i + size]) for i in range(0, n, size)])

    # -- training ---------------------------------------------------------------------------------------
    def _beta(self) -> float:
        if self.estimator.beta is not None:
            return self.estimator.beta
        scale = getattr(self.optimizer, "perturbation_scale", None)
        if not callable(scale):
            raise ValueError("BlackBoxReprogrammer: the estimator has beta=None, so the optimizer must supply "
                             f"perturbation_scale() (as SpsaGC does); {type(self.optimizer).__name__} does not")
        return check_beta(scale())

    def step(self, x: torch.Tensor, target: torch.Tensor) -> dict:
        """One zeroth-order step on the batch ``(x, target)``; returns ``{"loss", "beta", "queries"}``."""
        if not isinstance(x, torch.Tensor) or not isinstance(target, torch.Tensor) or target.shape[:1] != x.shape[:1]:
            raise ValueError("BlackBoxReprogrammer.step: expected tensors x [B, ...] and target [B] with the same B, "
                             f"got {getattr(x, 'shape', x)!r} and {getattr(target, 'shape', target)!r}")
        est, batch = self.estimator, x.shape[0]
        beta, seed, Q = self._beta(), step_seed(self.seed, self.steps), est.num_queries
        self.black_box.reserve(self.step_queries(batch), f"step {self.steps + 1} ({Q} queries x {batch} samples)")
        rank, world, sharded = group_layout(self.process_group, self.distributed)
        mine = rank_queries(Q, rank, world)
        kwargs = dict(q=est.q, beta=beta, seed=seed, directions=est.directions, antithetic=est.antithetic)
        theta = self.source.theta
        losses = torch.zeros(Q, dtype=torch.float64, device=theta.device)
        if len(mine):
            canvases = self.source.canvases(x, mine, **kwargs)  # [n, B, C, *S]
            scores = self._ask(canvases.reshape(-1, *canvases.shape[2:]))
            with torch.no_grad():
                for j, s in zip(mine, scores.view(len(mine), batch, -1)):
                    losses[j] = float(self.loss_fn(self.output_mapping(s), target))
        if sharded:
            share_losses(losses, self.process_group)
            self.black_box.queries += (Q - len(mine)) * batch  # the other ranks' share of this step
        if not bool(torch.isfinite(losses).all()):
            raise ValueError(f"BlackBoxReprogrammer.step: the loss is not finite for queries "
                             f"{torch.nonzero(~torch.isfinite(losses)).flatten().tolist()}; nothing was updated")
        grad = _zo_gradient()(losses, theta, scale=est.scale, **kwargs)  # q given: checked against the losses
        self.source.set_grad(grad)
        self.optimizer.step()
        for p in self.source.params:
            p.grad = None
        self.steps += 1
        loss = float(losses.mean() if est.antithetic else losses[0])
        self.history.append(loss)
        return {"loss": loss, "beta": beta, "queries": self.step_queries(batch)}

    def extra_repr(self) -> str:
        e = self.estimator
        budget = f", budget={self.budget}" if self.budget is not None else ""
        return (f"estimator={e.kind!r}, q={e.q}, Q={e.num_queries}, directions={e.directions!r}, "
                f"optimizer={type(self.optimizer).__name__}, queries={self.queries}{budget}")


__all__ = ["BlackBoxReprogrammer", "step_seed"]
