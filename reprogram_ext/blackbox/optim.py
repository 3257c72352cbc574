"""Optimisers of black-box reprogramming, as the original code runs them.

Both are ``torch.optim.Optimizer`` s that read the zeroth-order estimate ``ĝ`` from ``p.grad``
(``BlackBoxReprogrammer`` writes it there) and update the parameters in place. ``k`` below is the
1-based number of the step being taken.

``BarAdam`` — BAR (Tsai et al. 2020, yunyuntsai/Black-box-Adversarial-Reprogramming,
``adv_reprogramming.py``): TensorFlow 1's ``AdamOptimizer(0.01)`` (β₁ = 0.9, β₂ = 0.999, ε = 1e-8),
whose ε is added *after* the bias correction of the step size::

    m ← β₁ m + (1 − β₁) ĝ,   v ← β₂ v + (1 − β₂) ĝ²
    lr_k = lr(k − 1) · √(1 − β₂ᵏ) / (1 − β₁ᵏ)
    θ ← θ − lr_k · m / (√v + ε)

(``torch.optim.Adam`` adds ε to ``√v̂`` instead: the two differ where ``√v`` is near ε.) The
original builds ``polynomial_decay(0.01, step, 2000, 0.001, power=0.9)`` but hands the optimiser the
constant 0.01, so the default is the constant rate; ``lr_schedule="polynomial"`` applies the decay it
defines, ``lr(s) = (lr − end_lr)·(1 − min(s, decay_steps)/decay_steps)^power + end_lr`` with ``s`` the
number of updates already taken (TensorFlow's ``global_step``).

``SpsaGC`` — BlackVIP (Oh et al. 2023, changdaeoh/BlackVIP, ``trainers/blackvip.py``): SPSA with
gradient correction. Schedules (``SPSA_PARAMS = [o, c, a, α, γ] = [1.0, 0.01, 0.01, 0.4, 0.1]``)::

    a_k = a / (k + o)^α        (step size)
    c_k = c / k^γ              (perturbation scale: the β of the k-th step's queries)

and the update (``OPT_TYPE = "spsa-gc"``, ``MOMS`` = μ = 0.9)::

    m ← ĝ (k = 1),   m ← μ m + ĝ (k > 1)
    θ ← θ − a_k (ĝ + μ m)

``gc=False`` is its ``"spsa"`` type, ``θ ← θ − a_k ĝ``. ``c_k`` is read by the reprogrammer through
``perturbation_scale()`` before the queries of a step.

Norm clipping — ZIP (LOG-postech/ZIP, ``trainers/zip.py``, ``OPT_TYPE = "spsa-clip"``): with
``D = √d`` (``d``: the number of optimised values), ``ĝ ← (D / ‖ĝ‖) ĝ`` when ``‖ĝ‖ ≥ D``, else
unchanged; ZIP then steps ``θ ← θ − a_k ĝ`` (``SpsaGC(gc=False, clip="sqrt_d")``). ``clip=`` here is
applied to ``ĝ`` first in either optimiser: ``"sqrt_d"`` (ZIP's threshold), a positive number, or
``None``. The norm is taken over all parameters of a group together (ZIP flattens them into one vector).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Union

import torch

Clip = Optional[Union[str, float]]


def _positive(name: str, value, owner: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{owner}: {name} must be a finite {bound} number, got {value!r}")
    return float(value)


def _check_clip(clip: Clip, owner: str) -> Clip:
    if clip is None or clip == "sqrt_d":
        return clip
    if isinstance(clip, str):
        raise ValueError(f"{owner}: clip must be None, 'sqrt_d' or a positive number, got {clip!r}")
    return _positive("clip", clip, owner)


def clip_threshold(clip: Clip, numel: int) -> Optional[float]:
    """The norm bound of ``clip`` for ``numel`` optimised values: ``√numel`` for ``"sqrt_d"``."""
    if clip is None:
        return None
    return math.sqrt(numel) if clip == "sqrt_d" else float(clip)


def clip_by_norm(grads: list, max_norm: Optional[float]) -> list:
    """ZIP's clipping of the joint vector of ``grads``: scaled by ``max_norm / ‖g‖`` when ``‖g‖ ≥ max_norm``."""
    if max_norm is None:
        return grads
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    if float(norm) >= max_norm:
        return [g * (max_norm / float(norm)) for g in grads]
    return grads


def _group_grads(group: dict, owner: str) -> list:
    grads = []
    for p in group["params"]:
        if p.grad is None:
            raise RuntimeError(f"{owner}.step(): a parameter has no .grad; the zeroth-order estimate must be "
                               "written to every parameter of the group first")
        grads.append(p.grad)
    return clip_by_norm(grads, clip_threshold(group["clip"], sum(p.numel() for p in group["params"])))


def polynomial_decay(step: int, lr: float, end_lr: float, decay_steps: int, power: float) -> float:
    """TensorFlow's ``polynomial_decay`` (no cycle): ``(lr − end_lr)(1 − min(step, N)/N)^power + end_lr``."""
    frac = min(step, decay_steps) / decay_steps
    return (lr - end_lr) * (1.0 - frac) ** power + end_lr


class BarAdam(torch.optim.Optimizer):
    """BAR's optimiser: TensorFlow 1 Adam (ε after the bias correction), constant or polynomial rate.

    See the module docstring for the formula. ``lr_schedule``: ``"constant"`` (what the original
    runs) or ``"polynomial"`` (the decay it defines, ``lr → end_lr`` over ``decay_steps``).
    """

    def __init__(self, params: Iterable, lr: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8, *,
                 lr_schedule: str = "constant", end_lr: float = 0.001, decay_steps: int = 2000, power: float = 0.9,
                 clip: Clip = None) -> None:
        name = type(self).__name__
        _positive("lr", lr, name)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {betas!r}")
        _positive("eps", eps, name, allow_zero=True)
        if lr_schedule not in ("constant", "polynomial"):
            raise ValueError(f"{name}: lr_schedule must be 'constant' or 'polynomial', got {lr_schedule!r}")
        _positive("end_lr", end_lr, name, allow_zero=True)
        if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1:
            raise ValueError(f"{name}: decay_steps must be a positive int, got {decay_steps!r}")
        _positive("power", power, name)
        defaults = dict(lr=float(lr), betas=tuple(float(b) for b in betas), eps=float(eps), lr_schedule=lr_schedule,
                        end_lr=float(end_lr), decay_steps=decay_steps, power=float(power), clip=_check_clip(clip, name))
        super().__init__(params, defaults)

    def current_lr(self, group: Optional[dict] = None) -> float:
        """The rate of the next step before bias correction: ``lr`` or its polynomial decay."""
        group = group or self.param_groups[0]
        done = self.state[group["params"][0]].get("step", 0)
        if group["lr_schedule"] == "constant":
            return group["lr"]
        return polynomial_decay(done, group["lr"], group["end_lr"], group["decay_steps"], group["power"])

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("BarAdam.step(): no closure: the estimate comes from .grad (black-box training)")
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr = self.current_lr(group)
            for p, g in zip(group["params"], _group_grads(group, "BarAdam")):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(b1).add_(g, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-lr_t)
        return None


class SpsaGC(torch.optim.Optimizer):
    """BlackVIP's SPSA-GC: ``θ ← θ − a_k (ĝ + μ m)``, ``m ← μ m + ĝ`` (``m = ĝ`` at the first step).

    ``a, c, o, alpha, gamma`` are BlackVIP's ``SPSA_PARAMS`` (defaults: its configs); ``momentum``
    its ``MOMS``; ``gc=False`` its plain ``"spsa"``; ``clip`` ZIP's norm clipping (module docstring).
    ``perturbation_scale()`` is ``c_k`` of the next step, ``step_size()`` its ``a_k``.
    """

    def __init__(self, params: Iterable, a: float = 0.01, c: float = 0.01, o: float = 1.0, alpha: float = 0.4,
                 gamma: float = 0.1, momentum: float = 0.9, *, gc: bool = True, clip: Clip = None) -> None:
        name = type(self).__name__
        for arg, value in (("a", a), ("c", c)):
            _positive(arg, value, name)
        for arg, value in (("o", o), ("alpha", alpha), ("gamma", gamma), ("momentum", momentum)):
            _positive(arg, value, name, allow_zero=True)
        if not isinstance(gc, bool):
            raise TypeError(f"{name}: gc must be a bool, got {gc!r}")
        defaults = dict(a=float(a), c=float(c), o=float(o), alpha=float(alpha), gamma=float(gamma),
                        momentum=float(momentum), gc=gc, clip=_check_clip(clip, name))
        super().__init__(params, defaults)
        self.steps_taken = 0  # k − 1 of the next step (BlackVIP's self.step before it is incremented)

    def step_size(self, k: Optional[int] = None) -> float:
        """``a_k = a / (k + o)^α`` (``k``: the next step unless given)."""
        g, k = self.param_groups[0], k or self.steps_taken + 1
        return g["a"] / (k + g["o"]) ** g["alpha"]

    def perturbation_scale(self, k: Optional[int] = None) -> float:
        """``c_k = c / k^γ`` (``k``: the next step unless given): the β of this step's queries."""
        g, k = self.param_groups[0], k or self.steps_taken + 1
        return g["c"] / k ** g["gamma"]

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("SpsaGC.step(): no closure: the estimate comes from .grad (black-box training)")
        k = self.steps_taken + 1
        for group in self.param_groups:
            a_k = group["a"] / (k + group["o"]) ** group["alpha"]
            mu = group["momentum"]
            for p, g in zip(group["params"], _group_grads(group, "SpsaGC")):
                if not group["gc"]:
                    p.add_(g, alpha=-a_k)
                    continue
                state = self.state[p]
                if k > 1 and "m" in state:
                    state["m"].mul_(mu).add_(g)
                else:
                    state["m"] = g.clone()
                p.sub_(a_k * (g + mu * state["m"]))
        self.steps_taken = k
        return None

    def state_dict(self):
        state = super().state_dict()
        state["steps_taken"] = self.steps_taken
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        self.steps_taken = int(state_dict.pop("steps_taken", 0))
        super().load_state_dict(state_dict)


__all__ = ["BarAdam", "SpsaGC", "clip_by_norm", "clip_threshold", "polynomial_decay"]
