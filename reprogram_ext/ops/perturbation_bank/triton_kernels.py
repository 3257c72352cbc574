"""Triton kernels of the perturbation bank: the directions' generator (philox.py's definition, the
same bits as the reference and the C++ kernels), the sphere's norm partials, the perturbed programs
and the directions' weighted sum.

Triton's own ``tl.randint4x(seed, offset)`` is Philox4x32-10 with the same key words and rounds but
the counter (offset, 0, 0, 0); the bank's counter carries the direction in its third word, so the
generator is spelled here. Float steps use only +, -, *, tl.div_rn and tl.sqrt_rn; the launcher
compiles with ``enable_fp_fusion=False`` so that no mul+add becomes an fma (the reference rounds
each operation once). Each program handles BLOCK groups of four elements (element 4g + l is lane l
of group g).
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import philox as _ref

# The reference's float32 constants (exact float32 values held in Python floats).
LN2 = tl.constexpr(_ref.LN2)
SQRT2 = tl.constexpr(_ref.SQRT2)
HALF_PI = tl.constexpr(_ref.HALF_PI)
L0, L1, L2, L3, L4 = (tl.constexpr(c) for c in _ref.LOG_C32)
S1, S2, S3, S4 = (tl.constexpr(c) for c in _ref.SIN_C32)
C1, C2, C3, C4 = (tl.constexpr(c) for c in _ref.COS_C32)
SQ_SCALE = tl.constexpr(_ref.SQ_SCALE)
KIND_SPHERE = tl.constexpr(0)
KIND_GAUSSIAN = tl.constexpr(1)
KIND_SEGMENTED = tl.constexpr(2)


@triton.jit
def _philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 blocks (philox.py: the round and the key schedule)."""
    for _ in tl.static_range(10):
        n0 = tl.umulhi(c2, 0xCD9E8D57) ^ c1 ^ k0
        n2 = tl.umulhi(c0, 0xD2511F53) ^ c3 ^ k1
        c1 = tl.mul(c2, 0xCD9E8D57, sanitize_overflow=False)
        c3 = tl.mul(c0, 0xD2511F53, sanitize_overflow=False)
        c0 = n0
        c2 = n2
        k0 = tl.add(k0, 0x9E3779B9, sanitize_overflow=False)
        k1 = tl.add(k1, 0xBB67AE85, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def _log_u24(n):
    """ln(n 2^-24) for exact float32 odd ints n (philox.py's _log_u)."""
    bits = n.to(tl.uint32, bitcast=True)
    e = ((bits >> 23) & 0xFF).to(tl.int32) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)
    big = m > SQRT2
    m = tl.where(big, m * 0.5, m)
    e = e + big.to(tl.int32)
    s = tl.div_rn(m - 1.0, m + 1.0)
    s2 = s * s
    p = s2 * L4 + L3
    p = p * s2 + L2
    p = p * s2 + L1
    p = p * s2 + L0
    ln_m = (s + s) + (s * s2) * p
    return (e - 24).to(tl.float32) * LN2 + ln_m


@triton.jit
def _box_muller(ra, rb):
    """The two normals of words (ra, rb) (philox.py's gaussian_from_words and _sincos_turn)."""
    n = (2 * (ra >> 9) + 1).to(tl.float32)
    m = (2 * (rb >> 9) + 1).to(tl.int32)
    radius = tl.sqrt_rn(_log_u24(n) * -2.0)
    k = (m + (1 << 21)) >> 22
    a = ((m - (k << 22)).to(tl.float32) * 2.384185791015625e-07) * HALF_PI  # * 2^-22, * fl32(pi/2)
    a2 = a * a
    ps = a2 * S4 + S3
    ps = ps * a2 + S2
    ps = ps * a2 + S1
    sn = a + (a * a2) * ps
    pc = a2 * C4 + C3
    pc = pc * a2 + C2
    pc = pc * a2 + C1
    cs = a2 * pc + 1.0
    quad = k & 3
    c = tl.where(quad == 0, cs, tl.where(quad == 1, -sn, tl.where(quad == 2, -cs, sn)))
    s = tl.where(quad == 0, sn, tl.where(quad == 1, cs, tl.where(quad == 2, -sn, -cs)))
    return radius * c, radius * s


@triton.jit
def _segmented(r):
    mag = (((r >> 8) & 0x7FFFFF) + (1 << 23)).to(tl.float32) * 5.9604644775390625e-08  # * 2^-24
    return tl.where((r >> 31) != 0, -mag, mag)


@triton.jit
def _raw4(g, j, k0, k1, KIND: tl.constexpr):
    """The four raw values (z, or Delta) of element groups g (int64) of direction j."""
    c0 = (g & 0xFFFFFFFF).to(tl.uint32)
    c1 = (g >> 32).to(tl.uint32)
    c2 = tl.zeros_like(c0) + j
    c3 = tl.zeros_like(c0)
    r0, r1, r2, r3 = _philox(c0, c1, c2, c3, k0, k1)
    if KIND == KIND_SEGMENTED:
        v0, v1, v2, v3 = _segmented(r0), _segmented(r1), _segmented(r2), _segmented(r3)
    else:
        v0, v1 = _box_muller(r0, r1)
        v2, v3 = _box_muller(r2, r3)
    return v0, v1, v2, v3


@triton.jit
def _square_fixed(z, e, numel):
    return tl.where(e < numel, ((z * z) * SQ_SCALE).to(tl.int64), 0)


@triton.jit
def sphere_partials_kernel(partial_ptr, js_ptr, seed_lo, seed_hi, numel, blocks, BLOCK: tl.constexpr):
    """partial[jj, blk] = sum over the block's elements of trunc(fl(z^2) 2^32) (int64, exact)."""
    jj = tl.program_id(0)
    blk = tl.program_id(1)
    k0 = seed_lo.to(tl.uint32)
    k1 = seed_hi.to(tl.uint32)
    j = tl.load(js_ptr + jj)
    g = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    z0, z1, z2, z3 = _raw4(g, j, k0, k1, KIND_GAUSSIAN)
    e = 4 * g
    s = (_square_fixed(z0, e, numel) + _square_fixed(z1, e + 1, numel) + _square_fixed(z2, e + 2, numel)
         + _square_fixed(z3, e + 3, numel))
    tl.store(partial_ptr + jj.to(tl.int64) * blocks + blk, tl.sum(s, axis=0))


@triton.jit
def _store_program(out_ptr, theta_ptr, e, numel, u, beta, sign):
    t = tl.load(theta_ptr + e, mask=e < numel)
    step = beta * u.to(t.dtype)
    tl.store(out_ptr + e, t + tl.where(sign < 0, -step, step), mask=e < numel)


@triton.jit
def programs_kernel(out_ptr, theta_ptr, beta_ptr, js_ptr, signs_ptr, norms_ptr, seed_lo, seed_hi, numel,
                    KIND: tl.constexpr, BLOCK: tl.constexpr):
    """out[k, :] = theta + sign_k fl(beta u_{j_k}) (j_k = 0: theta), before the activation."""
    k = tl.program_id(0)
    blk = tl.program_id(1)
    k0 = seed_lo.to(tl.uint32)
    k1 = seed_hi.to(tl.uint32)
    j = tl.load(js_ptr + k)
    sign = tl.load(signs_ptr + k)
    g = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    e = 4 * g
    dst = out_ptr + k.to(tl.int64) * numel
    if j == 0:
        for lane in tl.static_range(4):
            t = tl.load(theta_ptr + e + lane, mask=e + lane < numel)
            tl.store(dst + e + lane, t, mask=e + lane < numel)
    else:
        beta = tl.load(beta_ptr)
        v0, v1, v2, v3 = _raw4(g, j, k0, k1, KIND)
        if KIND == KIND_SPHERE:
            norm = tl.load(norms_ptr + k)
            v0, v1, v2, v3 = tl.div_rn(v0, norm), tl.div_rn(v1, norm), tl.div_rn(v2, norm), tl.div_rn(v3, norm)
        _store_program(dst, theta_ptr, e, numel, v0, beta, sign)
        _store_program(dst, theta_ptr, e + 1, numel, v1, beta, sign)
        _store_program(dst, theta_ptr, e + 2, numel, v2, beta, sign)
        _store_program(dst, theta_ptr, e + 3, numel, v3, beta, sign)


@triton.jit
def _accumulate(acc, w, v, KIND: tl.constexpr, F64: tl.constexpr):
    if KIND == KIND_SEGMENTED:
        if F64:
            out = acc + w / v.to(tl.float64)  # IEEE float64 division (tl.div_rn is float32 only)
        else:
            out = acc + tl.div_rn(w, v)
    else:
        out = acc + w * v.to(acc.dtype)
    return out


@triton.jit
def combine_kernel(out_ptr, w_ptr, norms_ptr, q, seed_lo, seed_hi, numel, KIND: tl.constexpr, F64: tl.constexpr,
                   BLOCK: tl.constexpr):
    """out[i] = sum_{j=1..q} w_j u_j[i] (segmented: w_j / Delta_j[i]), j ascending."""
    blk = tl.program_id(0)
    k0 = seed_lo.to(tl.uint32)
    k1 = seed_hi.to(tl.uint32)
    g = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    e = 4 * g
    w0 = tl.load(w_ptr)
    a0 = tl.zeros([BLOCK], dtype=w0.dtype)
    a1 = tl.zeros([BLOCK], dtype=w0.dtype)
    a2 = tl.zeros([BLOCK], dtype=w0.dtype)
    a3 = tl.zeros([BLOCK], dtype=w0.dtype)
    for jj in range(0, q):
        w = tl.load(w_ptr + jj)
        v0, v1, v2, v3 = _raw4(g, jj + 1, k0, k1, KIND)
        if KIND == KIND_SPHERE:
            norm = tl.load(norms_ptr + jj)
            v0, v1, v2, v3 = tl.div_rn(v0, norm), tl.div_rn(v1, norm), tl.div_rn(v2, norm), tl.div_rn(v3, norm)
        a0 = _accumulate(a0, w, v0, KIND, F64)
        a1 = _accumulate(a1, w, v1, KIND, F64)
        a2 = _accumulate(a2, w, v2, KIND, F64)
        a3 = _accumulate(a3, w, v3, KIND, F64)
    tl.store(out_ptr + e, a0, mask=e < numel)
    tl.store(out_ptr + e + 1, a1, mask=e + 1 < numel)
    tl.store(out_ptr + e + 2, a2, mask=e + 2 < numel)
    tl.store(out_ptr + e + 3, a3, mask=e + 3 < numel)
