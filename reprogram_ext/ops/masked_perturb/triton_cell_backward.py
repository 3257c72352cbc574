"""Triton backward of masked_perturb for a mask coarser than the canvas (mask_scale s > 1; SMM: per-sample mask
[B, 1, 28, 28] at s = 8 on a 224 x 224 canvas) when the gradients do not read the placed input: blend add, no
clamp, no input gradient, delta shared by the batch, no prompt bank. It reads grad_out once and writes

    grad_mask[b or j, c, q, r] = sum over the footprint rows q s .. q s + s - 1, columns r s .. r s + s - 1
                                 (cropped to the canvas) of  gv * a          (mask resolution [Bm, C, Hm, Wm])
    grad_delta[j, c, h, w]     = act'(a) * sum over the samples b of chunk j of  gv * m[b?, c?, h // s, w // s]

with gv = grad_out * inv_std_c (normalize after; 1 otherwise), a = act(delta[c?, h, w]): blend add's gradients
of the module formula (triton_kernels.py), which do not depend on the placed input u. A per-sample mask
(Bm = B) gets one row per sample; a shared one (Bm = 1) one row per batch chunk j, the sum over the chunk's
samples, which the op then sums over the chunks, as it does grad_delta's chunk rows. Accumulation in float32
(float64 for float64 tensors). Before this kernel the op wrote the per-sample mask gradient at canvas
resolution ([B, C, H, W] float32: 38.5 MB at SMM's size) and aten summed each footprint.

Work split: a program owns CELLS consecutive mask cells r of mask row q of channel c -- whole footprints:
a [CELLS, SP, SP] tile of canvas positions (SP = s rounded up to a power of two; padding and the canvas edge
masked) -- and loops over the samples of batch chunk j, UNROLL samples per step as one [UNROLL, CELLS, SP, SP]
load (all of the step's loads are issued before its mask-gradient stores). Each element of grad_out is read
by one program, once. Sums: a cell's footprint rows first (left to right), then the rows (top to bottom), as
the CPU kernel orders them (store_cell_row_sums, cpu.cpp), but each as a Triton reduction (a fixed tree:
the same bits on every run, equal to the CPU's to float rounding); grad_delta in sample order across the
steps, each step's UNROLL samples summed first. No atomics: one writer per output element.
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
# The interpreter runs programs one after another in Python: fewer, larger programs (same per-element code).
INTERPRETER_TILE_ELEMENTS = 2048
INTERPRETER_UNROLL = 4


def cell_backward_applies(args: dict, needs, mask) -> bool:
    """Whether this kernel serves a backward call (args: the launch arguments triton_op builds): a mask coarser
    than the canvas whose gradient is asked for, blend add, no clamp, no input gradient, delta shared by the
    batch, no prompt bank, footprints of at most MAX_FOOTPRINT x MAX_FOOTPRINT positions."""
    return (mask is not None and bool(needs[1]) and not bool(needs[2]) and 1 < args["mask_scale"] <= MAX_FOOTPRINT
            and not args["REPLACE"] and not args["HAS_CLAMP"] and not args["DELTA_PER_SAMPLE"] and not args["BANK"])


def cell_tile(mask_scale: int, Wm: int, itemsize: int, on_gpu: bool) -> tuple:
    """(CELLS, SP, UNROLL, num_warps): cells per program, padded footprint side, samples per batch step and
    warps. GPU: a warp holds 16 bytes per thread per sample (fp32 s = 8: 2 cells of 64 = 128 elements, one
    128-bit load per thread and sample; UNROLL = 8 loads in flight per thread)."""
    SP = triton.next_power_of_2(mask_scale)
    if not on_gpu:
        cells = max(1, min(triton.next_power_of_2(Wm), INTERPRETER_TILE_ELEMENTS // (SP * SP)))
        return cells, SP, INTERPRETER_UNROLL, 1
    vec = 16 // itemsize
    cells = max(1, (32 * vec) // (SP * SP))
    elements = cells * SP * SP
    warps = max(1, min(MAX_WARPS, elements // (32 * vec)))
    per_thread = max(1, elements // (32 * warps))
    unroll = max(1, min(MAX_UNROLL, MAX_STEP_ELEMENTS_PER_THREAD // per_thread))
    return cells, SP, unroll, warps


def cell_programs_per_sample(C: int, Hm: int, Wm: int, cells: int) -> int:
    return C * Hm * triton.cdiv(Wm, cells)


@triton.jit
def masked_perturb_cell_backward_kernel(
    grad_ptr, delta_ptr, mask_ptr, norm_ptr, grad_delta_ptr, grad_mask_ptr,
    B, C, H, W, Hm, Wm, chunks,
    sdc, sdh, sdw, smb, smc, smh, smw,
    ACTIVATION: tl.constexpr, NORM_AFTER: tl.constexpr, MASK_PER_SAMPLE: tl.constexpr,
    S: tl.constexpr, SP: tl.constexpr, CELLS: tl.constexpr, UNROLL: tl.constexpr,
):
    """grad_mask (mask resolution, rows b or j) and grad_delta (chunk rows j) of the module docstring for the
    CELLS cells of the program: programs ordered (chunk j, channel c, mask row q, cell block), the block fastest.
    A gradient pointer passed as None is not computed. S: mask_scale, SP: S rounded up to a power of two."""
    ACC: tl.constexpr = tl.float64 if delta_ptr.dtype.element_ty == tl.float64 else tl.float32
    blocks = tl.cdiv(Wm, CELLS)
    pid = tl.program_id(0)
    t = pid % blocks
    q = (pid // blocks) % Hm
    c = (pid // (blocks * Hm)) % C
    j = pid // (blocks * Hm * C)
    b0 = (B * j) // chunks  # int32: the launcher keeps B * chunks < 2^31
    b1 = (B * (j + 1)) // chunks

    r = t * CELLS + tl.arange(0, CELLS)  # the program's cells of mask row q
    cell_ok = r < Wm
    fy = tl.arange(0, SP)
    fx = tl.arange(0, SP)
    h = q * S + fy[None, :, None]  # [1, SP, 1]
    w = r[:, None, None] * S + fx[None, None, :]  # [CELLS, 1, SP]
    valid = (fy < S)[None, :, None] & (fx < S)[None, None, :] & (h < H) & (w < W)  # [CELLS, SP, SP]
    pos = h * W + w  # position in a canvas plane
    plane = H * W

    a = _activate(tl.load(delta_ptr + (c * sdc + h * sdh + w * sdw), mask=valid, other=0).to(ACC), ACTIVATION)
    if NORM_AFTER:
        inv_std = tl.load(norm_ptr + C + c).to(ACC)
    else:
        inv_std = tl.full((), 1.0, ACC)
    m_cells = mask_ptr + (c * smc + q * smh + r * smw)  # [CELLS]
    u = tl.arange(0, UNROLL)
    sum_ga = tl.zeros((CELLS, SP, SP), ACC)
    sum_gm = tl.zeros((CELLS, SP, SP), ACC)
    if not MASK_PER_SAMPLE:  # a shared mask: loaded once
        m_shared = tl.load(m_cells, mask=cell_ok, other=0).to(ACC)[None, :, None, None]
    for step in range(b0, b1, UNROLL):
        b = step + u  # [UNROLL] samples of this step
        b_ok = b < b1
        rows = (b.to(tl.int64) * C + c) * plane
        g = tl.load(grad_ptr + (rows[:, None, None, None] + pos[None, :, :, :]),
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
                cells = tl.sum(tl.sum(gm, axis=3), axis=2)  # [UNROLL, CELLS]: rows, then the rows' sums
                out = grad_mask_ptr + (((b.to(tl.int64) * C + c) * Hm + q) * Wm)[:, None] + r[None, :]
                tl.store(out, cells.to(grad_mask_ptr.dtype.element_ty), mask=b_ok[:, None] & cell_ok[None, :])
            else:
                sum_gm += tl.sum(gm, axis=0)
    if grad_delta_ptr is not None:
        gd = sum_ga * _activation_derivative(a, ACTIVATION)
        tl.store(grad_delta_ptr + ((tl.cast(j, tl.int64) * C + c) * plane + pos),
                 gd.to(grad_delta_ptr.dtype.element_ty), mask=valid)
    if grad_mask_ptr is not None:
        if not MASK_PER_SAMPLE:
            cells = tl.sum(tl.sum(sum_gm, axis=2), axis=1)  # [CELLS]
            out = grad_mask_ptr + ((tl.cast(j, tl.int64) * C + c) * Hm + q) * Wm + r
            tl.store(out, cells.to(grad_mask_ptr.dtype.element_ty), mask=cell_ok)
