"""``ZOEstimator``: which zeroth-order estimate a ``BlackBoxReprogrammer`` makes at each step.

- ``"rge"`` (BAR): ``Q = q + 1`` queries, θ and θ + β·u_j; ``ĝ = (b/q) Σ_j ((f_j − f_0)/β) u_j`` with
  ``u_j`` on the unit sphere (``directions="sphere"``, or ``"gaussian"``) and ``b = d`` unless ``scale``.
- ``"spsa"`` (BlackVIP): ``Q = 2q`` queries θ ± β·Δ_j, Δ_j uniform on ±[0.5, 1] (``"segmented"``);
  ``ĝ = (1/q) Σ_j ((f_j⁺ − f_j⁻)/(2β)) Δ_j⁻¹``.

``beta=None`` takes β from the optimiser at each step (``SpsaGC.perturbation_scale()``, BlackVIP's
``c_k``); a number fixes it (BAR: 0.1). Both estimates come from ``reprogram_ext.blackbox.zo_gradient``,
which regenerates the directions of the step's seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

KINDS = {"rge": ("sphere", "gaussian"), "spsa": ("segmented",)}


@dataclass(frozen=True)
class ZOEstimator:
    kind: str = "rge"
    q: int = 1
    beta: Optional[float] = None
    directions: Optional[str] = None
    scale: Optional[float] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ZOEstimator: kind must be one of {tuple(KINDS)}, got {self.kind!r}")
        if isinstance(self.q, bool) or not isinstance(self.q, int) or self.q < 1:
            raise ValueError(f"ZOEstimator: q must be a positive int, got {self.q!r}")
        check_beta(self.beta, allow_none=True)
        if self.directions is None:
            object.__setattr__(self, "directions", KINDS[self.kind][0])
        if self.directions not in KINDS[self.kind]:
            raise ValueError(f"ZOEstimator: kind {self.kind!r} takes directions {KINDS[self.kind]}, "
                             f"got {self.directions!r}")
        if self.scale is not None and (self.kind != "rge" or not _finite_positive(self.scale)):
            raise ValueError(f"ZOEstimator: scale (RGE's b) must be a finite positive number with kind='rge', "
                             f"got {self.scale!r} with kind={self.kind!r}")

    @property
    def antithetic(self) -> bool:
        """Whether the queries come in ± pairs (SPSA) instead of around a centre query (RGE)."""
        return self.kind == "spsa"

    @property
    def num_queries(self) -> int:
        """``Q``: ``q + 1`` (RGE) or ``2q`` (SPSA) canvases per sample and step."""
        return 2 * self.q if self.antithetic else self.q + 1


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_beta(beta, allow_none: bool = False) -> Optional[float]:
    """β as a float: finite and positive (``None`` passes when ``allow_none``)."""
    if beta is None and allow_none:
        return None
    if not _finite_positive(beta):
        raise ValueError(f"ZOEstimator: beta (the perturbation scale) must be a finite positive number, got {beta!r}")
    return float(beta)


def as_estimator(estimator) -> ZOEstimator:
    """A ``ZOEstimator`` from itself or from a kind name (``"rge"``, ``"spsa"``)."""
    if isinstance(estimator, ZOEstimator):
        return estimator
    if isinstance(estimator, str):
        return ZOEstimator(estimator, q=5 if estimator == "spsa" else 1)
    raise TypeError(f"estimator must be a ZOEstimator or one of {tuple(KINDS)}, got {type(estimator).__name__}")


__all__ = ["ZOEstimator", "as_estimator", "check_beta"]
