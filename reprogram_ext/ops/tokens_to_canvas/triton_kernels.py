"""``@triton.jit`` kernels of tokens_to_canvas (the ops that launch them: ``triton_op.py``).

Formula (docs/ops/tokens_to_canvas.md; C++: csrc/tokens_to_canvas/math.h), canvas element (b, c, h, w):
    inside the grid (y = h - oy, x = w - ox): t = cells[b, (y // Ph) * Gw + x // Pw],
        u = patch_weight_c * act(table[t, c, y % Ph, x % Pw]);   outside: u = 0
    v = base_weight_c * base[b?, c?, h, w] + u + m * act(program[b?, c?, h, w]);   v = clamp(v, lo, hi)
    out = (v - mean_c) * inv_std_c   (NORMALIZE)
A token outside [0, V) reads nothing (its load is masked; the front end refuses such tokens).

Work split. Forward: one program per BLOCK positions of one (b, c) plane. Table gradient: one
program per (token, channel), covering the token's whole patch, sums over the token's cells in
the order the launcher sorted them (ascending (b, g)): deterministic, no atomics, and it writes its
row (zeros for an unused token). Program / base gradient: one program per BLOCK positions of one
channel plane, looping over the batch in ascending b. Math in float32 (float64 for float64 tables).
"""
import triton
import triton.language as tl

from ..masked_perturb.triton_kernels import _activate, _activation_derivative, _as_acc


@triton.jit
def _constants(norm_ptr, C, c, ACC: tl.constexpr):
    """(mean_c, inv_std_c, base_weight_c, patch_weight_c) of norm [4, C]."""
    return (tl.load(norm_ptr + c).to(ACC), tl.load(norm_ptr + C + c).to(ACC), tl.load(norm_ptr + 2 * C + c).to(ACC),
            tl.load(norm_ptr + 3 * C + c).to(ACC))


@triton.jit
def _plane_value(ptr, Bt, Ct, b, c, HW, p, valid, ACC: tl.constexpr):
    """t[b?, c?, p] of a [Bt, Ct, H, W] tensor whose batch / channel may broadcast (size 1)."""
    row = (tl.cast(tl.where(Bt == 1, 0, b), tl.int64) * Ct + tl.where(Ct == 1, 0, c)) * HW
    return tl.load(ptr + row + p, mask=valid, other=0).to(ACC)


@triton.jit
def _program_term(program_ptr, mask_ptr, Bp, Cp, Bm, Cm, b, c, HW, p, valid, ACTIVATION: tl.constexpr,
                  ACC: tl.constexpr):
    """(m * act(program), m, act(program)) at p; m = 1 without a mask."""
    a = _activate(_plane_value(program_ptr, Bp, Cp, b, c, HW, p, valid, ACC), ACTIVATION)
    if mask_ptr is None:
        m = tl.full(p.shape, 1.0, ACC)
    else:
        m = _plane_value(mask_ptr, Bm, Cm, b, c, HW, p, valid, ACC)
    return m * a, m, a


@triton.jit
def _patch_value(cells_ptr, table_ptr, b, c, h, w, valid, C, V, G, Ph, Pw, Gh, Gw, oy, ox, ACTIVATION: tl.constexpr,
                 ACC: tl.constexpr):
    """act(table[token of (h, w)'s cell, c, y % Ph, x % Pw]) inside the grid, 0 outside it."""
    y = h - oy
    x = w - ox
    inside = valid & (y >= 0) & (y < Gh * Ph) & (x >= 0) & (x < Gw * Pw)
    y = tl.where(inside, y, 0)
    x = tl.where(inside, x, 0)
    g = (y // Ph) * Gw + x // Pw
    t = tl.load(cells_ptr + tl.cast(b, tl.int64) * G + g, mask=inside, other=0)
    ok = inside & (t >= 0) & (t < V)
    offset = ((t * C + c) * Ph + y % Ph) * Pw + x % Pw
    value = tl.load(table_ptr + offset, mask=ok, other=0).to(ACC)
    return tl.where(ok, _activate(value, ACTIVATION), 0.0)


@triton.jit
def _finish(v, lo, hi, mean, inv_std, HAS_CLAMP: tl.constexpr, NORMALIZE: tl.constexpr):
    if HAS_CLAMP:
        v = tl.where(v < lo, lo, tl.where(v > hi, hi, v))
    if NORMALIZE:
        v = (v - mean) * inv_std
    return v


@triton.jit
def tokens_to_canvas_forward_kernel(
    cells_ptr, table_ptr, program_ptr, mask_ptr, base_ptr, norm_ptr, out_ptr,
    C, V, G, Ph, Pw, Gh, Gw, oy, ox, H, W, Bp, Cp, Bm, Cm, Bb, Cb, clamp_lo, clamp_hi,
    ACTIVATION: tl.constexpr, HAS_CLAMP: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if out_ptr.dtype.element_ty == tl.float64 else tl.float32
    HW = H * W
    blocks = tl.cdiv(HW, BLOCK)
    pid = tl.program_id(0)
    plane = pid // blocks
    b = plane // C
    c = plane % C
    p = (pid % blocks) * BLOCK + tl.arange(0, BLOCK)
    valid = p < HW
    h = p // W
    w = p % W
    mean, inv_std, base_weight, patch_weight = _constants(norm_ptr, C, c, ACC)
    v = tl.zeros((BLOCK,), ACC)
    if base_ptr is not None:
        v = base_weight * _plane_value(base_ptr, Bb, Cb, b, c, HW, p, valid, ACC)
    v += patch_weight * _patch_value(cells_ptr, table_ptr, b, c, h, w, valid, C, V, G, Ph, Pw, Gh, Gw, oy, ox,
                                     ACTIVATION, ACC)
    if program_ptr is not None:
        v += _program_term(program_ptr, mask_ptr, Bp, Cp, Bm, Cm, b, c, HW, p, valid, ACTIVATION, ACC)[0]
    out = _finish(v, _as_acc(clamp_lo, ACC), _as_acc(clamp_hi, ACC), mean, inv_std, HAS_CLAMP, NORMALIZE)
    tl.store(out_ptr + tl.cast(plane, tl.int64) * HW + p, out.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def tokens_to_canvas_table_grad_kernel(
    grad_ptr, cells_ptr, order_ptr, start_ptr, table_ptr, program_ptr, mask_ptr, base_ptr, norm_ptr, grad_table_ptr,
    C, V, G, Ph, Pw, Gh, Gw, oy, ox, H, W, Bp, Cp, Bm, Cm, Bb, Cb, clamp_lo, clamp_hi,
    ACTIVATION: tl.constexpr, HAS_CLAMP: tl.constexpr, NORMALIZE: tl.constexpr, PBLOCK: tl.constexpr,
):
    """grad_table[t, c] = patch_weight_c * inv_std_c * act'(table[t, c]) * sum over t's cells (in order) of
    grad_out where the clamp passed v."""
    ACC: tl.constexpr = tl.float64 if grad_table_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid = tl.program_id(0)
    t = pid // C
    c = pid % C
    q = tl.arange(0, PBLOCK)
    inpatch = q < Ph * Pw
    qy = q // Pw
    qx = q % Pw
    mean, inv_std, base_weight, patch_weight = _constants(norm_ptr, C, c, ACC)
    row = (tl.cast(t, tl.int64) * C + c) * (Ph * Pw)
    a = _activate(tl.load(table_ptr + row + q, mask=inpatch, other=0).to(ACC), ACTIVATION)
    lo = _as_acc(clamp_lo, ACC)
    hi = _as_acc(clamp_hi, ACC)
    HW = H * W
    acc = tl.zeros((PBLOCK,), ACC)
    first = tl.load(start_ptr + t)
    last = tl.load(start_ptr + t + 1)
    for i in range(first, last):
        e = tl.load(order_ptr + i)
        b = e // G
        g = e % G
        h = oy + (g // Gw) * Ph + qy
        w = ox + (g % Gw) * Pw + qx
        p = h * W + w
        gv = tl.load(grad_ptr + (b * C + c) * HW + p, mask=inpatch, other=0).to(ACC)
        if HAS_CLAMP:
            v = patch_weight * a
            if base_ptr is not None:
                v = base_weight * _plane_value(base_ptr, Bb, Cb, b, c, HW, p, inpatch, ACC) + v
            if program_ptr is not None:
                v += _program_term(program_ptr, mask_ptr, Bp, Cp, Bm, Cm, b, c, HW, p, inpatch, ACTIVATION, ACC)[0]
            gv = tl.where((v >= lo) & (v <= hi), gv, 0.0)
        acc += gv
    if NORMALIZE:
        scale = patch_weight * inv_std
    else:
        scale = patch_weight
    out = scale * _activation_derivative(a, ACTIVATION) * acc
    tl.store(grad_table_ptr + row + q, out.to(grad_table_ptr.dtype.element_ty), mask=inpatch)


@triton.jit
def tokens_to_canvas_canvas_grad_kernel(
    grad_ptr, cells_ptr, table_ptr, program_ptr, mask_ptr, base_ptr, norm_ptr, grad_program_ptr, grad_base_ptr,
    B, C, V, G, Ph, Pw, Gh, Gw, oy, ox, H, W, Bp, Cp, Bm, Cm, Bb, Cb, clamp_lo, clamp_hi,
    ACTIVATION: tl.constexpr, HAS_CLAMP: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    """grad_program [Bp, C, H, W] = m * act'(program) * gv and grad_base [Bb, C, H, W] = base_weight_c * gv,
    gv = grad_out * inv_std_c where the clamp passed v; summed over b (ascending) when batch 1."""
    ACC: tl.constexpr = tl.float64 if table_ptr.dtype.element_ty == tl.float64 else tl.float32
    HW = H * W
    blocks = tl.cdiv(HW, BLOCK)
    pid = tl.program_id(0)
    c = pid // blocks
    p = (pid % blocks) * BLOCK + tl.arange(0, BLOCK)
    valid = p < HW
    h = p // W
    w = p % W
    mean, inv_std, base_weight, patch_weight = _constants(norm_ptr, C, c, ACC)
    lo = _as_acc(clamp_lo, ACC)
    hi = _as_acc(clamp_hi, ACC)
    sum_p = tl.zeros((BLOCK,), ACC)
    sum_b = tl.zeros((BLOCK,), ACC)
    for b in range(B):
        gv = tl.load(grad_ptr + tl.cast(b * C + c, tl.int64) * HW + p, mask=valid, other=0).to(ACC)
        if NORMALIZE:
            gv = gv * inv_std
        zero = tl.zeros((BLOCK,), ACC)
        term, m, a = zero, zero, zero
        if program_ptr is not None:
            term, m, a = _program_term(program_ptr, mask_ptr, Bp, Cp, Bm, Cm, b, c, HW, p, valid, ACTIVATION, ACC)
        if HAS_CLAMP:
            v = patch_weight * _patch_value(cells_ptr, table_ptr, b, c, h, w, valid, C, V, G, Ph, Pw, Gh, Gw, oy, ox,
                                            ACTIVATION, ACC)
            if base_ptr is not None:
                v = base_weight * _plane_value(base_ptr, Bb, Cb, b, c, HW, p, valid, ACC) + v
            v += term
            gv = tl.where((v >= lo) & (v <= hi), gv, 0.0)
        if grad_program_ptr is not None:
            gp = gv * m * _activation_derivative(a, ACTIVATION)
            if Bp == 1:
                sum_p += gp
            else:
                tl.store(grad_program_ptr + tl.cast(b * C + c, tl.int64) * HW + p, gp, mask=valid)
        if grad_base_ptr is not None:
            gb = base_weight * gv
            if Bb == 1:
                sum_b += gb
            else:
                tl.store(grad_base_ptr + tl.cast(b * C + c, tl.int64) * HW + p, gb, mask=valid)
    if grad_program_ptr is not None:
        if Bp == 1:
            tl.store(grad_program_ptr + c * HW + p, sum_p, mask=valid)
    if grad_base_ptr is not None:
        if Bb == 1:
            tl.store(grad_base_ptr + c * HW + p, sum_b, mask=valid)
