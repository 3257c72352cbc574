"""``vocab_map``: windowed vocabulary mapping -> softmax / Gumbel-softmax / none -> ``@ embedding``
(docs/ops/vocab_map.md)."""
from __future__ import annotations

from typing import Optional

import torch

from ... import _extension  # noqa: F401  (loads the compiled kernels when built)
from ...backend_registry import resolve_backend
from .args import canonicalize, check_token_values
from .backends import auto_order, refusal
from .noise import draw_seed
from .options import has_noise
from .reference import vocab_map_reference

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def _forward_op(backend: str):
    if backend == "triton":
        from . import triton_op

        return triton_op.forward_op()
    return torch.ops.reprogram_ext.vocab_map_forward


def _seed(mode: str, generator, seed: Optional[int]) -> int:
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not INT64_MIN <= seed <= INT64_MAX:
            raise ValueError(f"vocab_map: seed must be an int64 or None, got {seed!r}")
        return seed
    return draw_seed(generator) if has_noise(mode) else 0


def vocab_map(
    tokens: torch.Tensor,
    theta: torch.Tensor,
    embedding: torch.Tensor,
    *,
    tau: float = 1.0,
    mode: str = "softmax",
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    chunk: Optional[int] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Map target tokens to mixtures of source-token embeddings: ``out [B, L, D]``.

    ``tokens [B, L]`` target token ids in ``[0, V_t)``; ``theta [w, V_t, V_s]`` (odd window w);
    ``embedding [V_s, D]`` (the source model's input embeddings). For each position:

    - ``z[b, i, :] = Σ_j θ[j, tokens[b, i + j − w//2], :]`` (offsets outside the sequence add 0);
    - ``p = softmax(z / tau)``; ``mode="gumbel"``: ``softmax((z + G) / tau)`` with Gumbel noise
      ``G``; ``"gumbel_hard"``: the one-hot of that softmax's argmax forward, its gradient
      backward (straight-through); ``"none"``: ``p = z`` (tau unused);
    - ``out = p @ embedding``.

    The noise is counter-based: ``G[n, v]`` is a hash of (seed, n = b·L + i, v) (noise.py), the
    seed drawn from ``generator`` (torch's default one when None) unless ``seed`` is given (give it
    under ``torch.compile``: drawing it reads a tensor). The kernel backends never hold
    ``[B, L, V_s]``: an online softmax over ``chunk`` columns of V_s at a time, recomputed in the
    backward; gradients to ``theta`` and, when it requires grad, ``embedding``. float32 or float64
    (theta and embedding alike; the math runs in that dtype). ``backend``: auto / cuda / triton /
    cpu / reference (the reference materialises ``[B, L, V_s]``).

    Examples::

        # Neekhara 2019: a width-5 window, Gumbel-softmax at temperature tau
        out = vocab_map(tokens, theta, source_embedding, tau=tau, mode="gumbel")    # theta [5, V_t, V_s]
        # R2DL (Vinod 2020): target embeddings as a linear map of the source embeddings
        out = vocab_map(tokens, theta, source_embedding, mode="none")               # theta [1, V_t, V_s]
    """
    c = canonicalize(tokens, theta, embedding, tau, mode, chunk)
    chosen = resolve_backend(backend, c.tokens.device, "vocab_map_forward", refusal(c), auto_order(c, c.tokens.device.type))
    check_token_values(c.tokens, c.theta.shape[1])
    key = _seed(c.mode, generator, seed)
    if chosen == "reference":
        return vocab_map_reference(c.tokens, c.theta, c.embedding, tau=c.tau, mode=c.mode, seed=key)
    out, _, _, _ = _forward_op(chosen)(c.tokens, c.theta, c.embedding, c.tau, c.mode, key, c.chunk)
    return out
