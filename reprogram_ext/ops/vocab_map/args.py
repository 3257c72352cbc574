"""Validation of vocab_map arguments and their canonical form.

Every backend computes on ``tokens`` int64 ``[B, L]`` contiguous, ``theta [w, V_t, V_s]`` and
``embedding [V_s, D]`` contiguous, of one floating dtype (float32 or float64: the math runs in it),
``tau`` a positive finite float and ``mode`` one of options.MODES. Errors name the argument, what
was expected and what was given. Token values need a host read: eagerly they are read and the
first bad one is named; while ``torch.compile`` traces they become ``torch._assert_async`` checks
in the graph (a check on CPU, a device-side assert on CUDA), so no backend reads out of bounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .options import DTYPES, MODES, default_chunk

OP = "vocab_map"


@dataclass
class CanonicalVocabMap:
    tokens: torch.Tensor  # int64 [B, L], contiguous
    theta: torch.Tensor  # [w, V_t, V_s], contiguous
    embedding: torch.Tensor  # [V_s, D], contiguous
    tau: float
    mode: str
    chunk: int  # V_s columns per chunk (the kernel backends)


def _check_tensor(name: str, t, dim: int, shape_words: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{OP}: {name} must be {shape_words}, got shape {tuple(t.shape)}")


def canonicalize(tokens, theta, embedding, tau, mode, chunk: Optional[int]) -> CanonicalVocabMap:
    _check_tensor("tokens", tokens, 2, "[B, L] token ids")
    _check_tensor("theta", theta, 3, "[w, V_t, V_s] (window offset, target token, source token)")
    _check_tensor("embedding", embedding, 2, "[V_s, D] (the source model's token embeddings)")
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise TypeError(f"{OP}: tokens must be an integer tensor of token ids, got {tokens.dtype}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"{OP}: tokens must be a non-empty [B, L] (B >= 1 sequences of L >= 1 tokens), "
                         f"got shape {tuple(tokens.shape)}")
    if theta.dtype not in DTYPES:
        raise TypeError(f"{OP}: theta must be float32 or float64, got {theta.dtype}")
    if embedding.dtype != theta.dtype:
        raise TypeError(f"{OP}: embedding must have theta's dtype {theta.dtype}, got {embedding.dtype}")
    for name, t in (("theta", theta), ("embedding", embedding)):
        if t.device != tokens.device:
            raise ValueError(f"{OP}: {name} is on {t.device} but tokens is on {tokens.device}")
    w, V_t, V_s = theta.shape
    if w % 2 == 0:
        raise ValueError(f"{OP}: theta's window w = theta.shape[0] must be odd (centred on each position), "
                         f"got w = {w}")
    if V_t == 0 or V_s == 0:
        raise ValueError(f"{OP}: theta must be [w, V_t, V_s] with V_t, V_s >= 1, got shape {tuple(theta.shape)}")
    if embedding.shape[0] != V_s:
        raise ValueError(f"{OP}: embedding must be [V_s={V_s}, D] (theta's source vocabulary size V_s = "
                         f"theta.shape[2]), got shape {tuple(embedding.shape)}")
    if embedding.shape[1] == 0:
        raise ValueError(f"{OP}: embedding must have D >= 1 columns, got shape {tuple(embedding.shape)}")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{OP}: mode must be one of {MODES}, got {mode!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"{OP}: tau must be a float, got {tau!r}")
    if not math.isfinite(float(tau)) or float(tau) <= 0:
        raise ValueError(f"{OP}: tau must be a positive finite temperature, got {tau}")
    N = tokens.numel()
    if chunk is None:
        chunk = default_chunk(N, V_s)
    elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{OP}: chunk must be a positive int (V_s columns per chunk) or None, got {chunk!r}")
    return CanonicalVocabMap(tokens.to(torch.int64).contiguous(), theta.contiguous(), embedding.contiguous(),
                             float(tau), mode, min(chunk, V_s))


def check_token_values(tokens: torch.Tensor, V_t: int) -> None:
    """Token ids in [0, V_t) (eager: a host read naming the first bad id; compiled: an in-graph assert)."""
    if torch.compiler.is_compiling():
        torch._assert_async(((tokens >= 0) & (tokens < V_t)).all(),
                            f"{OP}: tokens must hold ids in [0, V_t) (V_t = theta.shape[1])")
        return
    lo, hi = torch.aminmax(tokens)
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= V_t:
        bad = lo if lo < 0 else hi
        where = tuple(int(i) for i in (tokens == bad).nonzero()[0])
        raise ValueError(f"{OP}: tokens must hold ids in [0, V_t={V_t}) (V_t = theta.shape[1]), got {bad} at {where}")
