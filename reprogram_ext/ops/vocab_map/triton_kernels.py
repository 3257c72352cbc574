"""Triton kernels of vocab_map (the formulas of csrc/vocab_map/chunked.h, written tile-wise).

A program owns a [BLOCK_N, ·] tile of rows (n = b·L + i). It rebuilds ``z`` for a [BLOCK_N,
BLOCK_V] tile of source columns from the W window offsets (one gathered θ row per offset, 0 where
the offset leaves the sequence), adds the Gumbel noise (the counter-based hash of noise.py, in
uint32), and:

- forward (grid: row tiles x D tiles): an online softmax over the V_s tiles with the running max m,
  sum l and accumulator ``acc += exp(s − m) @ E[tile, d-tile]`` (a tl.dot), rescaled when m grows;
  ``out = acc / l``. Each D tile recomputes the same (m, l) (identical arithmetic), so the D tiles
  need no communication; the first D tile writes the row statistics and the argmax.
- backward chunk (grid: row tiles x column tiles of one V_s chunk): ``dp = g @ E[tile]ᵀ`` over D
  tiles, ``p`` from the saved (m, l), ``dz = p ⊙ (dp − δ) / τ``; it writes ``dz`` (and ``p`` when the
  embedding gradient is needed) for that chunk only; the launcher scatters them.

MODE: 0 softmax, 1 gumbel, 2 gumbel_hard, 3 none (options.MODES order). tl.dot runs at IEEE
precision (no TF32), so float32 results match the other backends.
"""
from __future__ import annotations

import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _mix32(x):
    """lowbias32 on uint32 values."""
    x = x ^ (x >> 16)
    x = x * tl.full(x.shape, 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full(x.shape, 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _gumbel(row_hash, cols, ACC: tl.constexpr):
    """G[n, v] = -log(max(-log(u), 2^-25)), u = ((mix(row_hash[n] ^ v) >> 8) + 0.5) / 2^24 (noise.py)."""
    h = _mix32(row_hash[:, None] ^ cols[None, :].to(tl.uint32))
    u = ((h >> 8).to(ACC) + 0.5) * (1.0 / 16777216.0)
    return -tl.log(tl.maximum(-tl.log(u), 2.98023223876953125e-08))  # 2^-25


@triton.jit
def _window_tile(tokens_ptr, theta_ptr, rows, row_ok, cols, col_ok, L, V_t, V_s, W: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr):
    """z[rows, cols] = Σ_j θ[j, tokens[b, i + j − W//2], cols] over the in-sequence offsets."""
    b = rows // L
    i = rows % L
    z = tl.zeros([BLOCK_N, BLOCK_V], ACC)
    for j in tl.static_range(W):
        pos = i + (j - W // 2)
        ok = row_ok & (pos >= 0) & (pos < L)
        tok = tl.load(tokens_ptr + b * L + pos, mask=ok, other=0)
        offs = (j * V_t + tok)[:, None].to(tl.int64) * V_s + cols[None, :]
        z += tl.load(theta_ptr + offs, mask=ok[:, None] & col_ok[None, :], other=0.0).to(ACC)
    return z


@triton.jit
def vocab_map_forward_kernel(tokens_ptr, theta_ptr, emb_ptr, out_ptr, stats_ptr, soft_ptr, hard_ptr, N, L, V_t,
                             V_s, D, inv_tau, key, W: tl.constexpr, MODE: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    dcols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = dcols < D
    row_hash = _mix32(rows.to(tl.uint32) ^ key.to(tl.uint32))
    acc = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    m = tl.full([BLOCK_N], NEG_INF, ACC)
    l = tl.zeros([BLOCK_N], ACC)
    best = tl.zeros([BLOCK_N], tl.int64)
    for v0 in range(0, V_s, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < V_s
        z = _window_tile(tokens_ptr, theta_ptr, rows, row_ok, cols, col_ok, L, V_t, V_s, W, BLOCK_N, BLOCK_V, ACC)
        e = tl.load(emb_ptr + cols[:, None].to(tl.int64) * D + dcols[None, :], mask=col_ok[:, None] & d_ok[None, :],
                    other=0.0).to(ACC)
        if MODE == 3:
            acc += tl.dot(z, e, input_precision="ieee")
        else:
            if MODE != 0:
                z += _gumbel(row_hash, cols, ACC)
            s = tl.where(col_ok[None, :], z * inv_tau, NEG_INF)
            chunk_max = tl.max(s, 1)
            if MODE == 2:  # strictly greater: the first maximal column overall
                chunk_arg = tl.argmax(s, 1).to(tl.int64) + v0
                best = tl.where(chunk_max > m, chunk_arg, best)
            m_new = tl.maximum(m, chunk_max)
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            l = l * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p, e, input_precision="ieee")
            m = m_new
    out_mask = row_ok[:, None] & d_ok[None, :]
    offs = rows[:, None].to(tl.int64) * D + dcols[None, :]
    if MODE == 3:
        tl.store(out_ptr + offs, acc, mask=out_mask)
    else:
        soft = acc / l[:, None]
        if MODE == 2:
            tl.store(soft_ptr + offs, soft, mask=out_mask)
            hard = tl.load(emb_ptr + best[:, None] * D + dcols[None, :], mask=out_mask, other=0.0)
            tl.store(out_ptr + offs, hard, mask=out_mask)
            if pid_d == 0:
                tl.store(hard_ptr + rows, best, mask=row_ok)
        else:
            tl.store(out_ptr + offs, soft, mask=out_mask)
        if pid_d == 0:
            tl.store(stats_ptr + rows * 2, m, mask=row_ok)
            tl.store(stats_ptr + rows * 2 + 1, l, mask=row_ok)


@triton.jit
def vocab_map_backward_chunk_kernel(tokens_ptr, theta_ptr, emb_ptr, g_ptr, stats_ptr, delta_ptr, dz_ptr, p_ptr, N,
                                    L, V_t, V_s, D, v0, width, inv_tau, key, W: tl.constexpr, MODE: tl.constexpr,
                                    NEED_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                                    BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    """dz [N, width] (and p [N, width] when NEED_P) of the chunk of columns v0 .. v0 + width."""
    pid_n = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    local = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    cols = v0 + local
    col_ok = local < width
    z = _window_tile(tokens_ptr, theta_ptr, rows, row_ok, cols, col_ok, L, V_t, V_s, W, BLOCK_N, BLOCK_V, ACC)
    dp = tl.zeros([BLOCK_N, BLOCK_V], ACC)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        g = tl.load(g_ptr + rows[:, None].to(tl.int64) * D + d[None, :], mask=row_ok[:, None] & d_ok[None, :],
                    other=0.0).to(ACC)
        et = tl.load(emb_ptr + cols[None, :].to(tl.int64) * D + d[:, None], mask=col_ok[None, :] & d_ok[:, None],
                     other=0.0).to(ACC)
        dp += tl.dot(g, et, input_precision="ieee")
    if MODE == 3:
        p = z
        dz = dp
    else:
        if MODE != 0:
            row_hash = _mix32(rows.to(tl.uint32) ^ key.to(tl.uint32))
            z += _gumbel(row_hash, cols, ACC)
        m = tl.load(stats_ptr + rows * 2, mask=row_ok, other=0.0)
        l = tl.load(stats_ptr + rows * 2 + 1, mask=row_ok, other=1.0)
        delta = tl.load(delta_ptr + rows, mask=row_ok, other=0.0)
        p = tl.exp(z * inv_tau - m[:, None]) / l[:, None]
        dz = p * (dp - delta[:, None]) * inv_tau
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None].to(tl.int64) * width + local[None, :]
    tl.store(dz_ptr + offs, dz, mask=mask)
    if NEED_P:
        tl.store(p_ptr + offs, p, mask=mask)
