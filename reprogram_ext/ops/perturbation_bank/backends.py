"""What each backend of perturbation_bank cannot take, for the backend registry (docs/backends.md).

Imported by the front end before any backend runs: it must not import triton.
"""
from __future__ import annotations

from typing import Callable, Optional

from ..masked_perturb import backends as perturb_backends
from ..masked_perturb.backends import triton_limits
from .args import CanonicalBank


def refusal(cb: CanonicalBank) -> Callable[[str], Optional[str]]:
    """For the registry: backend name -> why it refuses these inputs (None: it takes them).
    The bank is not differentiable (black-box training has no autograd through it)."""
    cp = cb.perturb

    def why(backend: str) -> Optional[str]:
        if backend == "triton":
            return triton_limits(cp.x, cp.delta, cp.mask, bank=True)
        return None

    return why


def auto_order(cb: CanonicalBank, device_type: str) -> Optional[tuple]:
    """The order ``backend="auto"`` tries: masked_perturb's rule for the bank's forward (each query is
    a masked_perturb forward; ops/masked_perturb/backends.py, docs/backends.md)."""
    return perturb_backends.auto_order(cb.perturb, device_type)
