"""What a benchmark case is, and the implementations every op case is timed with.

A ``Case`` names one configuration (which paper setting it models, its sizes) and builds, on a
device and dtype, a ``CaseInstance``: the inputs, the bytes the op must move (the fused minimum),
and the implementations to compare:

- ``fused``: each compiled backend that may run on the device (``cpu`` C++ kernels on CPU;
  ``cuda`` and ``triton`` on GPU), called with ``backend=<name>``;
- ``eager``: the pure-PyTorch reference, ``backend="reference"``;
- ``compiled``: ``torch.compile`` of that same reference call (compiled on its first call).

An implementation is a ``forward()`` returning the op's output and a ``backward(output)`` computing
the gradients a training step needs (w.r.t. the trained inputs only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

FUSED_BACKENDS_BY_DEVICE = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}
EAGER = "reference"
COMPILED = "compile"


@dataclass
class Impl:
    """One implementation of a case: ``kind`` is "fused", "eager" or "compiled".

    ``in_step``, when given, returns figures the implementation clocked about its own parts during
    the timed calls (the end-to-end step's layer times); the runner stores them as ``in_step``.
    """

    name: str
    kind: str
    forward: Callable[[], torch.Tensor]
    backward: Callable[[torch.Tensor], object]
    in_step: Optional[Callable[[], dict]] = None


@dataclass
class CaseInstance:
    """A case built on a device: implementations plus the bytes its op must move at the least."""

    impls: list
    bytes_fwd: Optional[int] = None
    bytes_bwd: Optional[int] = None
    out_shape: Optional[tuple] = None  # the output whose clone() is the copy baseline
    out_dtype: Optional[torch.dtype] = None
    notes: list = field(default_factory=list)
    close: Optional[Callable[[], None]] = None  # releases what the case holds (processes, groups); run last

    @property
    def bytes_fwdbwd(self) -> Optional[int]:
        if self.bytes_fwd is None or self.bytes_bwd is None:
            return None
        return self.bytes_fwd + self.bytes_bwd


@dataclass
class Case:
    """A named configuration; ``build(device, dtype)`` makes its ``CaseInstance``.

    ``tier`` keeps the default run within its time budget: ``--quick`` runs the "quick" cases,
    the default run adds the "default" ones, ``--all`` adds the "extended" ones.

    ``build`` raises ``CaseUnavailable`` when a piece it needs (an op, a layer) is missing.
    """

    op: str
    name: str
    models: str
    params: dict
    build: Callable[[torch.device, torch.dtype], CaseInstance]
    headline: bool = False
    tier: str = "default"  # "quick": in every run; "default": in the default run; "extended": with --all
    min_reps: Optional[int] = None  # more timing rounds than the run's default (not in --quick)


TIERS = {"quick": ("quick",), "default": ("quick", "default"), "all": ("quick", "default", "extended")}


class CaseUnavailable(RuntimeError):
    """A case cannot run here (e.g. its op is not in this build); the message says what is missing."""


def fused_backend_names(device: torch.device) -> list:
    """Fused backends worth trying on ``device``; whether each really runs is found by calling it."""
    return list(FUSED_BACKENDS_BY_DEVICE.get(device.type, ()))


def grad_backward(trained: Sequence[torch.Tensor], grad_output: Optional[torch.Tensor]) -> Callable:
    """``backward(out)``: the gradients of ``out`` (seeded with ``grad_output``) w.r.t. ``trained``."""
    trained = list(trained)

    def backward(out: torch.Tensor):
        return torch.autograd.grad(out, trained, grad_output)

    return backward


def op_impls(call: Callable[..., torch.Tensor], args: Sequence, backward: Callable, device: torch.device) -> list:
    """Fused backends, the eager reference and torch.compile(reference) of ``call(*args, backend=...)``.

    ``call`` must take the tensors in ``args`` positionally and ``backend`` as keyword.
    """
    impls = []
    for name in fused_backend_names(device):
        impls.append(Impl(name, "fused", lambda name=name: call(*args, backend=name), backward))
    impls.append(Impl(EAGER, "eager", lambda: call(*args, backend=EAGER), backward))

    def reference(*tensors):
        return call(*tensors, backend=EAGER)

    compiled = torch.compile(reference, dynamic=False)
    impls.append(Impl(COMPILED, "compiled", lambda: compiled(*args), backward))
    return impls
