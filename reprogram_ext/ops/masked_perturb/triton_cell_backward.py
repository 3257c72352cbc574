"""Triton backward of masked_perturb for a mask coarser than the canvas (mask_scale s > 1; SMM: per-sample mask
[B, 1, 28, 28] at s = 8 on a 224 x 224 canvas) when the gradients do not read the placed input: blend add, no
clamp, no input gradient, delta shared by the batch, no prompt bank. It reads grad_out once and writes

    grad_mask[b or j, c, q, r] = sum over the footprint rows q s .. q s + s - 1, columns r s .. r s + s - 1
                                 (cropped to the canvas) of  gv * a          (mask resolution [Bm, C, Hm, Wm])
    grad_mask[b or j, 0, q, r] = sum over c = 0, 1, .., C - 1 in that order of the above  (one-channel mask:
                                 [Bm, 1, Hm, Wm], the mask's own channels; C <= MAX_SUMMED_CHANNELS)
    grad_delta[j, c, h, w]     = act'(a) * sum over the samples b of chunk j of  gv * m[b?, c?, h // s, w // s]

with gv = grad_out * inv_std_c (normalize after; 1 otherwise), a = act(delta[c?, h, w]): blend add's gradients
of the module formula (triton_kernels.py), which do not depend on the placed input u. A per-sample mask
(Bm = B) gets one row per sample; a shared one (Bm = 1) one row per batch chunk j, the sum over the chunk's
samples, which the op then sums over the chunks, as it does grad_delta's chunk rows. Accumulation in float32
(float64 for float64 tensors). Before this kernel the op wrote the per-sample mask gradient at canvas
resolution ([B, C, H, W] float32: 38.5 MB at SMM's size) and aten summed each footprint.

Work split: a program owns CELLS consecutive mask cells r of mask row q of CH channels (CH = 1: one channel c;
CH = C for a one-channel mask, whose gradient is summed over the channels in the program) -- whole footprints:
a [CP CELLS, SP, SP] tile of canvas positions, channel-major (CP = CH rounded up to a power of two, SP = s
rounded up; padding and the canvas edge masked) -- and loops over the samples of batch chunk j, UNROLL samples
per step as one [UNROLL, CP CELLS, SP, SP] load (all of the step's loads are issued before its mask-gradient
stores). Each element of grad_out is read by one program, once. Sums: a cell's footprint rows first (left to
right), then the rows (top to bottom), as the CPU kernel orders them (store_cell_row_sums, cpu.cpp), but each
as a Triton reduction (a fixed tree: the same bits on every run, equal to the CPU's to float rounding); then,
summing channels, each channel's cell taken out of the tile exactly (a sum of it and zeros) and added in
channel order from channel 0 (the compiled ops' order, sum_channels_in_order); grad_delta in sample order
across the steps, each step's UNROLL samples summed first. No atomics: one writer per output element. The
channel-summed tile keeps the per-channel launch's warps per channel (SMM fp32: 392 programs of 4 warps, one
of them padding, instead of 1176 of one warp), so the loads in flight are the same.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .triton_kernels import _activate, _activation_derivative

# Elements a thread holds per sample: one 16-byte group (fp32: 4, 16-bit: 8) on a one-warp program, more warps
# for larger footprints; the batch step loads UNROLL samples (at most MAX_STEP_ELEMENTS_PER_THREAD elements per
# thread in flight: registers, no spills).
MAX_STEP_ELEMENTS_PER_THREAD = 32
MAX_UNROLL = 8
MAX_WARPS = 4
# Footprints of at most 64 x 64 positions (s <= 64): 32 per thread at MAX_WARPS warps and one sample per step.
# Coarser masks (one cell for a whole canvas) take the general kernel.
MAX_FOOTPRINT = 64
# A one-channel mask's gradient is summed over the channels in the kernel for C <= 4 channels (padded to CP = 4:
# up to 4 x MAX_WARPS warps); beyond, the general kernel and the op's channel sum.
MAX_SUMMED_CHANNELS = 4
# The interpreter runs programs one after another in Python: fewer, larger programs (same per-element code).
INTERPRETER_TILE_ELEMENTS = 2048
INTERPRETER_UNROLL = 4


def cell_backward_applies(args: dict, needs, mask) -> bool:
    """Whether this kernel serves a backward call (args: the launch arguments triton_op builds): a mask coarser
    than the canvas whose gradient is asked for, blend add, no clamp, no input gradient, delta shared by the
    batch, no prompt bank, footprints of at most MAX_FOOTPRINT x MAX_FOOTPRINT positions, and a one-channel
    mask on at most MAX_SUMMED_CHANNELS channels (or one mask per channel)."""
    return (mask is not None and bool(needs[1]) and not bool(needs[2]) and 1 < args["mask_scale"] <= MAX_FOOTPRINT
            and not args["REPLACE"] and not args["HAS_CLAMP"] and not args["DELTA_PER_SAMPLE"] and not args["BANK"]
            and summed_channels(args["C"], mask) <= MAX_SUMMED_CHANNELS)


def summed_channels(C: int, mask) -> int:
    """CH, the channels a program holds: C for a one-channel mask (its gradient summed over them in the
    kernel), 1 for one mask per channel."""
    return C if mask.shape[1] == 1 else 1


def cell_tile(mask_scale: int, Wm: int, itemsize: int, on_gpu: bool, channels: int = 1) -> tuple:
    """(CELLS, SP, UNROLL, num_warps): cells per program and channel, padded footprint side, samples per batch
    step and warps, for programs of `channels` (CH) channels. GPU: a warp holds 16 bytes per thread per sample
    and channel (fp32 s = 8: 2 cells of 64 = 128 elements, one 128-bit load per thread and sample; UNROLL = 8
    loads in flight per thread), CP = CH rounded up to a power of two warps' worth per program."""
    SP = triton.next_power_of_2(mask_scale)
    CP = triton.next_power_of_2(channels)
    if not on_gpu:
        cells = max(1, min(triton.next_power_of_2(Wm), INTERPRETER_TILE_ELEMENTS // (SP * SP * CP)))
        return cells, SP, INTERPRETER_UNROLL, 1
    vec = 16 // itemsize
    cells = max(1, (32 * vec) // (SP * SP))
    elements = cells * SP * SP
    warps = max(1, min(MAX_WARPS, elements // (32 * vec)))
    per_thread = max(1, elements // (32 * warps))
    unroll = max(1, min(MAX_UNROLL, MAX_STEP_ELEMENTS_PER_THREAD // per_thread))
    return cells, SP, unroll, warps * CP


def cell_programs_per_sample(C: int, Hm: int, Wm: int, cells: int, channels: int = 1) -> int:
    return (C // channels) * Hm * triton.cdiv(Wm, cells)


@triton.jit
def masked_perturb_cell_backward_kernel(
    grad_ptr, delta_ptr, mask_ptr, norm_ptr, grad_delta_ptr, grad_mask_ptr,
    B, C, H, W, Hm, Wm, chunks,
    sdc, sdh, sdw, smb, smc, smh, smw,
    ACTIVATION: tl.constexpr, NORM_AFTER: tl.constexpr, MASK_PER_SAMPLE: tl.constexpr,
    S: tl.constexpr, SP: tl.constexpr, CELLS: tl.constexpr, UNROLL: tl.constexpr,
    CH: tl.constexpr = 1, CP: tl.constexpr = 1,
):
    """grad_mask (mask resolution, rows b or j) and grad_delta (chunk rows j) of the module docstring for the
    CELLS cells of the program's CH channels: programs ordered (chunk j, channel group c0 = CH g, mask row q,
    cell block), the block fastest. CH = 1: grad_mask [.., C, Hm, Wm]; CH = C > 1 (a one-channel mask): the
    channel sum [.., 1, Hm, Wm]. A gradient pointer passed as None is not computed. S: mask_scale, SP: S rounded
    up to a power of two, CP: CH rounded up to a power of two."""
    ACC: tl.constexpr = tl.float64 if delta_ptr.dtype.element_ty == tl.float64 else tl.float32
    blocks = tl.cdiv(Wm, CELLS)
    groups = C // CH
    pid = tl.program_id(0)
    t = pid % blocks
    q = (pid // blocks) % Hm
    c0 = ((pid // (blocks * Hm)) % groups) * CH
    j = pid // (blocks * Hm * groups)
    b0 = (B * j) // chunks  # int32: the launcher keeps B * chunks < 2^31
    b1 = (B * (j + 1)) // chunks

    k = tl.arange(0, CP * CELLS)  # tile row k: channel c0 + k // CELLS, cell t CELLS + k % CELLS
    kc = k // CELLS
    c = c0 + kc  # [CP CELLS]
    r = t * CELLS + k % CELLS
    cell_ok = (r < Wm) & (kc < CH)
    fy = tl.arange(0, SP)
    fx = tl.arange(0, SP)
    h = q * S + fy[None, :, None]  # [1, SP, 1]
    w = r[:, None, None] * S + fx[None, None, :]  # [CP CELLS, 1, SP]
    valid = (fy < S)[None, :, None] & (fx < S)[None, None, :] & (h < H) & (w < W) & cell_ok[:, None, None]
    pos = h * W + w  # position in a canvas plane
    plane = H * W
    c3 = c[:, None, None]

    a = _activate(tl.load(delta_ptr + (c3 * sdc + h * sdh + w * sdw), mask=valid, other=0).to(ACC), ACTIVATION)
    if NORM_AFTER:
        inv_std = tl.load(norm_ptr + C + c3, mask=cell_ok[:, None, None], other=1).to(ACC)
    else:
        inv_std = tl.full((), 1.0, ACC)
    m_cells = mask_ptr + (c * smc + q * smh + r * smw)  # [CP CELLS]
    u = tl.arange(0, UNROLL)
    sum_ga = tl.zeros((CP * CELLS, SP, SP), ACC)
    sum_gm = tl.zeros((CP * CELLS, SP, SP), ACC)
    rc = t * CELLS + tl.arange(0, CELLS)  # the output cells of a channel-summed program
    out_ok = rc < Wm
    if not MASK_PER_SAMPLE:  # a shared mask: loaded once
        m_shared = tl.load(m_cells, mask=cell_ok, other=0).to(ACC)[None, :, None, None]
    for step in range(b0, b1, UNROLL):
        b = step + u  # [UNROLL] samples of this step
        b_ok = b < b1
        rows = (b.to(tl.int64)[:, None] * C + c[None, :]) * plane  # [UNROLL, CP CELLS]
        g = tl.load(grad_ptr + (rows[:, :, None, None] + pos[None, :, :, :]),
                    mask=b_ok[:, None, None, None] & valid[None, :, :, :], other=0).to(ACC)
        if MASK_PER_SAMPLE:
            m = tl.load(m_cells[None, :] + (b * smb)[:, None], mask=b_ok[:, None] & cell_ok[None, :],
                        other=0).to(ACC)[:, :, None, None]
        else:
            m = m_shared
        gv = g * inv_std
        if grad_delta_ptr is not None:
            sum_ga += tl.sum(gv * m, axis=0)
        if grad_mask_ptr is not None:
            gm = gv * a[None, :, :, :]
            if MASK_PER_SAMPLE:
                cells = tl.sum(tl.sum(gm, axis=3), axis=2)  # [UNROLL, CP CELLS]: rows, then the rows' sums
                if CH == 1:
                    out = grad_mask_ptr + (((b.to(tl.int64)[:, None] * C + c[None, :]) * Hm + q) * Wm) + r[None, :]
                    tl.store(out, cells.to(grad_mask_ptr.dtype.element_ty), mask=b_ok[:, None] & cell_ok[None, :])
                else:
                    total = _channel_sum(tl.reshape(cells, (UNROLL, CP, CELLS)), CH, CP, 1)  # [UNROLL, CELLS]
                    out = grad_mask_ptr + ((b.to(tl.int64) * Hm + q) * Wm)[:, None] + rc[None, :]
                    tl.store(out, total.to(grad_mask_ptr.dtype.element_ty), mask=b_ok[:, None] & out_ok[None, :])
            else:
                sum_gm += tl.sum(gm, axis=0)
    if grad_delta_ptr is not None:
        gd = sum_ga * _activation_derivative(a, ACTIVATION)
        tl.store(grad_delta_ptr + ((tl.cast(j, tl.int64) * C + c3) * plane + pos),
                 gd.to(grad_delta_ptr.dtype.element_ty), mask=valid)
    if grad_mask_ptr is not None:
        if not MASK_PER_SAMPLE:
            cells = tl.sum(tl.sum(sum_gm, axis=2), axis=1)  # [CP CELLS]
            if CH == 1:
                out = grad_mask_ptr + ((tl.cast(j, tl.int64) * C + c) * Hm + q) * Wm + r
                tl.store(out, cells.to(grad_mask_ptr.dtype.element_ty), mask=cell_ok)
            else:
                total = _channel_sum(tl.reshape(cells, (CP, CELLS)), CH, CP, 0)  # [CELLS]
                out = grad_mask_ptr + (tl.cast(j, tl.int64) * Hm + q) * Wm + rc
                tl.store(out, total.to(grad_mask_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _channel_sum(cells, CH: tl.constexpr, CP: tl.constexpr, AXIS: tl.constexpr):
    """cells[.., 0, ..] + cells[.., 1, ..] + ... + cells[.., CH - 1, ..] along AXIS (of size CP >= CH), added in
    that order from channel 0: each channel's slice taken out exactly (the sum of it and zeros), so the order is
    the compiled ops' (sum_channels_in_order), not a reduction tree's."""
    ch = tl.arange(0, CP)
    if AXIS == 0:
        sel = ch[:, None]
    else:
        sel = ch[None, :, None]
    total = tl.sum(tl.where(sel == 0, cells, 0), axis=AXIS)
    for ci in tl.static_range(1, CH):
        total += tl.sum(tl.where(sel == ci, cells, 0), axis=AXIS)
    return total
