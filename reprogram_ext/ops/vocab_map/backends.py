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

from ...backend_registry import CUDA_FIRST, TRITON_FIRST, order_by_class
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


# ---- backend="auto" on CUDA tensors: the order per input class (docs/backends.md) ----------------
# Predictions (H200, fp32, 32k vocabulary, fwd+bwd, not measured on GPU) in bench/notes/vocab_map.md:
# - "noise" (mode gumbel / gumbel_hard): the cuda backend (host code: cuBLAS per chunk + ATen
#   elementwise ops) pays ~20 int64 ATen passes for the noise, forward and again in the backward:
#   ~16 ms; the Triton kernels hash the noise in registers: ~10 ms. Triton first.
# - "plain" (mode softmax / none): no noise; cuBLAS SGEMM at the full FP32 rate, ~6 ms; the Triton
#   kernels' IEEE tl.dot runs at 30-50 % of it (~9 ms: the 10 ms less the ~1 ms of noise). CUDA first.
CUDA_ORDER = {"noise": TRITON_FIRST, "plain": CUDA_FIRST}


def input_class(mode: str) -> str:
    """The class of an input for the auto rule: "noise" for the Gumbel modes, else "plain"."""
    return "noise" if mode in ("gumbel", "gumbel_hard") else "plain"


def auto_order(c: CanonicalVocabMap, device_type: str) -> Optional[tuple]:
    """The order "auto" tries for the canonical inputs ``c``: ``CUDA_ORDER[class]`` on CUDA
    tensors, None (the registry's AUTO_ORDER for the device) elsewhere."""
    return order_by_class(device_type, CUDA_ORDER, input_class(c.mode)) if device_type == "cuda" else None
