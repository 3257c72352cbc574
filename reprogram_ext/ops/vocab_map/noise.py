"""The Gumbel noise of vocab_map, counter-based: ``G[n, v]`` is a function of (seed, n, v) only, so
the backward regenerates exactly the forward's noise without storing ``[N, V_s]``, and every
backend (this module for the reference and the C++ chunks, triton_kernels.py's ``_gumbel``) draws
the same numbers.

In 32-bit unsigned arithmetic (wrapping), with ``mix`` the "lowbias32" integer hash
(x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16):
``key = mix(seed_lo ^ mix(seed_hi))``, ``h = mix(mix(n ^ key) ^ v)``,
``u = ((h >> 8) + 0.5) / 2^24`` in (0, 1), ``G = -log(max(-log(u), 2^-25))``. The row ``n`` and
column ``v`` are taken modulo 2^32. The floor 2^-25 is the smallest exact ``-log(u)`` (``-log(1 -
2^-25)``, rounded): it acts only in float32, which rounds the largest ``u`` to 1 (``G`` would be +inf). csrc/vocab_map/noise.h computes the same with ATen ops.
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
M1, M2 = 0x7FEB352D, 0x846CA68B
LOG_U_FLOOR = 2.0 ** -25  # the smallest -log(u) (float32 rounds the largest u to 1)


def mul32(x, m: int):
    """``(x * m) mod 2^32`` for int64 tensors (or ints) in [0, 2^32), without int64 overflow: the
    product is split at bit 16 of ``m`` (each partial product stays below 2^48)."""
    lo = x * (m & 0xFFFF)
    hi = ((x * (m >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def mix32(x):
    """lowbias32 on int64 tensors (or ints) holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = mul32(x, M1)
    x = x ^ (x >> 15)
    x = mul32(x, M2)
    return x ^ (x >> 16)


def seed_key(seed: int) -> int:
    """The 32-bit key of a 64-bit seed."""
    seed &= (1 << 64) - 1
    return mix32((seed & MASK32) ^ mix32(seed >> 32))


def gumbel(seed: int, rows: torch.Tensor, cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``G[rows[:, None], cols[None, :]]`` as ``[len(rows), len(cols)]`` of ``dtype`` (int64 rows/cols)."""
    key = seed_key(seed)
    hr = mix32((rows & MASK32) ^ key)
    h = mix32(hr[:, None] ^ (cols & MASK32)[None, :])
    u = ((h >> 8).to(dtype) + 0.5) * (1.0 / (1 << 24))
    return -torch.log(torch.clamp_min(-torch.log(u), LOG_U_FLOOR))


def draw_seed(generator) -> int:
    """A 62-bit seed drawn from ``generator`` (or torch's default generator)."""
    return int(torch.randint(0, 1 << 62, (1,), generator=generator))
