"""Triton backend of masked_perturb: the ops ``reprogram_ext::masked_perturb_forward_triton`` and
``reprogram_ext::masked_perturb_backward_triton``, with the schemas and results of the C++ ops
``masked_perturb_forward`` / ``masked_perturb_backward`` (options.py, csrc/schemas.cpp): canonical
[B, C, H, W] layout, stride-aware x / delta / mask with size-1 broadcast dims, (oy, ox) offsets of
copies that add, norm [2, C] = (mean, 1 / std) in the accumulation dtype (float32; float64 for float64
tensors), prompt banks (bank: delta [V, Cd, H, W], output [V * B, C, H, W]). The backward returns
canvas-resolution partials in the accumulation dtype (grad_delta [Bd, C, H, W], grad_placed [B, C, H, W], a bank's
mask / input gradients summed over V) and the mask gradient at mask resolution with the mask's channels
[Bm, Cm, ceil(H / s), ceil(W / s)] (the compiled op's contract: from masked_perturb_cell_backward_kernel,
triton_cell_backward.py, where it applies, else the footprint sums of the general kernel's canvas-resolution
partials; a one-channel mask's summed over the canvas channels in channel order, autograd.sum_mask_channels);
its batch sums run per position in sample order inside the chunks of ``reduction_chunks`` (the C++
rule, a function of the shape only), then over the chunk rows: deterministic, no atomics.
Kernels and formula: ``triton_kernels.py``.

The ops are defined when this module is first imported, which ``reprogram_ext.masked_perturb`` does
on the first ``backend="triton"`` call (triton is never imported with the package: TRITON_INTERPRET
must be set before triton's import). They run on CUDA tensors, and on CPU tensors under
TRITON_INTERPRET=1.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import numpy as np
import torch
import triton

from .autograd import accumulation_dtype, mask_cell_sums, register, sum_mask_channels
from .backends import TRITON_GRID_AXIS_LIMIT, triton_limits
from .options import ACTIVATIONS, BACKWARD_SCHEMA, BLENDS, FORWARD_SCHEMA, NORMALIZE, RESIZE_MODES, PerturbOptions
from .triton_cell_backward import (cell_backward_applies, cell_programs_per_sample, cell_tile,
                                   masked_perturb_cell_backward_kernel, summed_channels)
from .triton_kernels import masked_perturb_backward_kernel, masked_perturb_forward_kernel

FORWARD_NAME = "reprogram_ext::masked_perturb_forward_triton"
BACKWARD_NAME = "reprogram_ext::masked_perturb_backward_triton"
NUM_WARPS = 4
# Programs the forward aims for when it splits the batch into chunks: 6 per SM of a 132-SM GPU (24 warps
# per SM). Each program pays its set-up (copy taps, activated delta, mask: ~370 SASS instructions at
# Elsayed's 223 x 225 with tanh) once for its chunk, so fewer programs amortise it over more samples;
# 6 per SM still keep, for ILM-VP (4 x loads of 512 B in flight per warp, unrolled), ~50 KB of loads in
# flight per SM, twice what an H200 needs (bench/notes/triton_masked_perturb.md).
FORWARD_TARGET_PROGRAMS = 6 * 132
# The backward on a GPU runs one-warp programs of BACKWARD_VECTORS_PER_THREAD x 16 bytes of positions per thread
# (fp32: 128 positions, one 128-bit grad_out load per sample) and unrolls its batch loop by BACKWARD_UNROLL, so
# each thread keeps BACKWARD_UNROLL 128-bit loads in flight. It aims for BACKWARD_TARGET_WARPS warps: 8 per SM
# of a 132-SM GPU = 8 x 32 x 8 x 16 B = 32 KB in flight per SM, above the ~25 KB that Little's law asks of
# an H200 (4.8 TB/s x ~0.7 us / 132 SMs). ILM-VP (224 x 224 x 3) has 1176 programs per sample: one chunk,
# no partial rows to sum. Fewer positions get more batch chunks (one float32 canvas partial each, written,
# then read by the sum), at most PARTIAL_BYTES_SHARE of grad_out's bytes.
# A loop that stores per sample (per-sample delta / mask gradients, the input gradient) keeps the unroll at
# BACKWARD_UNROLL_STORING: ptxas cannot move a later sample's load above a store that may alias it, so a
# deeper unroll adds registers without adding loads in flight.
BACKWARD_NUM_WARPS = 1
BACKWARD_UNROLL = 8
BACKWARD_UNROLL_STORING = 4
BACKWARD_TARGET_WARPS = 8 * 132
PARTIAL_BYTES_SHARE = 1 / 8
# The Triton interpreter runs programs one after another in Python (~1 ms per jit-helper call), so on
# CPU tensors it runs fewer, larger programs. The per-element code is the same; the forward still
# gets several chunks and the backward the chunks of reduction_chunks() (a function of the shape).
INTERPRETER_BLOCK = 2048
INTERPRETER_FORWARD_TARGET_PROGRAMS = 8
# reduction_chunks() of csrc/masked_perturb/math.h: ~64k independent (chunk, position) work items.
REDUCTION_TARGET_ITEMS = 1 << 16


def reduction_chunks(B: int, positions: int) -> int:
    """Batch chunks of the deterministic backward reduction: reduction_chunks() of csrc/masked_perturb/math.h
    (a function of the shape only, so every backend sums in the same order)."""
    if B <= 1 or positions <= 0:
        return 1
    return max(1, min(B, -(-REDUCTION_TARGET_ITEMS // positions)))


def _on_gpu(device: torch.device) -> bool:
    """GPU launch configuration: CUDA tensors, and meta tensors (launches planned for the AOT checks)."""
    return device.type != "cpu"


def _int32_chunks(B: int, chunks: int) -> int:
    """chunks capped so that B * chunks < 2^31 (the kernels find a chunk's samples in int32)."""
    return max(1, min(chunks, (2**31 - 1) // max(B, 1)))


def forward_chunks(B: int, programs_per_sample: int, device: torch.device, bank_entries: int = 1) -> tuple:
    """(chunks, samples per chunk) of the forward: enough programs to fill the GPU (~FORWARD_TARGET_PROGRAMS),
    each reusing its activated delta, mask and placement indices for as many samples as possible. Chunk j
    holds samples [j s, min((j + 1) s, B)), s = ceil(B / chunks), and no chunk is empty; bank_entries x chunks
    stays within TRITON_GRID_AXIS_LIMIT (the chunks are the grid's axis 2; the bank entries, on axis 0 since
    they moved next to the blocks, still count against it, so a bank keeps the chunk count it had)."""
    target = FORWARD_TARGET_PROGRAMS if _on_gpu(device) else INTERPRETER_FORWARD_TARGET_PROGRAMS
    chunks = max(1, min(B, -(-target // max(programs_per_sample, 1)), TRITON_GRID_AXIS_LIMIT // max(bank_entries, 1)))
    per_chunk = -(-B // chunks) if B > 0 else 1
    return max(1, -(-B // per_chunk)), per_chunk


def backward_chunks(B: int, positions: int, programs_per_sample: int, device: torch.device,
                    itemsize: int = 4) -> int:
    """Batch chunks of the backward's deterministic batch sum (a function of the shape, dtype and device
    type only): reduction_chunks() under the interpreter (the C++ order); on GPUs up to enough for
    BACKWARD_TARGET_WARPS warps while the float32 partials (8 bytes per position and chunk: written,
    then read by the sum) stay within PARTIAL_BYTES_SHARE of grad_out's bytes (itemsize per element)."""
    chunks = reduction_chunks(B, positions)
    if _on_gpu(device):
        wanted = -(-BACKWARD_TARGET_WARPS // max(programs_per_sample * BACKWARD_NUM_WARPS, 1))
        affordable = int(B * itemsize * PARTIAL_BYTES_SHARE // 8)
        chunks = max(chunks, min(B, wanted, affordable))
    return _int32_chunks(B, chunks)


def resize_scales(o: PerturbOptions, in_size, dtype: torch.dtype) -> tuple:
    """(in / out) per spatial axis as F.interpolate computes it: float32 for nearest and for bilinear on
    float32 math, float64 for bilinear on float64; (1, 1) without resize. Exact: both are the correctly
    rounded quotient of two integers."""
    if o.resize_mode == "none":
        return 1.0, 1.0
    wide = o.resize_mode == "bilinear" and dtype == torch.float64
    return tuple(i / r if wide else float(np.float32(i) / np.float32(r)) for i, r in zip(in_size, o.resized_size))


def block_size(dtype: torch.dtype, device: torch.device, warps: int = NUM_WARPS) -> int:
    """Positions per program: on GPUs 16 bytes of delta/out per thread (one 128-bit access) with
    `warps` warps; INTERPRETER_BLOCK under the interpreter."""
    if not _on_gpu(device):
        return INTERPRETER_BLOCK
    return warps * 32 * (16 // dtype.itemsize)


def _broadcast_strides(t: torch.Tensor) -> list:
    """Element strides of a 4-D view, 0 on size-1 (broadcast) dims."""
    return [0 if n == 1 else s for n, s in zip(t.shape, t.stride())]


def _plane_is_flat(t: torch.Tensor, H: int, W: int) -> bool:
    """Whether t[b, c] is the contiguous H x W canvas plane, so element (h, w) is at h*W + w."""
    return tuple(t.shape[2:]) == (H, W) and (H == 1 or t.stride(2) == W) and (W == 1 or t.stride(3) == 1)


def _check(cond: bool, message: str, error=ValueError) -> None:
    if not cond:
        raise error(f"masked_perturb (triton): {message}")


def _check_arguments(x, delta, mask, norm, o: PerturbOptions):
    """The canonical-form guards csrc/masked_perturb/args.h has for the C++ ops (the user's arguments were
    validated by args.canonicalize); returns the canvas (B, C, H, W)."""
    resized_size, resize_mode, mask_scale = o.resized_size, o.resize_mode, o.mask_scale
    _check(x.dim() == 4, f"x must be [B, Cx, H, W], got shape {tuple(x.shape)}")
    _check(delta.dim() == 4, f"delta must be [Bd, Cd, H, W], got shape {tuple(delta.shape)}")
    _check(delta.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64),
           f"delta must be floating, got {delta.dtype}", TypeError)
    _check(x.dtype in (delta.dtype, torch.uint8), f"x must have delta's dtype ({delta.dtype}) or uint8, got {x.dtype}",
           TypeError)
    _check(x.device == delta.device, f"x is on {x.device} but delta is on {delta.device}")
    if delta.device.type not in ("cuda", "meta"):  # meta: launch planning for the AOT checks
        _check(os.environ.get("TRITON_INTERPRET") == "1",
               f"tensors on {delta.device} need TRITON_INTERPRET=1 (the Triton interpreter), or use CUDA tensors",
               RuntimeError)
    B, Cx, Hin, Win = x.shape
    Bd, Cd, H, W = delta.shape
    C = Cx if Cd == 1 else Cd
    _check(Cx in (1, C), f"x has {Cx} channels, expected 1 or {C}")
    _check(o.bank or Bd in (1, B), f"delta batch must be 1 or {B}, got {Bd} (a prompt bank takes bank=True)")
    _check(isinstance(mask_scale, int) and mask_scale >= 1, f"mask_scale must be >= 1, got {mask_scale}")
    if mask is not None:
        Hm, Wm = -(-H // mask_scale), -(-W // mask_scale)
        _check(mask.dim() == 4, f"mask must be [Bm, Cm, Hm, Wm], got shape {tuple(mask.shape)}")
        _check(mask.dtype == delta.dtype, f"mask must have delta's dtype ({delta.dtype}), got {mask.dtype}", TypeError)
        _check(mask.device == delta.device, f"mask is on {mask.device} but delta is on {delta.device}")
        _check(mask.shape[0] in (1, B) and mask.shape[1] in (1, C) and mask.shape[2] in (1, Hm)
               and mask.shape[3] in (1, Wm), f"mask {tuple(mask.shape)} does not broadcast to [{B}, {C}, {Hm}, {Wm}]")
    acc = accumulation_dtype(delta.dtype)
    _check(norm.dtype == acc and tuple(norm.shape) == (2, C) and norm.is_contiguous()
           and norm.device == delta.device, f"norm must be a contiguous {acc} [2, {C}] tensor on delta's device, "
           f"got {norm.dtype} {tuple(norm.shape)} on {norm.device}")
    _check(len(resized_size) == 2, f"resized_size must have 2 entries, got {list(resized_size)}")
    Hr, Wr = resized_size
    _check(Hr >= 0 and Wr >= 0, f"resized_size must be non-negative, got {list(resized_size)}")
    _check(resize_mode in ("none",) + RESIZE_MODES, f"resize_mode must be one of {('none',) + RESIZE_MODES}, "
           f"got {resize_mode!r}")
    if resize_mode == "none":
        _check((Hr, Wr) == (Hin, Win), f"resized_size {list(resized_size)} must equal x's size {[Hin, Win]} "
               "when resize_mode is none")
    else:
        _check(Hin > 0 and Win > 0, "cannot resize an empty input")
    _check(o.activation in ACTIVATIONS, f"activation must be one of {tuple(ACTIVATIONS)}, got {o.activation!r}")
    _check(o.blend in BLENDS, f"blend must be one of {BLENDS}, got {o.blend!r}")
    _check(o.normalize in NORMALIZE, f"normalize must be one of {NORMALIZE}, got {o.normalize!r}")
    limit = triton_limits(x, delta, mask, o.bank)
    _check(limit is None, str(limit))
    return B, C, H, W


class Launch(NamedTuple):
    """One kernel launch: number of programs, every kernel argument by name, warps per program, the grid when
    it is not 1-D (programs,), and the kernel when it is not the op's default one (the backward's mask-cell
    kernel, triton_cell_backward.py)."""

    programs: int
    args: dict
    num_warps: int = NUM_WARPS
    grid: Optional[tuple] = None
    kernel: object = None


def _shared_arguments(x, delta, mask, *op_args) -> dict:
    """The arguments both kernels take after their pointers and before `chunks` is known, by name (and V,
    the bank entries, for the launcher); op_args: the forward op's arguments after (x, delta, mask)."""
    o = PerturbOptions.from_op_args(*op_args)
    norm = op_args[1]
    B, C, H, W = _check_arguments(x, delta, mask, norm, o)
    num_copies = len(o.offsets)
    offsets = [v for pair in o.offsets for v in pair]
    resized_size, resize_mode, mask_scale = o.resized_size, o.resize_mode, o.mask_scale
    lo, hi = o.clamp if o.clamp is not None else (0.0, 0.0)
    if num_copies == 1:
        oy0, ox0, offsets_t = offsets[0], offsets[1], None
    elif num_copies == 0:  # no copy: one copy below the canvas covers nothing
        oy0, ox0, offsets_t = H, 0, None
    else:
        oy0, ox0 = 0, 0
        offsets_t = torch.tensor(list(offsets), dtype=torch.int32, device=delta.device)
    one_copy = offsets_t is None
    sm = _broadcast_strides(mask) if mask is not None else [0, 0, 0, 0]
    return dict(
        x_ptr=x, delta_ptr=delta, mask_ptr=mask, norm_ptr=norm, offsets_ptr=offsets_t, B=B, C=C, H=H, W=W,
        **dict(zip(("sxb", "sxc", "sxh", "sxw"), _broadcast_strides(x))),
        **dict(zip(("sdb", "sdc", "sdh", "sdw"), _broadcast_strides(delta))),
        **dict(zip(("smb", "smc", "smh", "smw"), sm)),
        Hin=x.shape[2], Win=x.shape[3], Hr=resized_size[0], Wr=resized_size[1],
        **dict(zip(("scale_h", "scale_w"), resize_scales(o, x.shape[2:], delta.dtype))), oy0=oy0, ox0=ox0,
        num_copies=num_copies, mask_scale=mask_scale, clamp_lo=float(lo), clamp_hi=float(hi),
        RESIZE=resize_mode, ACTIVATION=o.activation, REPLACE=o.blend == "replace", NORM_BEFORE=o.normalize == "before",
        NORM_AFTER=o.normalize == "after", HAS_CLAMP=o.clamp is not None, ONE_COPY=one_copy,
        X_FLAT=one_copy and (oy0, ox0) == (0, 0) and resize_mode == "none" and _plane_is_flat(x, H, W),
        DELTA_FLAT=_plane_is_flat(delta, H, W),
        MASK_FLAT=mask is not None and mask_scale == 1 and _plane_is_flat(mask, H, W),
        DELTA_PER_SAMPLE=delta.shape[0] > 1 and not o.bank, MASK_PER_SAMPLE=mask is not None and mask.shape[0] > 1,
        BLOCK=block_size(delta.dtype, delta.device), BANK=o.bank, V=delta.shape[0] if o.bank else 1,
    )


def _programs_per_sample(args: dict) -> int:
    return args["C"] * triton.cdiv(args["H"] * args["W"], args["BLOCK"])


def _launch(args: dict, chunks: int, num_warps: int = NUM_WARPS) -> Launch:
    """The launch of (bank entry, chunk, channel, block) programs; V is the launcher's, not a kernel argument."""
    programs = args.pop("V") * chunks * _programs_per_sample(args)
    args.update(chunks=chunks)
    return Launch(programs, args, num_warps)


def plan_forward(x, delta, mask, *op_args) -> tuple:
    """(out, Launch of masked_perturb_forward_kernel or None when out is empty); op_args as in the schema."""
    args = _shared_arguments(x, delta, mask, *op_args)
    out = torch.empty((args["V"] * args["B"], args["C"], args["H"], args["W"]), dtype=delta.dtype, device=delta.device)
    if out.numel() == 0:
        return out, None
    V = args.pop("V")
    _check(args["B"] < 2**30, f"the batch ({args['B']}) must be below 2^30 (the forward finds a chunk's samples in int32)")
    chunks, per_chunk = forward_chunks(args["B"], _programs_per_sample(args), delta.device, V)
    # MASK_GROUP: consecutive positions that share a mask cell (W and mask_scale multiples of it), a thread's
    # positions on GPUs (block_size): a per-sample mask is read once per group in the batch loop
    group = 16 // delta.dtype.itemsize
    if not args["MASK_PER_SAMPLE"] or args["W"] % group or args["mask_scale"] % group or args["BLOCK"] % group:
        group = 1
    # grid axis 0 = block t * V + bank entry v (_block_and_entry): the V programs of one block of x side by side
    tiles = triton.cdiv(args["H"] * args["W"], args["BLOCK"])
    _check(tiles * V < 2**31, f"{tiles} blocks x {V} bank entries exceed 2^31 - 1 (axis 0 of the forward's grid)")
    args.update(out_ptr=out, chunks=chunks, samples_per_chunk=per_chunk, V=V, MASK_GROUP=group)
    grid = (tiles * V, args["C"], chunks)
    return out, Launch(grid[0] * grid[1] * grid[2], args, NUM_WARPS, grid)


def plan_backward(grad_out, x, delta, mask, *op_args_needs_bank) -> tuple:
    """((grad_delta, grad_mask, grad_placed) buffers, Launch of masked_perturb_backward_kernel or None).
    Buffers not needed are None; the delta / mask buffers hold one row per chunk when shared by the batch,
    and every buffer one block of such rows per bank entry (V blocks; the delta's are [V, chunks] rows)."""
    *op_args, needs, bank = op_args_needs_bank
    args = _shared_arguments(x, delta, mask, *op_args, bank)
    B, C, H, W, V = args["B"], args["C"], args["H"], args["W"], args["V"]
    _check(tuple(grad_out.shape) == (V * B, C, H, W) and grad_out.dtype == delta.dtype,
           f"grad_out must be [{V * B}, {C}, {H}, {W}] of delta's dtype {delta.dtype}, "
           f"got {tuple(grad_out.shape)} {grad_out.dtype}")
    _check(len(needs) == 3, f"needs must have 3 entries, got {list(needs)}")
    stores_per_sample = bool(needs[2]) or (bool(needs[0]) and args["DELTA_PER_SAMPLE"]) or (
        bool(needs[1]) and args["MASK_PER_SAMPLE"])
    args.update(BLOCK=block_size(delta.dtype, delta.device, BACKWARD_NUM_WARPS),
                UNROLL=BACKWARD_UNROLL_STORING if stores_per_sample else BACKWARD_UNROLL)
    chunks = backward_chunks(B, C * H * W, _programs_per_sample(args), delta.device, delta.dtype.itemsize)
    acc = accumulation_dtype(delta.dtype)
    if B > 0 and V > 0 and cell_backward_applies(args, needs, mask):
        return _plan_cell_backward(grad_out, delta, mask, args, needs)

    if B == 0 or V == 0:  # zero gradients of delta's / mask's / x's batch size
        grads = (delta.new_zeros((delta.shape[0], C, H, W), dtype=acc) if needs[0] else None,
                 mask.new_zeros((mask.shape[0], C, H, W), dtype=acc) if needs[1] and mask is not None else None,
                 delta.new_zeros((B, C, H, W), dtype=acc) if needs[2] else None)
        return grads, None

    def buffer(need: bool, per_sample: bool):
        return delta.new_empty((V * (B if per_sample else chunks), C, H, W), dtype=acc) if need else None

    grads = (buffer(bool(needs[0]), args["DELTA_PER_SAMPLE"]),
             buffer(bool(needs[1]) and mask is not None, args["MASK_PER_SAMPLE"]),
             buffer(bool(needs[2]), True))
    args.update(grad_ptr=grad_out.contiguous(), grad_delta_ptr=grads[0], grad_mask_ptr=grads[1],
                grad_placed_ptr=grads[2])
    return grads, _launch(args, chunks, BACKWARD_NUM_WARPS)


def _plan_cell_backward(grad_out, delta, mask, args: dict, needs) -> tuple:
    """plan_backward's launch of masked_perturb_cell_backward_kernel: grad_delta [chunks, C, H, W] and grad_mask
    at mask resolution with the mask's channels [B or chunks, Cm, Hm, Wm] (per-sample / shared mask; a one-channel
    mask's summed over the C channels in the kernel); the batch chunks as backward_chunks() gives them for the
    kernel's programs (reduction_chunks() under the interpreter)."""
    B, C, H, W, s = args["B"], args["C"], args["H"], args["W"], args["mask_scale"]
    Hm, Wm = -(-H // s), -(-W // s)
    ch = summed_channels(C, mask)
    cells, SP, unroll, warps = cell_tile(s, Wm, delta.dtype.itemsize, _on_gpu(delta.device), ch)
    per_sample = cell_programs_per_sample(C, Hm, Wm, cells, ch)
    chunks = backward_chunks(B, C * H * W, per_sample * warps, delta.device, delta.dtype.itemsize)
    acc = accumulation_dtype(delta.dtype)
    gd = delta.new_empty((chunks, C, H, W), dtype=acc) if needs[0] else None
    gm = mask.new_empty((B if args["MASK_PER_SAMPLE"] else chunks, C // ch, Hm, Wm), dtype=acc)
    kernel_args = dict(
        grad_ptr=grad_out.contiguous(), delta_ptr=delta, mask_ptr=mask, norm_ptr=args["norm_ptr"], grad_delta_ptr=gd,
        grad_mask_ptr=gm, B=B, C=C, H=H, W=W, Hm=Hm, Wm=Wm, chunks=chunks,
        **{k: args[k] for k in ("sdc", "sdh", "sdw", "smb", "smc", "smh", "smw", "ACTIVATION", "NORM_AFTER",
                                "MASK_PER_SAMPLE")},
        S=s, SP=SP, CELLS=cells, UNROLL=unroll, CH=ch, CP=triton.next_power_of_2(ch))
    return (gd, gm, None), Launch(chunks * per_sample, kernel_args, warps, kernel=masked_perturb_cell_backward_kernel)


def _run(kernel, launch: Launch) -> None:
    grid = launch.grid or (launch.programs,)
    torch.library.wrap_triton(kernel)[grid](**launch.args, num_warps=launch.num_warps)


def masked_perturb_forward_triton(x: torch.Tensor, delta: torch.Tensor, mask: Optional[torch.Tensor], offsets,
                                  norm: torch.Tensor, resized_size, resize_mode: str, activation: str, blend: str,
                                  normalize: str, clamp, mask_scale: int, bank: bool = False) -> torch.Tensor:
    """The forward op (options.FORWARD_SCHEMA): out [B, C, H, W] ([V * B, C, H, W] for a bank) of delta's dtype
    (formula in triton_kernels.py)."""
    out, launch = plan_forward(x, delta, mask, offsets, norm, resized_size, resize_mode, activation, blend, normalize,
                               clamp, mask_scale, bank)
    if launch is not None:
        _run(masked_perturb_forward_kernel, launch)
    return out


def masked_perturb_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, delta: torch.Tensor,
                                   mask: Optional[torch.Tensor], offsets, norm: torch.Tensor, resized_size,
                                   resize_mode: str, activation: str, blend: str, normalize: str, clamp,
                                   mask_scale: int, needs, bank: bool = False) -> tuple:
    """The backward op (options.BACKWARD_SCHEMA): in the accumulation dtype (grad_delta [Bd, C, H, W],
    grad_mask at mask resolution with the mask's channels [Bm, Cm, ceil(H / s), ceil(W / s)] as the compiled op's,
    grad_placed [B, C, H, W]);
    an output not asked for by needs is an empty tensor."""
    grads, launch = plan_backward(grad_out, x, delta, mask, offsets, norm, resized_size, resize_mode, activation, blend,
                                  normalize, clamp, mask_scale, needs, bank)
    gd, gm, gp = grads
    if launch is not None:
        _run(launch.kernel or masked_perturb_backward_kernel, launch)
        V = delta.shape[0] if bank else 1  # bank entries
        if gd is not None and gd.shape[0] > V and not launch.args.get("DELTA_PER_SAMPLE", False):
            # chunk rows -> the batch sum (of each bank entry)
            gd = gd.sum(0, keepdim=True) if V == 1 else gd.view(V, -1, *gd.shape[1:]).sum(1)
        if gm is not None:
            if V > 1:  # the mask is shared by the bank entries
                gm = gm.view(V, -1, *gm.shape[1:]).sum(0)
            if mask.shape[0] == 1 and gm.shape[0] > 1:  # chunk rows -> the batch sum
                gm = gm.sum(0, keepdim=True)
        if gp is not None and V > 1:  # so is x
            gp = gp.view(V, -1, *gp.shape[1:]).sum(0)
    if gm is not None and mask_scale > 1 and (launch is None or launch.kernel is None):
        gm = mask_cell_sums(gm, mask_scale)  # the canvas-resolution partials of the general kernel
    if gm is not None:
        gm = sum_mask_channels(gm, mask)  # the mask's channels (no-op where the kernel summed them)
    acc = accumulation_dtype(delta.dtype)  # each output not asked for: its own empty tensor (outputs never alias)
    return tuple(delta.new_empty((0,), dtype=acc) if g is None else g for g in (gd, gm, gp))


def _define_op(name: str, schema: str, fn) -> None:
    """Defines op `name` running `fn`: a ``torch.library.triton_op`` (torch.compile sees the kernel launch
    and may fuse around it). Under TRITON_INTERPRET=1 the kernels are interpreted functions that
    ``wrap_triton`` cannot trace (tracing would run them on fake tensors), so the op is an opaque
    ``torch.library.custom_op`` with the same schema and body instead."""
    if isinstance(masked_perturb_forward_kernel, triton.runtime.JITFunction):
        torch.library.triton_op(name, mutates_args=(), schema=schema)(fn)
    else:
        torch.library.custom_op(name, mutates_args=(), schema=schema)(fn)


def _register_ops() -> None:
    """Defines the two ops and registers their fake kernels and autograd (shared with the C++ ops)."""
    _define_op(FORWARD_NAME, FORWARD_SCHEMA, masked_perturb_forward_triton)
    _define_op(BACKWARD_NAME, BACKWARD_SCHEMA, masked_perturb_backward_triton)
    register(FORWARD_NAME, BACKWARD_NAME)


# Registered when this module is first imported, i.e. on the first backend="triton" call (the
# package never imports it eagerly). Not inside forward_op(): torch.compile traces that function.
_register_ops()


def forward_op():
    """``torch.ops.reprogram_ext.masked_perturb_forward_triton`` (defined when this module is imported)."""
    return torch.ops.reprogram_ext.masked_perturb_forward_triton.default


def backward_op():
    """``torch.ops.reprogram_ext.masked_perturb_backward_triton`` (defined when this module is imported)."""
    return torch.ops.reprogram_ext.masked_perturb_backward_triton.default
