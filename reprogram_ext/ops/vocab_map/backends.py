"""Each backend's input limits for vocab_map (docs/backends.md): the ``refusal`` callback that
``resolve_backend`` asks before choosing a backend. Imports no Triton.

- cpu, cuda: no input limit (chunked ATen GEMMs).
- triton: D (the embedding width) at most ``MAX_TRITON_D``: a program holds a [BLOCK_N, BLOCK_D]
  accumulator and loops over D in tiles; tokens, theta and embedding below 2^31 elements (int32 offsets).
- cpu, cuda, triton: refused while a torch.func grad/jvp transform runs (ops/transforms.py).
- reference: no limit (it materialises [B, L, V_s]).
"""
from __future__ import annotations

from typing import Callable, Optional

from ..transforms import torch_func_refusal
from .args import CanonicalVocabMap

INT32_ELEMENTS = (1 << 31) - 1


def triton_limit(c: CanonicalVocabMap) -> Optional[str]:
    """Why the Triton kernels cannot take these inputs, or None (triton_op.py checks the same)."""
    for name, t in (("tokens", c.tokens), ("theta", c.theta), ("embedding", c.embedding)):
        if t.numel() > INT32_ELEMENTS:
            return f"the Triton vocab_map kernels index in int32: {name} has {t.numel()} > 2^31 - 1 elements"
    return None


def refusal(c: CanonicalVocabMap) -> Callable[[str], Optional[str]]:
    """``refusal(name)``: why backend ``name`` cannot take the canonical inputs ``c``, or None."""
    def why(name: str) -> Optional[str]:
        limit = triton_limit(c) if name == "triton" else None
        return limit or torch_func_refusal(name, "vocab_map")

    return why
