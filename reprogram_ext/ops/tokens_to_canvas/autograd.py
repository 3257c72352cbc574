"""Fake (meta) kernels of the tokens_to_canvas ops and their autograd (compiled and Triton ops).

The backward op returns, in the accumulation dtype (float32; float64 for float64 tables):
  grad_table   [V, C, Ph, Pw]: row t = patch_weight_c * act'(table[t]) * (the sum, over the cells
               holding t in ascending (b, g) order, of the gradient at v under that cell);
  grad_program [Bp, C, H, W]:  m * act'(program) * (gradient at v), summed over the batch in
               ascending b when Bp == 1;
  grad_base    [Bb, C, H, W]:  base_weight_c * (gradient at v), likewise;
where the gradient at v is grad_out / std_c (normalize="after") where the clamp passed v, else 0.
An output not asked for by needs = [table, program, base] is an empty tensor. Here the channel
sum of a one-channel program or base is taken (aten) and each gradient cast to its input's dtype.
The backward is not differentiable: with create_graph=True it raises.
"""
from __future__ import annotations

import torch

from .args import accumulation_dtype

NO_DOUBLE_BACKWARD = ("tokens_to_canvas: higher-order gradients are not supported (the backward was asked to "
                      "build a graph, create_graph=True); use backend=\"reference\" for double backward")


def _fake_forward(cells, table, program, program_mask, base, norm, geometry, canvas, *options):
    return table.new_empty((cells.shape[0], table.shape[1], canvas[0], canvas[1]))


def _fake_backward(grad_out, cells, table, program, program_mask, base, norm, geometry, canvas, activation,
                   normalize, clamp, needs):
    acc = dict(dtype=accumulation_dtype(table.dtype), device=grad_out.device)
    C, (H, W) = table.shape[1], canvas
    empty = grad_out.new_empty((0,), **acc)
    gt = grad_out.new_empty(table.shape, **acc) if needs[0] else empty
    gp = grad_out.new_empty((program.shape[0], C, H, W), **acc) if needs[1] and program is not None else empty
    gb = grad_out.new_empty((base.shape[0], C, H, W), **acc) if needs[2] and base is not None else empty
    return gt, gp, gb


def _setup_context(ctx, inputs, output):
    cells, table, program, program_mask, base, *op_args = inputs
    ctx.options = tuple(op_args[1:])  # geometry, canvas, activation, normalize, clamp
    ctx.save_for_backward(cells, table, program, program_mask, base, op_args[0])


def _channel_sum(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return (g.sum(1, keepdim=True) if like.shape[1] == 1 and g.shape[1] != 1 else g).to(like.dtype)


def make_backward(backward_op):
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: the backward op is not differentiable
            raise RuntimeError(NO_DOUBLE_BACKWARD)
        cells, table, program, program_mask, base, norm = ctx.saved_tensors
        needs = [ctx.needs_input_grad[1], program is not None and ctx.needs_input_grad[2],
                 base is not None and ctx.needs_input_grad[4]]
        gt, gp, gb = backward_op(grad_out.contiguous(), cells, table, program, program_mask, base, norm,
                                 *ctx.options, needs)
        return (None, gt.to(table.dtype) if needs[0] else None, _channel_sum(gp, program) if needs[1] else None,
                None, _channel_sum(gb, base) if needs[2] else None) + (None,) * 6

    return backward


def register(forward_name: str, backward_name: str) -> None:
    """Fake kernels and autograd of a (forward, backward) pair of tokens_to_canvas ops (qualified names)."""
    torch.library.register_fake(forward_name)(_fake_forward)
    torch.library.register_fake(backward_name)(_fake_backward)
    backward_op = getattr(torch.ops.reprogram_ext, backward_name.split("::")[1])
    torch.library.register_autograd(forward_name, make_backward(backward_op), setup_context=_setup_context)


def register_compiled() -> None:
    """Fake kernels and autograd of the compiled (C++ / CUDA) ops (none when the library was built without them)."""
    from ... import _extension

    if not any(_extension.has_kernel("tokens_to_canvas_forward", key) for key in ("CPU", "CUDA")):
        return
    register("reprogram_ext::tokens_to_canvas_forward", "reprogram_ext::tokens_to_canvas_backward")
