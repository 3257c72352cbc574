"""Whether a torch.func transform that differentiates (grad, vjp, jacrev, jvp, ...) is running.

The fused backends' autograd (a C++ ``torch::autograd::Function`` for cpu/cuda, csrc/<op>/
autograd.cpp; ``torch.library.register_autograd`` for triton) cannot be differentiated by torch.func:
their ``refusal`` says so while such a transform runs, so that ``backend="auto"`` takes the
reference (plain torch ops: every transform works) and an explicit fused backend names the
reason. ``vmap`` alone is not refused.
"""
from __future__ import annotations

from typing import Optional

import torch

FUSED_BACKENDS = ("cpu", "cuda", "triton")


def differentiating_transform() -> Optional[str]:
    """The name of the innermost differentiating torch.func transform that is active, or None."""
    if torch.compiler.is_compiling():  # dynamo traces torch.func itself (and cannot trace this query)
        return None
    kinds = torch._C._functorch.TransformType
    for interpreter in reversed(torch._C._functorch.get_interpreter_stack() or ()):
        if interpreter.key() in (kinds.Grad, kinds.Jvp):
            return interpreter.key().name.lower()
    return None


def torch_func_refusal(name: str, op: str) -> Optional[str]:
    """Why backend ``name`` cannot run ``op`` now (under a torch.func grad/jvp transform), or None."""
    if name not in FUSED_BACKENDS:
        return None
    kind = differentiating_transform()
    if kind is None:
        return None
    return (f"{op}: torch.func's {kind} transform cannot differentiate backend {name!r} (its backward is a fused "
            "op of its own, not torch ops); use backend='reference', which backend='auto' picks under torch.func")
