"""The pure-PyTorch reference of vocab_map: the formula written with torch ops, differentiable by
autograd (also twice, and under torch.func). It materialises ``z`` and ``p`` as ``[B, L, V_s]``:
it is the oracle and the eager baseline, not the memory-lean path (the kernel backends are).

``z[b, i, :] = Σ_j θ[j, tokens[b, i + j − w//2], :]`` over the j whose position is inside the
sequence; ``p = softmax(z/τ)`` (gumbel: ``softmax((z + G)/τ)``; gumbel_hard: the one-hot of its
argmax forward, its gradient backward; none: ``p = z``); ``out = p @ embedding``.
"""
from __future__ import annotations

import torch

from .noise import gumbel


def window_sum(tokens: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``z [B, L, V_s]``: for each window offset j (shift s = j − w//2), ``θ[j, tokens[b, i + s]]``
    added at the positions i with ``0 <= i + s < L``."""
    B, L = tokens.shape
    w = theta.shape[0]
    z = theta.new_zeros((B, L, theta.shape[2]))
    for j in range(w):
        s = j - w // 2
        lo, hi = max(0, -s), min(L, L - s)
        if lo < hi:
            z[:, lo:hi] = z[:, lo:hi] + theta[j][tokens[:, lo + s:hi + s]]
    return z


def vocab_map_reference(tokens: torch.Tensor, theta: torch.Tensor, embedding: torch.Tensor, *, tau: float = 1.0,
                        mode: str = "softmax", seed: int = 0) -> torch.Tensor:
    """``out [B, L, D]`` (canonical inputs: tokens int64 [B, L], theta [w, V_t, V_s], embedding [V_s, D]);
    ``seed`` keys the Gumbel noise (noise.py) of rows ``n = b·L + i`` and columns ``v``."""
    B, L = tokens.shape
    z = window_sum(tokens, theta)
    if mode == "none":
        return z @ embedding
    s = z
    if mode in ("gumbel", "gumbel_hard"):
        rows = torch.arange(B * L, device=tokens.device)
        cols = torch.arange(theta.shape[2], device=tokens.device)
        s = z + gumbel(seed, rows, cols, theta.dtype).reshape(B, L, -1)
    s = s / tau
    p = torch.softmax(s, dim=-1)
    if mode == "gumbel_hard":  # the first maximal column of s
        hard = torch.nn.functional.one_hot(s.argmax(-1), p.shape[-1]).to(p.dtype)
        p = hard - p.detach() + p
    return p @ embedding
