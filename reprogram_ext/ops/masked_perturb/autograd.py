"""Fake (meta) kernels of the masked_perturb ops, and the Triton op's autograd.

The compiled (C++ / CUDA) op's autograd is csrc/masked_perturb/autograd.cpp, which follows the
same contract in C++: the Triton backend must work without the C++ build, so the gradient
reductions below exist once in Python (Triton) and once in C++ (compiled ops).

The backward is made of registered ops only: ``masked_perturb_backward`` (or its Triton twin)
returns canvas-resolution partials in the accumulation dtype (float64 for float64 tensors, else
float32; a prompt bank's summed over the V programs where the input is shared by them), except the
mask gradient, which is at mask resolution with the mask's channels, ``[Bm, Cm, ceil(H/s), ceil(W/s)]``
(each cell already the sum over its s x s footprint; a one-channel mask's, Cm = 1, already summed over the
canvas channels, in channel order from channel 0) from both ops. Plain aten ops reduce them to each input's
shape:
  grad_delta: summed over channels when delta has one channel;
  grad_mask : summed over broadcast spatial dims (reduce_mask_grad);
  grad_x    : the placed-input gradient cropped back from each copy (adjoint of F.pad) and added,
              summed over channels for grey input, then through the adjoint of the resize.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import PerturbOptions
from .reference import copy_visible


def _canvas_channels(x, delta):
    return delta.shape[1] if delta.shape[1] != 1 else x.shape[1]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute, normalise and accumulate in (and return gradient partials in)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_forward(x, delta, mask, offsets, norm, resized_size, resize_mode, activation, blend, normalize, clamp,
                  mask_scale, bank=False):
    rows = x.shape[0] * (delta.shape[0] if bank else 1)
    return delta.new_empty((rows, _canvas_channels(x, delta), delta.shape[2], delta.shape[3]))


def _fake_backward(grad_out, x, delta, mask, offsets, norm, resized_size, resize_mode, activation, blend, normalize,
                   clamp, mask_scale, needs, bank=False, mask_at_mask_resolution=False):
    C, H, W = grad_out.shape[1:]
    acc = dict(dtype=accumulation_dtype(delta.dtype), device=grad_out.device)
    mask_hw = (-(-H // mask_scale), -(-W // mask_scale)) if mask_at_mask_resolution else (H, W)
    gd = grad_out.new_empty((delta.shape[0], C, H, W), **acc) if needs[0] else grad_out.new_empty((0,), **acc)
    gm = (grad_out.new_empty((mask.shape[0], mask_channels(mask, C), *mask_hw), **acc)
          if needs[1] and mask is not None
          else grad_out.new_empty((0,), **acc))
    gp = grad_out.new_empty((x.shape[0], C, H, W), **acc) if needs[2] else grad_out.new_empty((0,), **acc)
    return gd, gm, gp


def mask_channels(mask: torch.Tensor, C: int) -> int:
    """Channels of the backward ops' mask gradient: the mask's own (1, or the canvas's C)."""
    return 1 if mask.shape[1] == 1 else C


def sum_mask_channels(gm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, C, ...] mask gradient -> the mask's channels: for a one-channel mask, gm[:, 0] + gm[:, 1] + ... +
    gm[:, C - 1] added in channel order from channel 0 (the order of the fused cell kernels and of the C++ ops'
    sum_channels_in_order, args.h: the same bits); unchanged otherwise."""
    if mask.shape[1] != 1 or gm.dim() != 4 or gm.shape[1] == 1:
        return gm
    total = gm[:, :1]
    for c in range(1, gm.shape[1]):
        total = total + gm[:, c:c + 1]
    return total.contiguous()


def _fake_backward_compiled(*args, **kwargs):
    """The compiled (C++ / CUDA) op's: its mask gradient is at mask resolution."""
    return _fake_backward(*args, **kwargs, mask_at_mask_resolution=True)


def mask_cell_sums(gm: torch.Tensor, mask_scale: int) -> torch.Tensor:
    """[Bm, C, H, W] canvas-resolution mask gradient -> mask resolution [Bm, C, ceil(H / s), ceil(W / s)]: the sum
    over each cell's s x s footprint (one pass over the canvas-size partials; zero padding only when s does not
    divide the canvas)."""
    s = mask_scale
    if s > 1:
        H, W = gm.shape[-2:]
        Hm, Wm = -(-H // s), -(-W // s)
        if (Hm * s, Wm * s) != (H, W):
            gm = F.pad(gm, [0, Wm * s - W, 0, Hm * s - H])
        gm = gm.reshape(*gm.shape[:2], Hm, s, Wm, s).sum((3, 5))
    return gm


def reduce_mask_grad(gm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mask-resolution mask gradient [Bm, Cm, Hm, Wm] (the backward ops' output, already with the mask's
    channels) -> mask's own shape [Bm, Cm, Hm?, Wm?]: the sums over the broadcast spatial dims."""
    if mask.shape[2] == 1 and gm.shape[2] != 1:
        gm = gm.sum(2, keepdim=True)
    if mask.shape[3] == 1 and gm.shape[3] != 1:
        gm = gm.sum(3, keepdim=True)
    return gm


def reduce_input_grad(gp: torch.Tensor, x: torch.Tensor, options: PerturbOptions):
    """Placed-input gradient [B, C, H, W] -> gradient of x [B, Cx, Hin, Win]."""
    hr, wr = options.resized_size
    H, W = gp.shape[-2:]
    g = gp.new_zeros((gp.shape[0], gp.shape[1], hr, wr))
    for oy, ox in options.offsets:
        if not copy_visible((oy, ox), (hr, wr), (H, W)):
            continue  # adjoint of F.pad(X, (ox, W-ox-wr, oy, H-oy-hr)) is the opposite pad
        part = F.pad(gp, [-ox, -(W - ox - wr), -oy, -(H - oy - hr)])
        g = g + part
    if x.shape[1] == 1 and g.shape[1] != 1:
        g = g.sum(1, keepdim=True)
    if options.resize_mode == "nearest":
        g = torch.ops.aten.upsample_nearest2d_backward(g.contiguous(), [hr, wr], list(x.shape), None, None)
    elif options.resize_mode == "bilinear":
        g = torch.ops.aten.upsample_bilinear2d_backward(g.contiguous(), [hr, wr], list(x.shape), False, None, None)
    return g


def _setup_context(ctx, inputs, output):
    x, delta, mask, *op_args = inputs  # the options, then bank
    ctx.options = PerturbOptions.from_op_args(*op_args)
    ctx.num_op_args = len(op_args)
    ctx.save_for_backward(x, delta, mask, op_args[1])  # norm


NO_DOUBLE_BACKWARD = ("masked_perturb: higher-order gradients are not supported (the backward was asked to build "
                      "a graph, create_graph=True); use backend=\"reference\" for double backward")


def make_backward(backward_op):
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: the backward op is not differentiable
            raise RuntimeError(NO_DOUBLE_BACKWARD)
        x, delta, mask, norm = ctx.saved_tensors
        options = ctx.options
        need_x = ctx.needs_input_grad[0] and x.is_floating_point()
        need_mask = mask is not None and ctx.needs_input_grad[2]
        needs = [ctx.needs_input_grad[1], need_mask, need_x]
        gd, gm, gp = backward_op(grad_out.contiguous(), x, delta, mask, *options.backward_args(norm, needs))
        grad_delta = grad_mask = grad_x = None
        if needs[0]:
            grad_delta = (gd.sum(1, keepdim=True) if delta.shape[1] == 1 and gd.shape[1] != 1 else gd).to(delta.dtype)
        if needs[1]:
            grad_mask = reduce_mask_grad(gm, mask).to(mask.dtype)
        if needs[2]:
            grad_x = reduce_input_grad(gp, x, options).to(x.dtype)
        return (grad_x, grad_delta, grad_mask) + (None,) * ctx.num_op_args

    return backward


def register_fakes(forward_name: str, backward_name: str, mask_at_mask_resolution: bool = False) -> None:
    """Fake kernels of a (forward, backward) pair of masked_perturb ops."""
    torch.library.register_fake(forward_name)(_fake_forward)
    torch.library.register_fake(backward_name)(_fake_backward_compiled if mask_at_mask_resolution else _fake_backward)


def register(forward_name: str, backward_name: str) -> None:
    """Register fake kernels and autograd for a (forward, backward) pair of masked_perturb ops (Triton; its
    backward returns the mask gradient at mask resolution, as the compiled op's)."""
    register_fakes(forward_name, backward_name, mask_at_mask_resolution=True)
    backward_op = getattr(torch.ops.reprogram_ext, backward_name.split("::")[1])
    torch.library.register_autograd(forward_name, make_backward(backward_op), setup_context=_setup_context)


def register_compiled() -> None:
    """Fake kernels of the compiled (C++ / CUDA) ops. Their autograd is registered in C++
    (csrc/masked_perturb/autograd.cpp, the same contract as ``register``): the prompt runs once per
    step, often on a small batch, where this module's Python wrapper cost as much as the kernels."""
    register_fakes("reprogram_ext::masked_perturb_forward", "reprogram_ext::masked_perturb_backward",
                   mask_at_mask_resolution=True)
