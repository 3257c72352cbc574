"""Triton backend of tokens_to_canvas: the ops ``reprogram_ext::tokens_to_canvas_forward_triton`` and
``reprogram_ext::tokens_to_canvas_backward_triton``, with the schemas and results of the C++ ops
(options.py, csrc/schemas.cpp). Kernels and formula: ``triton_kernels.py``.

The backward's table gradient is a segmented reduction: the launcher sorts the flat cells by token
(``torch.sort(stable=True)``: ascending (b, g) within a token) and finds each token's range from a
``bincount``; one program per (token, channel) sums its cells in that order (no atomics).

Defined when this module is first imported (on the first ``backend="triton"`` call: TRITON_INTERPRET
must be set before triton's import). CUDA tensors, and CPU tensors under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton

from .autograd import register
from .backends import INDEX_LIMIT
from .options import ACTIVATIONS, BACKWARD_SCHEMA, FORWARD_SCHEMA, NORMALIZE
from .triton_kernels import (tokens_to_canvas_canvas_grad_kernel, tokens_to_canvas_forward_kernel,
                             tokens_to_canvas_table_grad_kernel)

FORWARD_NAME = "reprogram_ext::tokens_to_canvas_forward_triton"
BACKWARD_NAME = "reprogram_ext::tokens_to_canvas_backward_triton"
NUM_WARPS = 4
INTERPRETER_BLOCK = 4096  # the interpreter runs programs one after another: fewer, larger ones


def _check(cond: bool, message: str, error=ValueError) -> None:
    if not cond:
        raise error(f"tokens_to_canvas (triton): {message}")


def _block(device: torch.device) -> int:
    return NUM_WARPS * 32 * 4 if device.type != "cpu" else INTERPRETER_BLOCK


def _arguments(cells, table, program, program_mask, base, norm, geometry, canvas, activation, normalize,
               clamp) -> dict:
    """The canonical-form guards of csrc/tokens_to_canvas/options.h, and the kernels' shared arguments."""
    _check(cells.dim() == 2 and cells.dtype == torch.int64 and cells.is_contiguous(),
           f"cells must be a contiguous int64 [B, G] tensor, got {cells.dtype} {tuple(cells.shape)}")
    _check(table.dim() == 4 and table.is_contiguous() and table.is_floating_point(),
           f"table must be a contiguous floating [V, C, Ph, Pw] tensor, got {tuple(table.shape)}")
    if table.device.type not in ("cuda", "meta"):
        _check(os.environ.get("TRITON_INTERPRET") == "1",
               f"tensors on {table.device} need TRITON_INTERPRET=1 (the Triton interpreter), or use CUDA tensors",
               RuntimeError)
    _check(len(geometry) == 4 and len(canvas) == 2, "geometry must be (Gh, Gw, oy, ox) and canvas (H, W)")
    B, G = cells.shape
    V, C, Ph, Pw = table.shape
    Gh, Gw, oy, ox = geometry
    H, W = canvas
    _check(Gh * Gw == G and oy >= 0 and ox >= 0 and oy + Gh * Ph <= H and ox + Gw * Pw <= W,
           f"the grid {Gh} x {Gw} at ({oy}, {ox}) does not fit the canvas {H} x {W} or cells [{B}, {G}]")
    _check(B * C * H * W < INDEX_LIMIT and table.numel() < INDEX_LIMIT, "tensors of 2^31 elements or more")
    sizes = {}
    for name, t in (("program", program), ("program_mask", program_mask), ("base", base)):
        if t is not None:
            _check(t.dim() == 4 and t.shape[0] in (1, B) and t.shape[1] in (1, C) and tuple(t.shape[2:]) == (H, W)
                   and t.dtype == table.dtype and t.is_contiguous(),
                   f"{name} must be a contiguous [1|{B}, 1|{C}, {H}, {W}] tensor of table's dtype")
        sizes[name] = (t.shape[0], t.shape[1]) if t is not None else (1, 1)
    _check(program_mask is None or program is not None, "program_mask needs a program")
    _check(activation in ACTIVATIONS, f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    _check(normalize in NORMALIZE, f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    acc = torch.float64 if table.dtype == torch.float64 else torch.float32
    _check(norm.dtype == acc and tuple(norm.shape) == (4, C) and norm.is_contiguous(),
           f"norm must be a contiguous [4, {C}] tensor of {acc}")
    lo, hi = (float(clamp[0]), float(clamp[1])) if clamp is not None else (0.0, 0.0)
    return dict(cells_ptr=cells, table_ptr=table, program_ptr=program, mask_ptr=program_mask, base_ptr=base,
                norm_ptr=norm, C=C, V=V, G=G, Ph=Ph, Pw=Pw, Gh=Gh, Gw=Gw, oy=oy, ox=ox, H=H, W=W,
                Bp=sizes["program"][0], Cp=sizes["program"][1], Bm=sizes["program_mask"][0],
                Cm=sizes["program_mask"][1], Bb=sizes["base"][0], Cb=sizes["base"][1], clamp_lo=lo, clamp_hi=hi,
                ACTIVATION=activation, HAS_CLAMP=clamp is not None, NORMALIZE=normalize == "after")


def _run(kernel, programs: int, args: dict) -> None:
    torch.library.wrap_triton(kernel)[(programs,)](**args, num_warps=NUM_WARPS)


def tokens_to_canvas_forward_triton(cells, table, program, program_mask, base, *op_args) -> torch.Tensor:
    """The forward op (options.FORWARD_SCHEMA): out [B, C, H, W] of table's dtype."""
    args = _arguments(cells, table, program, program_mask, base, *op_args)
    B, C, H, W = cells.shape[0], table.shape[1], args["H"], args["W"]
    out = torch.empty((B, C, H, W), dtype=table.dtype, device=table.device)
    if out.numel():
        block = _block(table.device)
        args.update(out_ptr=out, BLOCK=block)
        _run(tokens_to_canvas_forward_kernel, B * C * triton.cdiv(H * W, block), args)
    return out


def token_groups(cells: torch.Tensor, V: int):
    """(order, start): the flat cells sorted by token (stable: ascending (b, g) within a token) and each
    token's first position in that order, start [V + 1]."""
    flat = cells.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=V)
    start = torch.zeros(V + 1, dtype=torch.int64, device=cells.device)
    start[1:] = torch.cumsum(counts, 0)
    return order, start


def tokens_to_canvas_backward_triton(grad_out, cells, table, program, program_mask, base, *op_args_and_needs):
    """The backward op (options.BACKWARD_SCHEMA): (grad_table [V, C, Ph, Pw], grad_program [Bp, C, H, W],
    grad_base [Bb, C, H, W]) in the accumulation dtype; an output not asked for by needs is empty."""
    *op_args, needs = op_args_and_needs
    args = _arguments(cells, table, program, program_mask, base, *op_args)
    B, V, C, H, W = cells.shape[0], table.shape[0], table.shape[1], args["H"], args["W"]
    _check(tuple(grad_out.shape) == (B, C, H, W) and grad_out.dtype == table.dtype,
           f"grad_out must be [{B}, {C}, {H}, {W}] of table's dtype")
    grad_out = grad_out.contiguous()
    acc = torch.float64 if table.dtype == torch.float64 else torch.float32
    def empty():
        return table.new_empty((0,), dtype=acc)  # one tensor per output: outputs may not alias

    need_p, need_b = bool(needs[1]) and program is not None, bool(needs[2]) and base is not None
    gt = table.new_zeros(table.shape, dtype=acc) if needs[0] else empty()
    gp = table.new_zeros((program.shape[0], C, H, W), dtype=acc) if need_p else empty()
    gb = table.new_zeros((base.shape[0], C, H, W), dtype=acc) if need_b else empty()
    if B == 0:
        return gt, gp, gb
    if needs[0]:
        order, start = token_groups(cells, V)
        pblock = triton.next_power_of_2(args["Ph"] * args["Pw"])
        _run(tokens_to_canvas_table_grad_kernel, V * C,
             dict(args, grad_ptr=grad_out, order_ptr=order, start_ptr=start, grad_table_ptr=gt, PBLOCK=pblock))
    if need_p or need_b:
        block = _block(table.device)
        _run(tokens_to_canvas_canvas_grad_kernel, C * triton.cdiv(H * W, block),
             dict(args, grad_ptr=grad_out, grad_program_ptr=gp if need_p else None,
                  grad_base_ptr=gb if need_b else None, B=B, BLOCK=block))
    return gt, gp, gb


def _define_op(name: str, schema: str, fn) -> None:
    """A ``torch.library.triton_op`` (torch.compile sees the launches); under TRITON_INTERPRET=1 an opaque
    ``torch.library.custom_op`` with the same schema (interpreted kernels cannot be traced)."""
    if isinstance(tokens_to_canvas_forward_kernel, triton.runtime.JITFunction):
        torch.library.triton_op(name, mutates_args=(), schema=schema)(fn)
    else:
        torch.library.custom_op(name, mutates_args=(), schema=schema)(fn)


def _register_ops() -> None:
    _define_op(FORWARD_NAME, FORWARD_SCHEMA, tokens_to_canvas_forward_triton)
    _define_op(BACKWARD_NAME, BACKWARD_SCHEMA, tokens_to_canvas_backward_triton)
    register(FORWARD_NAME, BACKWARD_NAME)


_register_ops()


def forward_op():
    """``torch.ops.reprogram_ext.tokens_to_canvas_forward_triton`` (defined when this module is imported)."""
    return torch.ops.reprogram_ext.tokens_to_canvas_forward_triton.default
