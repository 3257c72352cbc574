"""``@triton.jit`` kernels of masked_perturb (the ops that launch them: ``triton_op.py``).

Formula (docs/ops/masked_perturb.md; C++: csrc/masked_perturb/math.h), for canvas element (b, c, h, w) of [B, C, H, W]:
    u   = sum over copies k covering (h, w) of X[b, c, h - oy_k, w - ox_k],
          X = resize(x / (255 if uint8)) as F.interpolate(align_corners=False), channel 0 if Cx = 1
    u   = (u - mean_c) * inv_std_c                  where covered        (normalize_before)
    a   = act(delta[b?, c?, h, w]);   m = mask[b?, c?, h // s, w // s]   (1 without a mask)
    v   = u + m*a  (add)   or   (1 - m)*u + m*a  (replace);   v = min(max(v, lo), hi)   (clamp)
    out = (v - mean_c) * inv_std_c                                       (normalize_after)
Backward, with gv = d out / d v (0 where the clamp clipped): d a = gv*m (times act'), d m = gv*(a - u*replace),
d u = gv*(1 - m*replace)*inv_std_before where covered.

Work split: one program owns BLOCK consecutive positions of one channel plane (h, w flattened) and
loops over a chunk of the batch; the activated delta, the mask and the placement index math of
one copy are computed once per program and reused for every sample of the chunk. In the backward
the batch sum of a position runs in sample order inside its chunk; the host sums the chunk rows.
Prompt bank (BANK: delta [V, Cd, H, W]): the programs are also split over the V bank entries (in the
forward the entry is the fastest grid coordinate, next to the block, so one block of x serves all V
entries while it is in L2); program v's outputs are rows v * B + b, its delta-gradient partials rows v * chunks + j, and its mask /
input gradient rows (v * B + b, or v * chunks + j for a shared mask), which the host sums over V.
Math, normalisation and the gradient outputs in float32 (float64 for float64 tensors). Options arrive as their names (str constexprs: RESIZE, ACTIVATION). Optional tensors passed as None (mask,
offsets, unneeded gradients) specialise the kernel: their code is not generated.
"""
import triton
import triton.language as tl


# ----------------------------------------------------------------------------------------------
# Per-element helpers (the Triton twins of masked_perturb_math.h)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _div_rn(a, b):
    """a / b rounded to nearest (Triton's ``/`` on float32 is an approximate division on GPUs)."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _as_acc(value, ACC: tl.constexpr):
    """A float64 kernel argument as ACC (a Python float under the interpreter: kept exact for float64)."""
    return (value + tl.zeros((), tl.float64)).to(ACC)


@triton.jit
def _tanh(d):
    """tanh(d): odd Taylor series to d^17 for |d| < 1/8 (error < 1e-19 relative), else
    sign(d) (1 - e) / (1 + e) with e = exp(-2|d|) (cancellation error <= eps / (2|d|) <= 4 eps)."""
    ad = tl.abs(d)
    e = tl.exp(-2.0 * ad)
    far = (1.0 - e) / (1.0 + e)
    far = tl.where(d < 0, -far, far)
    z = d * d
    series = -929569.0 / 638512875.0 + z * (6404582.0 / 10854718875.0)
    series = 21844.0 / 6081075.0 + z * series
    series = -1382.0 / 155925.0 + z * series
    series = 62.0 / 2835.0 + z * series
    series = -17.0 / 315.0 + z * series
    series = 2.0 / 15.0 + z * series
    series = -1.0 / 3.0 + z * series
    near = d + d * (z * series)
    return tl.where(ad < 0.125, near, far)


@triton.jit
def _activate(d, ACTIVATION: tl.constexpr):
    """act(d) for the activation named ACTIVATION (options.ACTIVATIONS): tanh, sigmoid = 1 / (1 + exp(-d)),
    relu = max(d, 0) (NaN passes through), none = d."""
    if ACTIVATION == "tanh":
        return _tanh(d)
    elif ACTIVATION == "sigmoid":
        return 1.0 / (1.0 + tl.exp(-d))
    elif ACTIVATION == "relu":
        return tl.where(d < 0, 0.0, d)
    else:
        return d


@triton.jit
def _activation_derivative(a, ACTIVATION: tl.constexpr):
    """d act / d delta from the activated value a: 1 - a^2 (tanh), a (1 - a) (sigmoid), [a > 0] (relu), 1 (none)."""
    if ACTIVATION == "tanh":
        return 1.0 - a * a
    elif ACTIVATION == "sigmoid":
        return a * (1.0 - a)
    elif ACTIVATION == "relu":
        return tl.where(a > 0, 1.0, 0.0).to(a.dtype)
    else:
        return tl.full(a.shape, 1.0, a.dtype)


@triton.jit
def _load_input(ptrs, inside, ACC: tl.constexpr):
    """x at ptrs as ACC (uint8 read as value / 255); 0 where not inside."""
    v = tl.load(ptrs, mask=inside, other=0).to(ACC)
    if ptrs.dtype.element_ty == tl.uint8:
        v = _div_rn(v, 255.0)
    return v


@triton.jit
def _nearest_index(dst, in_size, scale):
    """F.interpolate(mode="nearest") source index min(floor(dst * scale), in - 1), scale = float32(in / out)
    computed by the launcher. (PyTorch's shortcuts for out == in and out == 2 in give the same values:
    the products are exact.)"""
    src = tl.floor(dst.to(tl.float32) * _as_acc(scale, tl.float32)).to(tl.int32)
    return tl.minimum(src, in_size - 1)


@triton.jit
def _linear_taps(dst, in_size, scale, ACC: tl.constexpr):
    """F.interpolate(mode="bilinear", align_corners=False) along one axis, scale = in / out rounded to ACC
    by the launcher: src = max((dst + 0.5) * scale - 0.5, 0); i0 = floor(src); i1 = i0 + (i0 < in - 1);
    l1 = src - i0."""
    src = _as_acc(scale, ACC) * (dst.to(ACC) + 0.5) - 0.5
    src = tl.where(src < 0, 0.0, src)
    i0 = src.to(tl.int32)
    i1 = i0 + (i0 < in_size - 1).to(tl.int32)
    return i0, i1, src - i0.to(ACC)


@triton.jit
def _copy_taps(h, w, valid, oy, ox, Hin, Win, Hr, Wr, scale_h, scale_w, sxh, sxw, RESIZE: tl.constexpr, ACC: tl.constexpr):
    """Where the copy placed at (oy, ox) reads x for canvas positions (h, w), independent of the sample:
    (inside, offsets of the 4 bilinear taps in an x plane, row weight l1, column weight l1).
    Without resize / with nearest only the first offset is used."""
    y = h - oy
    xi = w - ox
    inside = valid & (y >= 0) & (y < Hr) & (xi >= 0) & (xi < Wr)
    if RESIZE == "bilinear":
        y0, y1, ly = _linear_taps(y, Hin, scale_h, ACC)
        x0, x1, lx = _linear_taps(xi, Win, scale_w, ACC)
        return (inside, y0 * sxh + x0 * sxw, y0 * sxh + x1 * sxw, y1 * sxh + x0 * sxw, y1 * sxh + x1 * sxw, ly, lx)
    else:
        if RESIZE == "nearest":
            y = _nearest_index(y, Hin, scale_h)
            xi = _nearest_index(xi, Win, scale_w)
        o = y * sxh + xi * sxw
        zero = tl.zeros(h.shape, ACC)
        return (inside, o, o, o, o, zero, zero)


@triton.jit
def _sample(x_bc, taps, RESIZE: tl.constexpr, ACC: tl.constexpr):
    """The resized input at the taps of _copy_taps, in the x plane starting at x_bc (0 outside the copy)."""
    inside, o00, o01, o10, o11, ly, lx = taps
    v00 = _load_input(x_bc + o00, inside, ACC)
    if RESIZE == "bilinear":
        v01 = _load_input(x_bc + o01, inside, ACC)
        v10 = _load_input(x_bc + o10, inside, ACC)
        v11 = _load_input(x_bc + o11, inside, ACC)
        return (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)
    else:
        return v00


@triton.jit
def _placed_input(x_bc, taps, p, h, w, valid, offsets_ptr, num_copies, Hin, Win, Hr, Wr, scale_h, scale_w, sxh, sxw,
                  ONE_COPY: tl.constexpr, X_FLAT: tl.constexpr, RESIZE: tl.constexpr, ACC: tl.constexpr):
    """(u, covered): the sum of the copies covering each position, and whether any does.
    X_FLAT: one copy at (0, 0), no resize, the x plane is the canvas plane (contiguous, vector loads);
    ONE_COPY: taps precomputed by the caller; else the copies' (oy, ox) are read from offsets_ptr."""
    if X_FLAT:
        return _load_input(x_bc + p, valid, ACC), valid
    elif ONE_COPY:
        return _sample(x_bc, taps, RESIZE, ACC), taps[0]
    else:
        u = tl.zeros(h.shape, ACC)
        covered = h < 0  # all False
        for k in range(num_copies):
            oy = tl.load(offsets_ptr + 2 * k)
            ox = tl.load(offsets_ptr + 2 * k + 1)
            copy_taps = _copy_taps(h, w, valid, oy, ox, Hin, Win, Hr, Wr, scale_h, scale_w, sxh, sxw, RESIZE, ACC)
            u += _sample(x_bc, copy_taps, RESIZE, ACC)
            covered = covered | copy_taps[0]
        return u, covered


@triton.jit
def _load_plane(base_ptr, p, h, w, valid, sh, sw, scale, FLAT: tl.constexpr, ACC: tl.constexpr):
    """base[(h // scale) * sh + (w // scale) * sw] as ACC; FLAT: the plane is the contiguous canvas plane (base[p])."""
    if FLAT:
        ptrs = base_ptr + p
    else:
        ptrs = base_ptr + ((h // scale) * sh + (w // scale) * sw)
    return tl.load(ptrs, mask=valid, other=0).to(ACC)


@triton.jit
def _mask_value(mask_ptr, b, c, p, h, w, valid, smb, smc, smh, smw, mask_scale,
                MASK_FLAT: tl.constexpr, ACC: tl.constexpr):
    """m = mask[b?, c?, h // s, w // s] (strides 0 on broadcast dims), or 1 without a mask."""
    if mask_ptr is None:
        return tl.full(h.shape, 1.0, ACC)
    else:
        base = mask_ptr + (tl.cast(b, tl.int64) * smb + c.to(tl.int64) * smc)
        return _load_plane(base, p, h, w, valid, smh, smw, mask_scale, MASK_FLAT, ACC)


@triton.jit
def _grouped_mask_value(mask_ptr, t, b, c, H, W, smb, smc, smh, smw, mask_scale, BLOCK: tl.constexpr,
                        GROUP: tl.constexpr, ACC: tl.constexpr):
    """_mask_value for the forward's block t when each aligned group of GROUP consecutive positions lies in one
    mask cell (the launcher's MASK_GROUP: W and mask_scale multiples of GROUP, so a group never crosses a row
    or a cell edge, and lies wholly inside or outside the plane): one load per group, broadcast to its
    positions. GROUP = a thread's positions, so the broadcast stays in registers."""
    base = mask_ptr + (tl.cast(b, tl.int64) * smb + c.to(tl.int64) * smc)
    first = t * BLOCK + GROUP * tl.arange(0, BLOCK // GROUP)
    h = first // W
    w = first - h * W
    cell = tl.load(base + ((h // mask_scale) * smh + (w // mask_scale) * smw), mask=first < H * W, other=0).to(ACC)
    return tl.reshape(tl.broadcast_to(cell[:, None], (BLOCK // GROUP, GROUP)), (BLOCK,))


@triton.jit
def _delta_value(delta_ptr, b, c, p, h, w, valid, sdb, sdc, sdh, sdw, DELTA_FLAT: tl.constexpr, ACC: tl.constexpr):
    """delta[b?, c?, h, w] (strides 0 on broadcast dims) as ACC."""
    base = delta_ptr + (tl.cast(b, tl.int64) * sdb + c.to(tl.int64) * sdc)
    return _load_plane(base, p, h, w, valid, sdh, sdw, 1, DELTA_FLAT, ACC)


@triton.jit
def _refresh_operands(a, m, delta_ptr, mask_ptr, b, c, p, h, w, valid, sdb, sdc, sdh, sdw, smb, smc, smh, smw,
                      mask_scale, LOAD_DELTA: tl.constexpr, LOAD_MASK: tl.constexpr, ACTIVATION: tl.constexpr,
                      DELTA_FLAT: tl.constexpr, MASK_FLAT: tl.constexpr, ACC: tl.constexpr):
    """(a, m) of sample b: a = act(delta[b?, c?, h, w]) when LOAD_DELTA, m = mask value when LOAD_MASK;
    the values passed in otherwise (a shared delta / mask is loaded once per program, before the batch loop)."""
    if LOAD_DELTA:
        a = _activate(_delta_value(delta_ptr, b, c, p, h, w, valid, sdb, sdc, sdh, sdw, DELTA_FLAT, ACC), ACTIVATION)
    if LOAD_MASK:
        m = _mask_value(mask_ptr, b, c, p, h, w, valid, smb, smc, smh, smw, mask_scale, MASK_FLAT, ACC)
    return a, m


@triton.jit
def _channel_constants(norm_ptr, C, c, NORM_BEFORE: tl.constexpr, NORM_AFTER: tl.constexpr, ACC: tl.constexpr):
    """(mean_c, inv_std_c) for normalize_before, then for normalize_after; (0, 1) when off."""
    mean = tl.load(norm_ptr + c).to(ACC)
    inv_std = tl.load(norm_ptr + C + c).to(ACC)
    zero = tl.zeros((), ACC)
    one = zero + 1.0
    if NORM_BEFORE:
        before = (mean, inv_std)
    else:
        before = (zero, one)
    if NORM_AFTER:
        after = (mean, inv_std)
    else:
        after = (zero, one)
    return before[0], before[1], after[0], after[1]


@triton.jit
def _blend_clamp(u, a, m, lo, hi, REPLACE: tl.constexpr, HAS_CLAMP: tl.constexpr):
    """v = u + m a (add) or (1 - m) u + m a (replace), then clamped to [lo, hi] (NaN passes through)."""
    if REPLACE:
        v = (1.0 - m) * u + m * a
    else:
        v = u + m * a
    if HAS_CLAMP:
        v = tl.where(v < lo, lo, v)
        v = tl.where(v > hi, hi, v)
    return v


@triton.jit
def _normalized_input(u, covered, before_mean, before_inv, NORM_BEFORE: tl.constexpr):
    """u normalised where a copy covers the position (normalize_before)."""
    if NORM_BEFORE:
        return tl.where(covered, (u - before_mean) * before_inv, u)
    else:
        return u


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _bank_entry(row, chunks, BANK: tl.constexpr):
    """(chunk j, bank entry v) of chunk row v * chunks + j of a bank; (row, 0) without a bank."""
    if BANK:
        v = row // chunks
        return row - v * chunks, v
    else:
        return row, 0


@triton.jit
def _block_positions(t, H, W, BLOCK: tl.constexpr):
    """(p, valid, h, w) of block t: positions p = t * BLOCK + [0, BLOCK) = h * W + w of the H x W plane.
    (An unsigned h = p // W saves the sign fix-ups of 4 divisions but costs ILM-VP's batch loop 24
    instructions of 64-bit x addressing: signed.)"""
    p = t * BLOCK + tl.arange(0, BLOCK)
    valid = p < H * W
    h = p // W
    w = p - h * W
    return p, valid, h, w


@triton.jit
def _program_coordinates(C, H, W, B, chunks, BLOCK: tl.constexpr, BANK: tl.constexpr):
    """Program -> (channel c, chunk j, samples [b0, b1), positions p = h*W + w of its block, valid,
    bank entry v). Programs are ordered (bank entry, chunk, channel, block) with the block fastest;
    v = 0 without a bank."""
    tiles = tl.cdiv(H * W, BLOCK)
    pid = tl.program_id(0)
    t = pid % tiles
    c = (pid // tiles) % C
    j, v = _bank_entry(pid // (tiles * C), chunks, BANK)
    p, valid, h, w = _block_positions(t, H, W, BLOCK)
    b0 = (B * j) // chunks  # int32: the launcher keeps B * chunks < 2^31
    b1 = (B * (j + 1)) // chunks
    return c, j, b0, b1, p, h, w, valid, v


@triton.jit
def _block_and_entry(pid0, V, BANK: tl.constexpr):
    """(block t, bank entry v) of the forward's axis-0 coordinate pid0 = t * V + v of a bank (the entry
    fastest: the V programs that read one block of x run side by side, so x comes from DRAM once and from L2
    for the other V - 1 entries); (pid0, 0) without a bank."""
    if BANK:
        t = pid0 // V
        return t, pid0 - t * V
    else:
        return pid0, 0


@triton.jit
def _forward_coordinates(H, W, B, V, samples_per_chunk, BLOCK: tl.constexpr, BANK: tl.constexpr):
    """_program_coordinates of the forward's 3-D grid (blocks of H*W x bank entries, channels, chunks): the
    program's channel and chunk are its grid coordinates, its block and bank entry one division by V
    (_block_and_entry; none without a bank). Chunk j holds samples [j * samples_per_chunk,
    min((j + 1) * samples_per_chunk, B)) (int32: the launcher keeps B + samples_per_chunk < 2^31)."""
    c = tl.program_id(1)
    j = tl.program_id(2)
    t, v = _block_and_entry(tl.program_id(0), V, BANK)
    p, valid, h, w = _block_positions(t, H, W, BLOCK)
    b0 = j * samples_per_chunk
    b1 = tl.minimum(b0 + samples_per_chunk, B)
    return c, j, b0, b1, p, h, w, valid, v


@triton.jit
def _program_setup(delta_ptr, mask_ptr, norm_ptr, B, C, H, W, chunks, sxh, sxw, sdb, sdc, sdh, sdw, smb, smc, smh, smw,
                   Hin, Win, Hr, Wr, scale_h, scale_w, oy0, ox0, mask_scale, clamp_lo, clamp_hi, RESIZE: tl.constexpr,
                   ACTIVATION: tl.constexpr, NORM_BEFORE: tl.constexpr, NORM_AFTER: tl.constexpr,
                   DELTA_FLAT: tl.constexpr, MASK_FLAT: tl.constexpr, DELTA_PER_SAMPLE: tl.constexpr,
                   MASK_PER_SAMPLE: tl.constexpr, BLOCK: tl.constexpr, BANK: tl.constexpr, ACC: tl.constexpr):
    """What a program computes once, before its batch loop: its coordinates (c, j, b0, b1, p, h, w, valid, v)
    and the operands of _program_operands."""
    coords = _program_coordinates(C, H, W, B, chunks, BLOCK, BANK)
    consts, taps, a, m = _program_operands(
        coords, delta_ptr, mask_ptr, norm_ptr, C, sxh, sxw, sdb, sdc, sdh, sdw, smb, smc, smh, smw, Hin, Win, Hr, Wr,
        scale_h, scale_w, oy0, ox0, mask_scale, clamp_lo, clamp_hi, RESIZE, ACTIVATION, NORM_BEFORE, NORM_AFTER,
        DELTA_FLAT, MASK_FLAT, DELTA_PER_SAMPLE, MASK_PER_SAMPLE, ACC)
    return coords, consts, taps, a, m


@triton.jit
def _program_operands(coords, delta_ptr, mask_ptr, norm_ptr, C, sxh, sxw, sdb, sdc, sdh, sdw, smb, smc, smh, smw,
                      Hin, Win, Hr, Wr, scale_h, scale_w, oy0, ox0, mask_scale, clamp_lo, clamp_hi,
                      RESIZE: tl.constexpr, ACTIVATION: tl.constexpr, NORM_BEFORE: tl.constexpr,
                      NORM_AFTER: tl.constexpr, DELTA_FLAT: tl.constexpr, MASK_FLAT: tl.constexpr,
                      DELTA_PER_SAMPLE: tl.constexpr, MASK_PER_SAMPLE: tl.constexpr, ACC: tl.constexpr):
    """What a program at coords (c, j, b0, b1, p, h, w, valid, v) computes once, before its batch loop: its
    constants (mean/inv_std before, mean/inv_std after, clamp lo, hi), the taps of copy 0, and (a, m) when
    delta / mask are shared by the batch (zeros otherwise: loaded per sample); a bank's delta is program v's."""
    c, j, b0, b1, p, h, w, valid, v = coords
    before_mean, before_inv, after_mean, after_inv = _channel_constants(norm_ptr, C, c, NORM_BEFORE, NORM_AFTER, ACC)
    taps = _copy_taps(h, w, valid, oy0, ox0, Hin, Win, Hr, Wr, scale_h, scale_w, sxh, sxw, RESIZE, ACC)
    zero = tl.zeros(h.shape, ACC)
    a, _ = _refresh_operands(zero, zero, delta_ptr, mask_ptr, v, c, p, h, w, valid, sdb, sdc, sdh, sdw, smb, smc, smh,
                             smw, mask_scale, not DELTA_PER_SAMPLE, False, ACTIVATION, DELTA_FLAT, MASK_FLAT, ACC)
    _, m = _refresh_operands(zero, zero, delta_ptr, mask_ptr, b0, c, p, h, w, valid, sdb, sdc, sdh, sdw, smb, smc, smh,
                             smw, mask_scale, False, not MASK_PER_SAMPLE, ACTIVATION, DELTA_FLAT, MASK_FLAT, ACC)
    consts = (before_mean, before_inv, after_mean, after_inv, _as_acc(clamp_lo, ACC), _as_acc(clamp_hi, ACC))
    return consts, taps, a, m


@triton.jit
def masked_perturb_forward_kernel(
    x_ptr, delta_ptr, mask_ptr, norm_ptr, offsets_ptr, out_ptr,
    B, C, H, W, chunks, samples_per_chunk, V,
    sxb, sxc, sxh, sxw, sdb, sdc, sdh, sdw, smb, smc, smh, smw,
    Hin, Win, Hr, Wr, scale_h: tl.float64, scale_w: tl.float64, oy0, ox0, num_copies, mask_scale,
    clamp_lo: tl.float64, clamp_hi: tl.float64,
    RESIZE: tl.constexpr, ACTIVATION: tl.constexpr, REPLACE: tl.constexpr,
    NORM_BEFORE: tl.constexpr, NORM_AFTER: tl.constexpr, HAS_CLAMP: tl.constexpr,
    ONE_COPY: tl.constexpr, X_FLAT: tl.constexpr, DELTA_FLAT: tl.constexpr, MASK_FLAT: tl.constexpr,
    DELTA_PER_SAMPLE: tl.constexpr, MASK_PER_SAMPLE: tl.constexpr, BLOCK: tl.constexpr, BANK: tl.constexpr,
    MASK_GROUP: tl.constexpr,
):
    """out[b, c, h, w] (row v * B + b of a bank's program v) of the module formula for the positions and
    batch chunk of this program; grid (blocks of H*W x V, C, chunks), see _forward_coordinates. MASK_GROUP > 1:
    a per-sample mask is read once per group of MASK_GROUP positions (_grouped_mask_value)."""
    ACC: tl.constexpr = tl.float64 if delta_ptr.dtype.element_ty == tl.float64 else tl.float32
    coords = _forward_coordinates(H, W, B, V, samples_per_chunk, BLOCK, BANK)
    consts, taps, a, m = _program_operands(
        coords, delta_ptr, mask_ptr, norm_ptr, C, sxh, sxw, sdb, sdc, sdh, sdw, smb, smc, smh, smw, Hin, Win, Hr, Wr,
        scale_h, scale_w, oy0, ox0, mask_scale, clamp_lo, clamp_hi, RESIZE, ACTIVATION, NORM_BEFORE, NORM_AFTER,
        DELTA_FLAT, MASK_FLAT, DELTA_PER_SAMPLE, MASK_PER_SAMPLE, ACC)
    c, j, b0, b1, p, h, w, valid, v = coords
    t, _ = _block_and_entry(tl.program_id(0), V, BANK)  # the block (the same division: compiled once)
    before_mean, before_inv, after_mean, after_inv, lo, hi = consts
    for b in range(b0, b1):
        a, m = _refresh_operands(a, m, delta_ptr, mask_ptr, b, c, p, h, w, valid, sdb, sdc, sdh, sdw, smb, smc, smh,
                                 smw, mask_scale, DELTA_PER_SAMPLE, MASK_PER_SAMPLE and MASK_GROUP == 1, ACTIVATION,
                                 DELTA_FLAT, MASK_FLAT, ACC)
        if MASK_PER_SAMPLE and MASK_GROUP > 1:
            m = _grouped_mask_value(mask_ptr, t, b, c, H, W, smb, smc, smh, smw, mask_scale, BLOCK, MASK_GROUP, ACC)
        x_bc = x_ptr + (tl.cast(b, tl.int64) * sxb + c.to(tl.int64) * sxc)
        u, covered = _placed_input(x_bc, taps, p, h, w, valid, offsets_ptr, num_copies, Hin, Win, Hr, Wr, scale_h, scale_w, sxh, sxw,
                                   ONE_COPY, X_FLAT, RESIZE, ACC)
        u = _normalized_input(u, covered, before_mean, before_inv, NORM_BEFORE)
        val = _blend_clamp(u, a, m, lo, hi, REPLACE, HAS_CLAMP)
        out = (val - after_mean) * after_inv
        out_row = out_ptr + ((tl.cast(v, tl.int64) * B + b) * C + c) * (H * W)
        tl.store(out_row + p, out.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def masked_perturb_backward_kernel(
    grad_ptr, x_ptr, delta_ptr, mask_ptr, norm_ptr, offsets_ptr, grad_delta_ptr, grad_mask_ptr, grad_placed_ptr,
    B, C, H, W, chunks,
    sxb, sxc, sxh, sxw, sdb, sdc, sdh, sdw, smb, smc, smh, smw,
    Hin, Win, Hr, Wr, scale_h: tl.float64, scale_w: tl.float64, oy0, ox0, num_copies, mask_scale,
    clamp_lo: tl.float64, clamp_hi: tl.float64,
    RESIZE: tl.constexpr, ACTIVATION: tl.constexpr, REPLACE: tl.constexpr,
    NORM_BEFORE: tl.constexpr, NORM_AFTER: tl.constexpr, HAS_CLAMP: tl.constexpr,
    ONE_COPY: tl.constexpr, X_FLAT: tl.constexpr, DELTA_FLAT: tl.constexpr, MASK_FLAT: tl.constexpr,
    DELTA_PER_SAMPLE: tl.constexpr, MASK_PER_SAMPLE: tl.constexpr, BLOCK: tl.constexpr, BANK: tl.constexpr,
    UNROLL: tl.constexpr,
):
    """Canvas-resolution partials (float32; float64 for float64 tensors) for the positions and batch chunk j
    of this program: grad_delta[b or j] = act' * sum_b g_a, grad_mask[b or j] = sum_b g_m (per sample when
    delta / mask is per sample, else summed in order b0..b1-1 into chunk row j), grad_placed[b] = g_u.
    A bank's program v reads grad_out rows v * B + b and writes the rows v * chunks + j (delta, shared
    mask) and v * B + b (per-sample mask, placed input). A gradient pointer passed as None is not computed.
    The batch loop is unrolled UNROLL times (loads of several samples in flight; the sum order is unchanged).
    The placed input u is computed only where a result depends on it: clamp, blend replace (also in the mask
    gradient g_m = gv (a - u)) and the input gradient; blend add's g_m = gv a does not."""
    ACC: tl.constexpr = tl.float64 if delta_ptr.dtype.element_ty == tl.float64 else tl.float32
    NEED_U: tl.constexpr = (grad_placed_ptr is not None) or HAS_CLAMP or REPLACE
    coords, consts, taps, a, m = _program_setup(
        delta_ptr, mask_ptr, norm_ptr, B, C, H, W, chunks, sxh, sxw, sdb, sdc, sdh, sdw, smb, smc, smh, smw,
        Hin, Win, Hr, Wr, scale_h, scale_w, oy0, ox0, mask_scale, clamp_lo, clamp_hi, RESIZE, ACTIVATION, NORM_BEFORE, NORM_AFTER,
        DELTA_FLAT, MASK_FLAT, DELTA_PER_SAMPLE, MASK_PER_SAMPLE, BLOCK, BANK, ACC)
    c, j, b0, b1, p, h, w, valid, v = coords
    before_mean, before_inv, after_mean, after_inv, lo, hi = consts
    zero = tl.zeros(h.shape, ACC)
    sum_ga = zero
    sum_gm = zero
    plane = H * W
    for b in tl.range(b0, b1, loop_unroll_factor=UNROLL):
        a, m = _refresh_operands(a, m, delta_ptr, mask_ptr, b, c, p, h, w, valid, sdb, sdc, sdh, sdw, smb, smc, smh,
                                 smw, mask_scale, DELTA_PER_SAMPLE, MASK_PER_SAMPLE, ACTIVATION, DELTA_FLAT,
                                 MASK_FLAT, ACC)
        row = ((tl.cast(v, tl.int64) * B + b) * C + c) * plane
        g = tl.load(grad_ptr + row + p, mask=valid, other=0).to(ACC)
        if NEED_U:
            x_bc = x_ptr + (tl.cast(b, tl.int64) * sxb + c.to(tl.int64) * sxc)
            u, covered = _placed_input(x_bc, taps, p, h, w, valid, offsets_ptr, num_copies, Hin, Win, Hr, Wr, scale_h, scale_w, sxh,
                                       sxw, ONE_COPY, X_FLAT, RESIZE, ACC)
        else:
            u = zero
            covered = h < 0
        un = _normalized_input(u, covered, before_mean, before_inv, NORM_BEFORE)
        gv = g * after_inv
        if HAS_CLAMP:
            val = _blend_clamp(un, a, m, lo, hi, REPLACE, False)
            gv = tl.where((val >= lo) & (val <= hi), gv, 0.0)
        ga = gv * m
        if REPLACE:
            gm = gv * (a - un)
            gun = gv * (1.0 - m)
        else:
            gm = gv * a
            gun = gv
        if grad_delta_ptr is not None:
            if DELTA_PER_SAMPLE:
                ga_out = ga * _activation_derivative(a, ACTIVATION)
                tl.store(grad_delta_ptr + row + p, ga_out.to(grad_delta_ptr.dtype.element_ty), mask=valid)
            else:
                sum_ga += ga
        if grad_mask_ptr is not None:
            if MASK_PER_SAMPLE:
                tl.store(grad_mask_ptr + row + p, gm.to(grad_mask_ptr.dtype.element_ty), mask=valid)
            else:
                sum_gm += gm
        if grad_placed_ptr is not None:
            gu = tl.where(covered, gun * before_inv, 0.0)
            tl.store(grad_placed_ptr + row + p, gu.to(grad_placed_ptr.dtype.element_ty), mask=valid)
    chunk_row = ((tl.cast(v, tl.int64) * chunks + j) * C + c) * plane
    if grad_delta_ptr is not None:
        if not DELTA_PER_SAMPLE:
            ga_sum = sum_ga * _activation_derivative(a, ACTIVATION)
            tl.store(grad_delta_ptr + chunk_row + p, ga_sum.to(grad_delta_ptr.dtype.element_ty), mask=valid)
    if grad_mask_ptr is not None:
        if not MASK_PER_SAMPLE:
            tl.store(grad_mask_ptr + chunk_row + p, sum_gm.to(grad_mask_ptr.dtype.element_ty), mask=valid)
