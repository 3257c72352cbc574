"""Triton kernels of label_map and mapped_cross_entropy (the formulas of
csrc/label_map/math.h and options.h, written tile-wise; REDUCE and PRE are the option
names of options.py as str constexprs; reduce topk_mean is launched as REDUCE="mean" with
SELECT_TOP, which keeps only each target's topk largest entries of the tile valid).

A row program holds a [BLOCK_T, BLOCK_K] tile of the mapping at a time: the sources
``index[t, k]`` (-1 = padding), their weights and gathered logits ``x[n, index[t, k]]``; each
target's reduction is a reduction over the tile's K axis. The gradient row is written once per
element by gradient_row_kernel, duplicated sources included, deterministically and without atomics:
each element adds its source's entries, in (t, k) order, from the source -> entries map of the
index (triton_source_map.py: built once per index tensor and cached).
"""
from __future__ import annotations

import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))  # globals used in @jit code must be constexpr
# Row blocks per step of the capturing row pass (_row_norm_capture): its entry checks and predicated
# loads run once per CAPTURE_BLOCKS blocks (bench/notes/label_map.md, session 9).
CAPTURE_BLOCKS = tl.constexpr(4)


@triton.jit
def _online_step(m, r, v):
    """One step of the online (max, sum-exp) of each lane: m' = max(m, v), r' = r exp(m - m') + exp(v - m')
    (taken about 0 while m' is -inf, so that a lane that has seen only -inf keeps r = 0)."""
    m_new = tl.maximum(m, v)
    base = tl.where(m_new == NEG_INF, 0.0, m_new)
    r = r * tl.exp(m - base) + tl.exp(v - base)
    return m_new, r


@triton.jit
def _lanes_norm(m, r):
    """The lanes merged: (max = max_lanes m, log sum_lanes r exp(m - max))."""
    mx = tl.max(m, 0)
    return mx, tl.log(tl.sum(r * tl.exp(m - mx), 0))


@triton.jit
def _row_norm(x_row, S, BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    """(max, log sum_j exp(x_j - max)) of one row in one pass (online): each lane keeps its running max m
    and sum r = sum exp(x - m), rescaled by exp(m_old - m_new) when m grows (a lane that has seen only
    -inf keeps r = 0); then max = max_lanes m and sum = sum_lanes r exp(m - max). A row of -inf, or one
    holding +inf or NaN, gives a NaN log-sum, as the two-pass form does."""
    offs = tl.arange(0, BLOCK_S)
    m = tl.full([BLOCK_S], NEG_INF, ACC)
    r = tl.zeros([BLOCK_S], ACC)
    for s0 in range(0, S, BLOCK_S):
        v = tl.load(x_row + s0 + offs, mask=s0 + offs < S, other=NEG_INF).to(ACC)
        m, r = _online_step(m, r, v)
    return _lanes_norm(m, r)


@triton.jit
def _capture_sources(src, valid):
    """The sources as _row_norm_capture takes them: int32, -1 where invalid (in no span). Only these stay
    live across the row pass; valid is at >= 0 again after it."""
    return tl.where(valid, src, -1).to(tl.int32)


@triton.jit
def _row_norm_capture(x_row, S, at, BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    """_row_norm that also captures the mapped logits xv = x_row[at] of a [BLOCK_T, BLOCK_K] index tile
    while the row streams, so that nothing reads the row after its pass. One step streams CAPTURE_BLOCKS
    row blocks [s0, s0 + CAPTURE_BLOCKS BLOCK_S) (the same online steps per lane in the same order as
    _row_norm; a block past S is all -inf, which leaves (m, r) exactly as they were), then each valid
    entry whose source lies in that span loads its logit: a predicated load of a sector that this step's
    own stream fetches, served by L1 / L2, never a second DRAM access. Invalid entries keep 0, as _tile's
    gather gives them. Returns (max, log_sum, xv)."""
    offs = tl.arange(0, BLOCK_S)
    m = tl.full([BLOCK_S], NEG_INF, ACC)
    r = tl.zeros([BLOCK_S], ACC)
    xv = tl.zeros_like(at).to(x_row.dtype.element_ty)  # in the row's dtype, converted once after the pass
    for s0 in range(0, S, CAPTURE_BLOCKS * BLOCK_S):
        for u in tl.static_range(CAPTURE_BLOCKS):
            j = s0 + u * BLOCK_S + offs
            v = tl.load(x_row + j, mask=j < S, other=NEG_INF).to(ACC)
            m, r = _online_step(m, r, v)
        rel = at - s0
        xv = tl.load(x_row + s0 + rel, mask=(rel >= 0) & (rel < CAPTURE_BLOCKS * BLOCK_S), other=xv)
    mx, log_sum = _lanes_norm(m, r)
    return mx, log_sum, xv.to(ACC)


@triton.jit
def _pre_value(x, row_max, log_sum, PRE: tl.constexpr):
    """v = pre(x): none x, softmax exp(x - lse), log_softmax x - lse, lse = row_max + log_sum."""
    if PRE == "softmax":
        return tl.exp((x - row_max) - log_sum)
    elif PRE == "log_softmax":
        return (x - row_max) - log_sum
    else:
        return x


@triton.jit
def _tile_index(index_ptr, t0, S, T, K, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    """Targets t0 .. t0+BLOCK_T of the index: (t, k, flat entry t K + k, in-bounds, source, valid).
    A source outside [0, S) is treated as padding, so that no value reaches an out-of-bounds read
    (the front end refuses such an index, eagerly or by an in-graph assert, before the launch)."""
    t = t0 + tl.arange(0, BLOCK_T)
    k = tl.arange(0, BLOCK_K)
    inb = (t[:, None] < T) & (k[None, :] < K)
    flat = t[:, None] * K + k[None, :]
    src = tl.load(index_ptr + flat, mask=inb, other=-1)
    valid = (src >= 0) & (src < S)
    return t, k, flat, inb, src, valid


@triton.jit
def _tile_weights(weight_ptr, flat, valid, HAS_W: tl.constexpr, ACC: tl.constexpr):
    """The tile's weights, 0 where invalid (1 where valid without HAS_W)."""
    if HAS_W:
        w = tl.load(weight_ptr + flat, mask=valid, other=0.0).to(ACC)
    else:
        w = tl.where(valid, 1.0, 0.0).to(ACC)
    return w


@triton.jit
def _gather(x_row, src, valid, ACC: tl.constexpr):
    """x_row[src] where valid, else 0."""
    return tl.load(x_row + tl.where(valid, src, 0), mask=valid, other=0.0).to(ACC)


@triton.jit
def _tile(x_row, index_ptr, weight_ptr, t0, S, T, K, HAS_W: tl.constexpr, BLOCK_T: tl.constexpr,
          BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """Targets t0 .. t0+BLOCK_T: (t, k, in-bounds, valid, gathered logits (0 where invalid), weights
    (0 where invalid)), the logits gathered from the row."""
    t, k, flat, inb, src, valid = _tile_index(index_ptr, t0, S, T, K, BLOCK_T, BLOCK_K)
    xv = _gather(x_row, src, valid, ACC)
    w = _tile_weights(weight_ptr, flat, valid, HAS_W, ACC)
    return t, k, flat, inb, valid, xv, w


@triton.jit
def _key_greater(a, b):
    """topk_mean's order on logits: a above b (nan above every number)."""
    return (a > b) | ((a != a) & (b == b))


@triton.jit
def _top_entries(xv, valid, k, topk):
    """topk_mean's selection in a [BLOCK_T, BLOCK_K] tile: the valid entries whose rank is below
    topk, the rank of (t, k) being the number of valid (t, j) before it: a larger logit, or an
    equal one at a lower position j (csrc/label_map/math.h top_cut, as a count)."""
    xj = xv[:, :, None]
    xk = xv[:, None, :]
    jk = k[:, None] < k[None, :]
    before = _key_greater(xj, xk) | (~_key_greater(xk, xj) & jk[None, :, :])
    rank = tl.sum((before & valid[:, :, None]).to(tl.int32), 1)
    return valid & (rank < topk)


@triton.jit
def _select_top(xv, valid, w, k, topk, SELECT_TOP: tl.constexpr):
    """Where SELECT_TOP (reduce topk_mean, launched as REDUCE="mean"): only each target's topk largest
    entries stay valid (weights 0 elsewhere); topk_mean is the mean over them. (valid, w)."""
    if SELECT_TOP:
        valid = _top_entries(xv, valid, k, topk)
        w = tl.where(valid, w, 0.0)
    return valid, w


@triton.jit
def _tile_top(x_row, index_ptr, weight_ptr, t0, S, T, K, topk, HAS_W: tl.constexpr, SELECT_TOP: tl.constexpr,
              BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """_tile, then _select_top."""
    t, k, flat, inb, valid, xv, w = _tile(x_row, index_ptr, weight_ptr, t0, S, T, K, HAS_W, BLOCK_T, BLOCK_K, ACC)
    valid, w = _select_top(xv, valid, w, k, topk, SELECT_TOP)
    return t, k, flat, inb, valid, xv, w


@triton.jit
def _first_max(values, valid, k, BLOCK_K: tl.constexpr):
    """(max over valid k of values, first k reaching it) per target."""
    vm = tl.where(valid, values, NEG_INF)
    best = tl.max(vm, 1)
    arg = tl.min(tl.where(valid & (vm == best[:, None]), k[None, :], BLOCK_K), 1)
    return best, arg


@triton.jit
def _group_value(v, w, valid, k, REDUCE: tl.constexpr, BLOCK_K: tl.constexpr):
    """label_map's reduction of w*v per target: (out, sum of weights, first maximal k)."""
    wv = w * v
    wsum = tl.sum(w, 1)
    if REDUCE == "max":
        out, arg = _first_max(wv, valid, k, BLOCK_K)
    else:
        out = tl.sum(tl.where(valid, wv, 0.0), 1)
        arg = tl.zeros_like(wsum).to(tl.int32)
        if REDUCE == "mean":
            out = out / wsum
    return out, wsum, arg


@triton.jit
def _value_coefficient(w, wsum, arg, k, valid, REDUCE: tl.constexpr):
    """d out_t / d v_{s_k}."""
    if REDUCE == "max":
        c = tl.where(k[None, :] == arg[:, None], w, 0.0)
    elif REDUCE == "mean":
        c = w / wsum[:, None]
    else:
        c = w
    return tl.where(valid, c, 0.0)


@triton.jit
def _value_weight_derivative(v, out, wsum, arg, k, valid, REDUCE: tl.constexpr):
    """d out_t / d w_k."""
    if REDUCE == "max":
        d = tl.where(k[None, :] == arg[:, None], v, 0.0)
    elif REDUCE == "mean":
        d = (v - out[:, None]) / wsum[:, None]
    else:
        d = v
    return tl.where(valid, d, 0.0)


@triton.jit
def _group_log_prob(xv, w, valid, k, shift, REDUCE: tl.constexpr, BLOCK_K: tl.constexpr):
    """pre softmax in log space: L_t = (m - shift) + log(R) - log(wsum) [mean], with
    e_k = exp(x_k - m), R = sum_k w e (or max_k w e). Returns (L, e, R, wsum, arg)."""
    m = tl.max(tl.where(valid, xv, NEG_INF), 1)
    m = tl.where(m == NEG_INF, 0.0, m)
    e = tl.where(valid, tl.exp(xv - m[:, None]), 0.0)
    we = w * e
    wsum = tl.sum(w, 1)
    if REDUCE == "max":
        R, arg = _first_max(we, valid, k, BLOCK_K)
    else:
        R = tl.sum(we, 1)
        arg = tl.zeros_like(wsum).to(tl.int32)
    L = (m - shift) + tl.log(R)
    if REDUCE == "mean":
        L = L - tl.log(wsum)
    return L, e, R, wsum, arg


@triton.jit
def _mapped_logits_of(t, k, valid, xv, w, T, shift, row_max, log_sum, REDUCE: tl.constexpr, PRE: tl.constexpr,
                      BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """A tile's L_t (-inf beyond T), its coefficient of the logit gradient (d L_t / d x through (t, k),
    without the -p_j term), and d L_t / d w_k, from its logits xv and weights w."""
    if PRE == "softmax":
        L, e, R, wsum, arg = _group_log_prob(xv, w, valid, k, shift, REDUCE, BLOCK_K)
        if REDUCE == "max":
            coef = tl.where(valid & (k[None, :] == arg[:, None]), 1.0, 0.0).to(ACC)
            wder = tl.where(valid & (k[None, :] == arg[:, None]), e / R[:, None], 0.0)
        else:
            coef = tl.where(valid, w * e / R[:, None], 0.0)
            wder = tl.where(valid, e / R[:, None], 0.0)
            if REDUCE == "mean":
                wder = tl.where(valid, wder - 1.0 / wsum[:, None], 0.0)
    else:
        v = _pre_value(xv, row_max, log_sum, PRE)
        L, wsum, arg = _group_value(v, w, valid, k, REDUCE, BLOCK_K)
        coef = _value_coefficient(w, wsum, arg, k, valid, REDUCE)
        wder = _value_weight_derivative(v, L, wsum, arg, k, valid, REDUCE)
    L = tl.where(t < T, L, NEG_INF)
    return L, coef, wder


@triton.jit
def _mapped_logits(x_row, index_ptr, weight_ptr, t0, S, T, K, topk, shift, row_max, log_sum, REDUCE: tl.constexpr,
                   PRE: tl.constexpr, HAS_W: tl.constexpr, SELECT_TOP: tl.constexpr, BLOCK_T: tl.constexpr,
                   BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """_mapped_logits_of the tile of targets t0 .. t0+BLOCK_T, gathered from the row."""
    t, k, flat, inb, valid, xv, w = _tile_top(x_row, index_ptr, weight_ptr, t0, S, T, K, topk, HAS_W, SELECT_TOP,
                                              BLOCK_T, BLOCK_K, ACC)
    L, coef, wder = _mapped_logits_of(t, k, valid, xv, w, T, shift, row_max, log_sum, REDUCE, PRE, BLOCK_K, ACC)
    return t, flat, inb, L, coef, wder


@triton.jit
def _shift_step(best, xv, valid):
    """The largest finite valid mapped logit of each target so far."""
    finite = valid & (xv < float("inf"))
    return tl.maximum(best, tl.max(tl.where(finite, xv, NEG_INF), 1))


@triton.jit
def _shift_of(best):
    """The row's shift: the largest finite mapped logit (0 when there is none)."""
    shift = tl.max(best, 0)
    return tl.where(shift == NEG_INF, 0.0, shift)


@triton.jit
def _lse_step(run_max, run_sum, sum_L, L_y, L, t, T, y):
    """One tile of the online log-sum-exp of L over the targets, with sum_t L_t and L_y."""
    new_max = tl.maximum(run_max, tl.max(L, 0))
    safe = tl.where(new_max == NEG_INF, 0.0, new_max)
    run_sum = run_sum * tl.exp(run_max - safe) + tl.sum(tl.exp(L - safe), 0)
    sum_L += tl.sum(tl.where(t < T, L, 0.0), 0)
    L_y += tl.sum(tl.where(t == y, L, 0.0), 0)
    return new_max, run_sum, sum_L, L_y


@triton.jit
def _ce_terms(a_ptr, n, T, K, t, y, flat, inb, L, coef, wder, lse_L, scale, eps, num_targets, D,
              WEIGHT_GRAD: tl.constexpr, ACC: tl.constexpr):
    """A tile's dL_t = scale (softmax(L)_t - (1 - eps) [t == y] - eps / T) stored as a[n, t, k] =
    dL_t coef_tk (D += their sum) or, for the weight-gradient pass, dL_t wder_tk. Returns D."""
    onehot = tl.where(t == y, 1.0, 0.0).to(ACC) * (1.0 - eps)
    dL = scale * (tl.exp(L - lse_L) - onehot - eps / num_targets)
    dL = tl.where(t < T, dL, 0.0)
    if WEIGHT_GRAD:
        tl.store(a_ptr + n * T * K + flat, dL[:, None] * wder, mask=inb)
    else:
        a = dL[:, None] * coef
        tl.store(a_ptr + n * T * K + flat, a, mask=inb)
        D += tl.sum(tl.sum(a, 1), 0)
    return D


@triton.jit
def label_map_forward_kernel(x_ptr, index_ptr, weight_ptr, out_ptr, stats_ptr, S, T, K, topk,
                             REDUCE: tl.constexpr, PRE: tl.constexpr, HAS_W: tl.constexpr, SELECT_TOP: tl.constexpr,
                             CAPTURE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
                             BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    """One row: out[n, t] = reduce_k w v[index[t, k]]; stats[n] = (max, log_sum) when PRE != "none".
    CAPTURE (PRE != "none", every target in one tile: T <= BLOCK_T): the mapped logits are taken during
    the row pass (_row_norm_capture), so that nothing reads the row after it; without it each target
    tile gathers them from the row after the pass (from DRAM once the row has left L2)."""
    n = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + n * S
    row_max = 0.0
    log_sum = 0.0
    if CAPTURE:
        t, k, flat, inb, src, valid = _tile_index(index_ptr, 0, S, T, K, BLOCK_T, BLOCK_K)
        at = _capture_sources(src, valid)
        row_max, log_sum, xv = _row_norm_capture(x_row, S, at, BLOCK_S, ACC)
        valid = at >= 0
        tl.store(stats_ptr + 2 * n, row_max)
        tl.store(stats_ptr + 2 * n + 1, log_sum)
        w = _tile_weights(weight_ptr, flat, valid, HAS_W, ACC)
        valid, w = _select_top(xv, valid, w, k, topk, SELECT_TOP)
        out, wsum, arg = _group_value(_pre_value(xv, row_max, log_sum, PRE), w, valid, k, REDUCE, BLOCK_K)
        tl.store(out_ptr + n * T + t, out.to(out_ptr.dtype.element_ty), mask=t < T)
    else:
        if PRE != "none":
            row_max, log_sum = _row_norm(x_row, S, BLOCK_S, ACC)
            tl.store(stats_ptr + 2 * n, row_max)
            tl.store(stats_ptr + 2 * n + 1, log_sum)
        for t0 in range(0, T, BLOCK_T):
            t, k, flat, inb, valid, xv, w = _tile_top(x_row, index_ptr, weight_ptr, t0, S, T, K, topk, HAS_W,
                                                      SELECT_TOP, BLOCK_T, BLOCK_K, ACC)
            out, wsum, arg = _group_value(_pre_value(xv, row_max, log_sum, PRE), w, valid, k, REDUCE, BLOCK_K)
            tl.store(out_ptr + n * T + t, out.to(out_ptr.dtype.element_ty), mask=t < T)


@triton.jit
def label_map_coefficients_kernel(grad_out_ptr, x_ptr, index_ptr, weight_ptr, stats_ptr, a_ptr, gw_ptr, dense_ptr, S,
                                  T, K, topk, REDUCE: tl.constexpr, PRE: tl.constexpr, HAS_W: tl.constexpr,
                                  SELECT_TOP: tl.constexpr, WEIGHT_GRAD: tl.constexpr, BLOCK_T: tl.constexpr,
                                  BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """One row of label_map's backward: a[n, t, k] = g_t * c_tk (* p_{s_k} for softmax), the
    per-row weight-gradient terms gw[n, t, k] = g_t * d out_t / d w_k, and for PRE != "none" the
    gradient writer's row constants dense[n] = (max, log_sum, D = sum_{t,k} a[n, t, k])."""
    n = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + n * S
    row_max = 0.0
    log_sum = 0.0
    if PRE != "none":
        row_max = tl.load(stats_ptr + 2 * n)
        log_sum = tl.load(stats_ptr + 2 * n + 1)
    D = tl.zeros([1], ACC)
    for t0 in range(0, T, BLOCK_T):
        t, k, flat, inb, valid, xv, w = _tile_top(x_row, index_ptr, weight_ptr, t0, S, T, K, topk, HAS_W, SELECT_TOP,
                                                  BLOCK_T, BLOCK_K, ACC)
        v = _pre_value(xv, row_max, log_sum, PRE)
        out, wsum, arg = _group_value(v, w, valid, k, REDUCE, BLOCK_K)
        g = tl.load(grad_out_ptr + n * T + t, mask=t < T, other=0.0).to(ACC)
        a = g[:, None] * _value_coefficient(w, wsum, arg, k, valid, REDUCE)
        if PRE == "softmax":
            a = a * v
        tl.store(a_ptr + n * T * K + flat, a, mask=inb)
        if PRE != "none":
            D += tl.sum(tl.sum(tl.where(inb, a, 0.0), 1), 0)
        if WEIGHT_GRAD:
            gw = g[:, None] * _value_weight_derivative(v, out, wsum, arg, k, valid, REDUCE)
            tl.store(gw_ptr + n * T * K + flat, gw, mask=inb)
    if PRE != "none":
        _store_dense(dense_ptr, n, row_max, log_sum, D, ACC)


@triton.jit
def _store_dense(dense_ptr, n, row_max, log_sum, D, ACC: tl.constexpr):
    """dense[n] = (max, log_sum, D): the row constants of gradient_row_kernel's dense term."""
    one = tl.arange(0, 1)
    tl.store(dense_ptr + 3 * n + one, tl.zeros([1], ACC) + row_max)
    tl.store(dense_ptr + 3 * n + 1 + one, tl.zeros([1], ACC) + log_sum)
    tl.store(dense_ptr + 3 * n + 2 + one, D)


@triton.jit
def _ce_row_norm(x_row, stats_ptr, n, S, WEIGHT_GRAD: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    """mapped CE's row normaliser (max, log_sum): from the forward's dense rows in the weight-gradient
    pass, else by _row_norm."""
    if WEIGHT_GRAD:
        row_max = tl.load(stats_ptr + 3 * n)
        log_sum = tl.load(stats_ptr + 3 * n + 1)
    else:
        row_max, log_sum = _row_norm(x_row, S, BLOCK_S, ACC)
    return row_max, log_sum


@triton.jit
def mapped_ce_kernel(x_ptr, target_ptr, index_ptr, weight_ptr, scale_ptr, stats_ptr, loss_ptr, a_ptr, dense_ptr,
                     S, T, K, ignore_index, topk, EPS: tl.constexpr, REDUCE: tl.constexpr, PRE: tl.constexpr,
                     HAS_W: tl.constexpr, SELECT_TOP: tl.constexpr, NEED_LSE: tl.constexpr, WEIGHT_GRAD: tl.constexpr,
                     ONE_TILE: tl.constexpr, CAPTURE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
                     BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    """One row of mapped_cross_entropy. Forward (WEIGHT_GRAD=False): loss[n], the unit-gradient
    coefficients a[n, t, k] and dense[n] = (max, log_sum, D). Weight-gradient pass (True): the
    per-row terms a[n, t, k] = scale[n] * d loss_n / d w_tk, with the row normaliser from stats.
    EPS (label smoothing) is a compile-time constant so that float64 rows use it unrounded.
    ONE_TILE (T <= BLOCK_T): the index and the mapped logits are loaded once and kept in registers for
    the shift, the log-sum-exp over the targets and the coefficients (otherwise three passes over the
    target tiles, each loading them again); CAPTURE (ONE_TILE, NEED_LSE, forward, S > BLOCK_S): the
    mapped logits are taken during the row pass (_row_norm_capture)."""
    n = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + n * S
    y = tl.load(target_ptr + n)
    eps = tl.full([1], EPS, ACC)  # in the accumulation dtype (a bare constant would be float32)
    num_targets = tl.full([1], T, ACC)
    row_max = 0.0
    log_sum = 0.0
    shift = 0.0
    run_max = tl.full([1], NEG_INF, ACC)
    run_sum = tl.zeros([1], ACC)
    sum_L = tl.zeros([1], ACC)
    L_y = tl.zeros([1], ACC)
    if ONE_TILE:
        t, k, flat, inb, src, valid = _tile_index(index_ptr, 0, S, T, K, BLOCK_T, BLOCK_K)
        if CAPTURE:
            at = _capture_sources(src, valid)
            row_max, log_sum, xv = _row_norm_capture(x_row, S, at, BLOCK_S, ACC)
            valid = at >= 0
        else:
            if NEED_LSE:
                row_max, log_sum = _ce_row_norm(x_row, stats_ptr, n, S, WEIGHT_GRAD, BLOCK_S, ACC)
            xv = _gather(x_row, src, valid, ACC)
        w = _tile_weights(weight_ptr, flat, valid, HAS_W, ACC)
        if PRE == "softmax":  # the largest finite mapped logit keeps L small (the loss ignores the shift)
            shift = _shift_of(_shift_step(tl.full([BLOCK_T], NEG_INF, ACC), xv, valid))
        valid, w = _select_top(xv, valid, w, k, topk, SELECT_TOP)
        L, coef, wder = _mapped_logits_of(t, k, valid, xv, w, T, shift, row_max, log_sum, REDUCE, PRE, BLOCK_K, ACC)
        run_max, run_sum, sum_L, L_y = _lse_step(run_max, run_sum, sum_L, L_y, L, t, T, y)
    else:
        if NEED_LSE:
            row_max, log_sum = _ce_row_norm(x_row, stats_ptr, n, S, WEIGHT_GRAD, BLOCK_S, ACC)
        if PRE == "softmax":
            best = tl.full([BLOCK_T], NEG_INF, ACC)
            for t0 in range(0, T, BLOCK_T):
                t, k, flat, inb, valid, xv, w = _tile(x_row, index_ptr, weight_ptr, t0, S, T, K, HAS_W, BLOCK_T,
                                                      BLOCK_K, ACC)
                best = _shift_step(best, xv, valid)
            shift = _shift_of(best)
        for t0 in range(0, T, BLOCK_T):
            t, flat, inb, L, coef, wder = _mapped_logits(x_row, index_ptr, weight_ptr, t0, S, T, K, topk, shift,
                                                          row_max, log_sum, REDUCE, PRE, HAS_W, SELECT_TOP, BLOCK_T,
                                                          BLOCK_K, ACC)
            run_max, run_sum, sum_L, L_y = _lse_step(run_max, run_sum, sum_L, L_y, L, t, T, y)
    lse_L = tl.where(run_max == NEG_INF, NEG_INF, run_max + tl.log(run_sum))
    ignored = y == ignore_index
    scale = 1.0
    if WEIGHT_GRAD:
        scale = tl.load(scale_ptr + n).to(ACC)
    scale = tl.where(ignored, 0.0, scale)
    D = tl.zeros([1], ACC)
    if ONE_TILE:
        D = _ce_terms(a_ptr, n, T, K, t, y, flat, inb, L, coef, wder, lse_L, scale, eps, num_targets, D, WEIGHT_GRAD,
                      ACC)
    else:
        for t0 in range(0, T, BLOCK_T):
            t, flat, inb, L, coef, wder = _mapped_logits(x_row, index_ptr, weight_ptr, t0, S, T, K, topk, shift,
                                                          row_max, log_sum, REDUCE, PRE, HAS_W, SELECT_TOP, BLOCK_T,
                                                          BLOCK_K, ACC)
            D = _ce_terms(a_ptr, n, T, K, t, y, flat, inb, L, coef, wder, lse_L, scale, eps, num_targets, D,
                          WEIGHT_GRAD, ACC)
    if not WEIGHT_GRAD:
        nll = lse_L - L_y
        if EPS == 0.0:
            loss = nll
        else:
            loss = (1.0 - eps) * nll + eps * (lse_L - sum_L / num_targets)
        loss = tl.where(ignored, 0.0, loss)
        one = tl.arange(0, 1)
        tl.store(loss_ptr + n + one, loss)
        if NEED_LSE:
            _store_dense(dense_ptr, n, row_max, log_sum, D, ACC)


@triton.jit
def gradient_row_kernel(x_ptr, dense_ptr, a_ptr, scale_ptr, has_ptr, ptr_ptr, ent_ptr, block_max_ptr, grad_ptr, S, TK,
                        DENSE: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    """One block j = b BLOCK_S .. of gradient row n, written once:

        grad[n, j] = scale[n] * (-D_n softmax(x[n])_j [DENSE] + sum_{e in ent[ptr[j] : ptr[j + 1]]} a[n, e])

(the entries added one at a time to the dense value)
    with (max, log_sum, D) = dense[n] and scale 1 without HAS_SCALE. The sources' entries come from
    the cached map of triton_source_map.py (ascending e: the (t, k) order of the CPU and CUDA
    kernels); the entry loop runs block_max[b] trips over the block's lanes, each lane loading only
    while it has entries left, and is skipped by blocks whose sources have none. No atomics, no
    read-modify-write: deterministic."""
    n = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1)
    j = b * BLOCK_S + tl.arange(0, BLOCK_S)
    inb = j < S
    if DENSE:
        row_max = tl.load(dense_ptr + 3 * n)
        log_sum = tl.load(dense_ptr + 3 * n + 1)
        D = tl.load(dense_ptr + 3 * n + 2)
        x = tl.load(x_ptr + n * S + j, mask=inb, other=0.0).to(ACC)
        g = -D * tl.exp((x - row_max) - log_sum)
    else:
        g = tl.zeros([BLOCK_S], ACC)
    trips = tl.load(block_max_ptr + b)
    if trips > 0:
        has = tl.load(has_ptr + j, mask=inb, other=0) != 0
        lo = tl.load(ptr_ptr + j, mask=has, other=0)
        hi = tl.load(ptr_ptr + j + 1, mask=has, other=0)
        for i in range(0, trips):
            live = lo + i < hi
            e = tl.load(ent_ptr + lo + i, mask=live, other=0)
            g += tl.load(a_ptr + n * TK + e, mask=live, other=0.0).to(ACC)
    if HAS_SCALE:
        g = g * tl.load(scale_ptr + n).to(ACC)
    tl.store(grad_ptr + n * S + j, g.to(grad_ptr.dtype.element_ty), mask=inb)
