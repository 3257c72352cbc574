"""AutoVP's learned input scale (its ``Trainable_Resize``): a centred bilinear warp with a trainable ``scale``.

IBM/AutoVP pads the ``h x w`` input into the ``H x W`` canvas at ``int((H - h + 1) / 2)`` (the same
offset ``PaddingPrompt`` uses), then scales the padded canvas about its centre with
``kornia.geometry.transform.scale`` (bilinear, ``align_corners=True``, zeros outside): output pixel
``p`` reads the padded canvas at ``c + (p - c) / s``, ``c = (H - 1) / 2``, i.e. ``affine_grid`` with
``theta = diag(1/s, 1/s)`` and ``grid_sample``. The prompt is added after the warp, on a mask that
is 0 over a centred window of ``r = min(int(h·s), H)`` rows starting at ``(H - r) // 2`` (AutoVP's
``redefind_mask``; the window does not move with the learned scale's gradient, only with its value).

The warp is separable: ``warp(x) = R_y(s) · x · R_x(s)ᵀ`` with ``R`` holding the two bilinear weights
of each output row (columns outside the image are the zero padding and are dropped, and so are the
output rows that reach no image pixel), so it costs two small matrix products on the image's own
footprint instead of a ``grid_sample`` over the whole canvas; ``masked_perturb`` places that block
in the canvas (zeros around it) while it adds the prompt, and the block's gradient is read from the
canvas gradient at the block's size (``_BlockGradient``). Autograd gives ``d/ds`` through the
weights (the same piecewise-linear derivative ``grid_sample`` has).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .layer_args import Size, check_input, init_program, norm_constants, region_mask, settings_repr, spatial_size
from ..ops.masked_perturb import masked_perturb


def warp_rows(scale: torch.Tensor, out: int, size: int, offset: int) -> Tuple[torch.Tensor, int]:
    """The bilinear weights of the centred warp along one axis (align_corners=True, zeros outside).

    Output index ``p`` samples the padded axis at ``src = (u / s + 1) / 2 · (out - 1)`` with
    ``u = linspace(-1, 1, out)[p]`` (``affine_grid`` then ``grid_sample``); the image's own index is
    ``src - offset``, with weights ``1 - frac`` and ``frac`` on ``floor(src)`` and ``floor(src) + 1``.
    Only the output indices that reach the image can be non-zero; they are contiguous (``src`` grows
    with ``p``). Returns ``(R [n_rows, size], first_row)``: the weights of those rows and where they start.
    """
    u = torch.linspace(-1.0, 1.0, out, device=scale.device, dtype=scale.dtype)
    src = (u * (1.0 / scale) + 1.0) * 0.5 * (out - 1)
    lo = torch.floor(src.detach()) - offset  # image index of the first tap
    reach = ((lo >= -1) & (lo <= size - 1)).nonzero().flatten().tolist()
    first, last = reach[0], reach[-1] + 1  # the centre always lands on the image: never empty
    lo, frac = lo[first:last], (src - torch.floor(src.detach()))[first:last]
    cols = torch.arange(size, device=scale.device, dtype=scale.dtype)
    taps = (cols == lo.unsqueeze(1)).to(scale.dtype), (cols == (lo + 1).unsqueeze(1)).to(scale.dtype)
    return (1.0 - frac).unsqueeze(1) * taps[0] + frac.unsqueeze(1) * taps[1], first


def centre_warp(x: torch.Tensor, scale: torch.Tensor, output_size: Tuple[int, int]):
    """``kornia``-style ``scale(pad(x), s)`` of ``x [B, C, h, w]`` into the ``output_size`` canvas.

    Returns ``(block, origin)``: the warped image's non-zero block ``R_y · x · R_xᵀ`` and its place
    ``(row, col)`` in the canvas (everything else is 0), ready for ``masked_perturb(offset=origin)``.
    """
    (H, W), (h, w) = output_size, x.shape[-2:]
    ry, top = warp_rows(scale, H, h, (H - h + 1) // 2)
    rx, left = (ry, top) if (W, w) == (H, h) else warp_rows(scale, W, w, (W - w + 1) // 2)
    lead = x.shape[:-2]
    cols = (x.reshape(-1, w) @ rx.t()).view(-1, h, rx.shape[0])  # x · R_xᵀ: one GEMM over every row
    block = (cols.transpose(1, 2).reshape(-1, h) @ ry.t()).view(-1, rx.shape[0], ry.shape[0])  # (R_y · ...)ᵀ
    return block.transpose(1, 2).reshape(*lead, ry.shape[0], rx.shape[0]), (top, left)


class _BlockGradient(torch.autograd.Function):
    """``out`` unchanged, and the gradient of the placed ``block`` it was computed from.

    ``out = N(place(block) + m·act(δ))`` is affine in the block with slope ``1 / std_c``
    (normalisation after, additive blend, no clamp), so ``∂L/∂block = g[window] / std_c`` (summed
    over channels for a grey block): read from the canvas gradient at the block's own size, where
    ``masked_perturb``'s input gradient would write a canvas-size partial first.
    """

    @staticmethod
    def forward(ctx, out, block, top, left, inv_std):
        ctx.window = (top, left, block.shape[-2], block.shape[-1])
        ctx.grey = block.shape[1] == 1 and out.shape[1] != 1
        ctx.save_for_backward(inv_std)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        (inv_std,) = ctx.saved_tensors
        top, left, h, w = ctx.window
        g = grad[..., top:top + h, left:left + w] * inv_std
        return grad, (g.sum(1, keepdim=True) if ctx.grey else g), None, None, None


class TrainableResizePrompt(nn.Module):
    """AutoVP with a learned input scale: ``out = N(warp_s(pad(x)) + act(delta) ⊙ M_s)``.

    ``warp_s`` is AutoVP's ``Trainable_Resize`` (module docstring), ``scale`` a trainable scalar
    Parameter (initial value ``scale``), ``M_s`` AutoVP's mask: 1 except a centred window of
    ``min(int(h·s), H) x min(int(w·s), W)`` starting at ``(H - r) // 2``, rebuilt from the current
    value of ``scale`` at each forward. ``act`` = ``activation`` (AutoVP: sigmoid; its CLIP variant
    uses none), ``N`` the per-channel normalisation with mean/std (none when not given). The prompt
    add and normalisation are one ``masked_perturb`` call that also places the warped block.

    Shapes: ``x [B, 1|channels, *input_size]`` (float) -> ``[B, channels, *output_size]``.
    """

    def __init__(self, input_size: Size, output_size: Size, *, scale: float = 1.0, channels: int = 3,
                 activation: str = "sigmoid", mean=None, std=None, init: str = "zeros", init_scale: float = 1.0,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = spatial_size(input_size, "input_size", name, 2)
        self.output_size = spatial_size(output_size, "output_size", name, 2)
        if any(i > o for i, o in zip(self.input_size, self.output_size)):
            raise ValueError(f"{name}: input_size {self.input_size} must fit in output_size {self.output_size}")
        if not (isinstance(scale, (int, float)) and scale > 0 and scale != float("inf")):
            raise ValueError(f"{name}: scale must be a positive finite number, got {scale!r}")
        self.channels, self.activation, self.backend = channels, activation, backend
        self.mean, self.std = norm_constants(mean, std, channels, name)
        self.scale = nn.Parameter(torch.tensor(float(scale), device=device, dtype=dtype))
        self.delta = init_program((channels, *self.output_size), init, name, device=device, dtype=dtype,
                                  scale=init_scale)
        self._mask_key, self._mask = None, None  # current_mask()'s cache (derived state, not saved)

    def placed_size(self) -> Tuple[int, int]:
        """AutoVP's image window ``min(int(h·s), H) x min(int(w·s), W)`` at the current scale."""
        s = self.scale.detach()
        return tuple(min(int(n * s), o) for n, o in zip(self.input_size, self.output_size))

    def current_mask(self) -> torch.Tensor:
        """``[1, H, W]``: 0 over the ``placed_size()`` window at ``(H - r) // 2``, 1 elsewhere (rebuilt
        only when the window, the device or the dtype changes)."""
        key = (self.placed_size(), self.delta.device, self.delta.dtype)
        if self._mask_key != key:
            r = key[0]
            origin = tuple((o - n) // 2 for o, n in zip(self.output_size, r))
            self._mask = region_mask(self.output_size, [origin], r, 0.0, device=key[1]).to(key[2])
            self._mask_key = key
        return self._mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_input(x, self.input_size, name)
        if not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating tensor (the warp is bilinear), got {x.dtype}")
        block, (top, left) = centre_warp(x.to(self.scale.dtype), self.scale, self.output_size)
        out = masked_perturb(block.detach(), self.delta, self.current_mask(), out_size=self.output_size,
                             offset=(top, left), activation=self.activation, normalize="after", mean=self.mean,
                             std=self.std, backend=self.backend)
        if not block.requires_grad:
            return out
        inv_std = torch.tensor([1.0 / s for s in (self.std or (1.0,))], device=out.device, dtype=out.dtype)
        return _BlockGradient.apply(out, block, top, left, inv_std.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, output_size={self.output_size}, scale={float(self.scale):.4g}, "
                + settings_repr(self, normalized=self.mean is not None))
