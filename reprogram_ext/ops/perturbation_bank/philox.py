"""The directions' generator, in plain torch integer and float32 ops: the definition every backend
reproduces bit for bit (C++/CUDA: csrc/perturbation_bank/philox.h, Triton: triton_kernels.py).

Philox4x32-10 (Salmon et al. 2011, Random123): 10 rounds on a 128-bit counter (c0, c1, c2, c3) with
a 64-bit key (k0, k1); each round
    (c0, c1, c2, c3) <- (hi(B*c2) ^ c1 ^ k0,  lo(B*c2),  hi(A*c0) ^ c3 ^ k1,  lo(A*c0)),
    (k0, k1) <- (k0 + W0, k1 + W1)   (mod 2^32),
with A = 0xD2511F53, B = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85.

Which words make which element (``docs/blackbox.md``, "The generator"):
- key = (seed mod 2^32, seed >> 32), seed in [0, 2^64);
- direction j (1-based) and the flat element i of theta (row-major over its shape): one Philox call
  per group g = i >> 2 of four elements, counter (g mod 2^32, g >> 32, j, 0); element i takes lane
  i & 3 of the output words (r0, r1, r2, r3);
- "gaussian": lanes (0, 1) are the Box-Muller pair of (r0, r1), lanes (2, 3) that of (r2, r3):
  n = 2*(r_a >> 9) + 1, m = 2*(r_b >> 9) + 1 (odd 24-bit ints), u1 = n * 2^-24 in (0, 1),
  z_even = sqrt(-2 ln u1) * cos(2 pi m 2^-24), z_odd = sqrt(-2 ln u1) * sin(2 pi m 2^-24),
  with ln, cos and sin evaluated by the fixed float32 sequences below (only +, -, *, / and sqrt,
  each rounded once, never fused: the same bits on every IEEE machine);
- "sphere": u = z / ||z||, with ||z||^2 accumulated exactly in integers: S = sum_i
  trunc(fl(z_i * z_i) * 2^32) (int64, order-free), ||z|| = sqrt(fl32(max(S, 1)) * 2^-32);
  u_i = fl(z_i / ||z||);
- "segmented": lane word r gives |Delta| = (2^23 + ((r >> 8) & 0x7FFFFF)) * 2^-24 in [0.5, 1) and
  the sign of bit 31 (set: negative), exact in float32.

Directions are float32 values on every backend (float64 theta uses the same values, widened).
"""
from __future__ import annotations

import math

import torch

PHILOX_A = 0xD2511F53
PHILOX_B = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
ROUNDS = 10

# float32 constants of the Box-Muller evaluation (the C++ and Triton code spell the same values).
LN2 = 0.693147182464599609375  # fl32(ln 2)
SQRT2 = 1.41421353816986083984375  # fl32(sqrt 2)
HALF_PI = 1.57079637050628662109375  # fl32(pi / 2)
LOG_C = (2.0 / 3, 2.0 / 5, 2.0 / 7, 2.0 / 9, 2.0 / 11)  # ln m = 2s + s^3 (c0 + s^2 (c1 + ...)), rounded to fl32
SIN_C = (-1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880)
COS_C = (-0.5, 1.0 / 24, -1.0 / 720, 1.0 / 40320)
SQ_SCALE = 2.0 ** 32  # fixed-point scale of the squared norm
MAX_SPHERE_NUMEL = 2 ** 25  # S stays below 2^63: |z| <= sqrt(2 * 24 ln 2) < 5.78, z^2 * 2^32 * 2^25 < 2^63

DIRECTIONS = ("sphere", "gaussian", "segmented")


def _f32(v: float) -> float:
    return float(torch.tensor(v, dtype=torch.float32))


LOG_C32 = tuple(_f32(c) for c in LOG_C)
SIN_C32 = tuple(_f32(c) for c in SIN_C)
COS_C32 = tuple(_f32(c) for c in COS_C)


def _mulhilo(a: int, b: torch.Tensor):
    """(hi, lo) 32-bit words of the 64-bit product a * b (a a 32-bit constant, b int64 holding uint32),
    in int64 without overflow: a * b = (a_hi * 2^16 + a_lo) * b."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    p_lo = b * a_lo  # < 2^48
    p_hi = b * a_hi  # < 2^48
    t = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (t >> 32), t & MASK32


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors holding uint32 words; returns the four output words."""
    for _ in range(ROUNDS):
        hi_b, lo_b = _mulhilo(PHILOX_B, c2)
        hi_a, lo_a = _mulhilo(PHILOX_A, c0)
        c0, c1, c2, c3 = (hi_b ^ c1 ^ k0), lo_b, (hi_a ^ c3 ^ k1), lo_a
        k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def raw_words(seed: int, j, numel: int, device) -> torch.Tensor:
    """The words of the element groups covering ``numel`` elements of direction ``j`` (an int:
    [4 * groups]; a 1-D int64 tensor of directions: [len(j), 4 * groups]); element i is word i."""
    groups = (numel + 3) // 4
    g = torch.arange(groups, dtype=torch.int64, device=device)
    js = torch.as_tensor(j, dtype=torch.int64, device=device)
    g, c2 = torch.broadcast_tensors(g, js.reshape(-1, 1) & MASK32)
    words = philox4x32_10(g & MASK32, g >> 32, c2, torch.zeros_like(g), seed & MASK32, (seed >> 32) & MASK32)
    out = torch.stack(words, dim=-1).reshape(js.numel(), 4 * groups)
    return out if js.dim() else out[0]


def sqrt_rn(t: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root: computed in float64 and rounded once more, which is
    exact for sqrt (53 >= 2 * 24 + 2 bits; Figueroa 1995). torch's float32 sqrt on CPU is not always
    correctly rounded (its AVX-512 kernel is off by one ulp on ~0.7% of inputs); +, -, * and / are."""
    return torch.sqrt(t.to(torch.float64)).to(torch.float32)


def _uniform24(r: torch.Tensor) -> torch.Tensor:
    """Odd 24-bit int n = 2*(r >> 9) + 1 as float32 (exact)."""
    return (2 * (r >> 9) + 1).to(torch.float32)


def _log_u(n: torch.Tensor) -> torch.Tensor:
    """ln(n * 2^-24) for float32 odd integers n in [1, 2^24): n = m * 2^e, m in [sqrt(1/2), sqrt 2],
    ln = (e - 24) ln 2 + 2 atanh((m - 1) / (m + 1)) (odd series to s^11)."""
    bits = n.view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)
    big = m > SQRT2
    m = torch.where(big, m * 0.5, m)
    e = e + big.to(torch.int32)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = torch.full_like(s, LOG_C32[4])
    for c in reversed(LOG_C32[:4]):
        p = p * s2 + c
    ln_m = (s + s) + (s * s2) * p
    return (e - 24).to(torch.float32) * LN2 + ln_m


def _sincos_turn(m: torch.Tensor):
    """(cos, sin) of 2 pi m 2^-24 for odd ints m (int64) in [1, 2^24): quadrant k = round(m / 2^22),
    a = ((m - k 2^22) * 2^-22) * fl32(pi/2) in [-pi/4, pi/4], Taylor polynomials, quadrant rotation."""
    k = (m + (1 << 21)) >> 22
    a = ((m - (k << 22)).to(torch.float32) * (2.0 ** -22)) * HALF_PI
    a2 = a * a
    ps = torch.full_like(a, SIN_C32[3])
    for c in reversed(SIN_C32[:3]):
        ps = ps * a2 + c
    sin = a + (a * a2) * ps
    pc = torch.full_like(a, COS_C32[3])
    for c in reversed(COS_C32[:3]):
        pc = pc * a2 + c
    cos = a2 * pc + 1.0
    quad = k & 3
    c_out = torch.where(quad == 0, cos, torch.where(quad == 1, -sin, torch.where(quad == 2, -cos, sin)))
    s_out = torch.where(quad == 0, sin, torch.where(quad == 1, cos, torch.where(quad == 2, -sin, -cos)))
    return c_out, s_out


def gaussian_from_words(words: torch.Tensor) -> torch.Tensor:
    """Box-Muller on lane pairs (0, 1) and (2, 3) of each group of four words (the last dim of
    ``words``, whole groups) -> float32 z per word."""
    w = words.view(*words.shape[:-1], -1, 2)  # [..., pair, (a, b)]: (r0, r1) and (r2, r3)
    n = _uniform24(w[..., 0])
    m = 2 * (w[..., 1] >> 9) + 1
    radius = sqrt_rn(_log_u(n) * -2.0)
    cos, sin = _sincos_turn(m)
    z = torch.stack([radius * cos, radius * sin], dim=-1)  # [..., pair, lane-in-pair]
    return z.reshape(words.shape)


def segmented_from_words(words: torch.Tensor) -> torch.Tensor:
    """Entries uniform on +-[0.5, 1): |Delta| = (2^23 + bits 8..30) 2^-24, sign from bit 31."""
    mag = (((words >> 8) & 0x7FFFFF) + (1 << 23)).to(torch.float32) * (2.0 ** -24)
    return torch.where((words >> 31) != 0, -mag, mag)


def squared_norm_fixed(z: torch.Tensor) -> torch.Tensor:
    """S = sum_i trunc(fl32(z_i^2) * 2^32) in int64 over the last dim (exact, independent of the order)."""
    return ((z * z) * SQ_SCALE).to(torch.int64).sum(-1, keepdim=True)


def norm_from_fixed(s: torch.Tensor) -> torch.Tensor:
    """||z|| = sqrt(fl32(max(S, 1)) * 2^-32), float32."""
    return sqrt_rn(s.clamp_min(1).to(torch.float32) * (1.0 / SQ_SCALE))


def direction(seed: int, j, numel: int, kind: str, device) -> torch.Tensor:
    """Direction u_j (j >= 1) over ``numel`` elements, float32 [numel]; for a 1-D tensor of
    directions j, [len(j), numel]."""
    words = raw_words(seed, j, numel, device)
    if kind == "segmented":
        return segmented_from_words(words)[..., :numel]
    z = gaussian_from_words(words)[..., :numel]  # the last group's unused lanes take no part
    if kind == "gaussian":
        return z
    return z / norm_from_fixed(squared_norm_fixed(z))


assert math.isclose(LN2, math.log(2), rel_tol=1e-7) and math.isclose(HALF_PI, math.pi / 2, rel_tol=1e-7)
