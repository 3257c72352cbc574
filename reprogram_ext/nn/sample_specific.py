"""SMM (Cai et al. 2024): a shared program gated by a mask that a small ConvNet predicts per sample."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layer_args import Size, check_input, init_program, norm_constants, spatial_size
from ..ops.masked_perturb import masked_perturb


def mask_network(channels: int, mask_channels: int, hidden: Sequence[int], mask_scale: int) -> nn.Sequential:
    """A light ConvNet mapping ``[B, channels, H, W]`` to a mask ``[B, mask_channels, ceil(H/f), ceil(W/f)]``.

    One block per width in ``hidden``: 3x3 conv, BatchNorm, ReLU; the first ``log2(f)`` blocks end
    with a 2x2 max-pool (``ceil_mode``, so odd sizes round up as ``ceil(H / f)`` does); a final 3x3
    conv gives the mask channels.
    """
    pools = mask_scale.bit_length() - 1
    layers, width = [], channels
    for i, h in enumerate(hidden):
        layers += [nn.Conv2d(width, h, 3, padding=1), nn.BatchNorm2d(h), nn.ReLU()]
        if i < pools:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        width = h
    layers.append(nn.Conv2d(width, mask_channels, 3, padding=1))
    return nn.Sequential(*layers)


class SampleSpecificMaskPrompt(nn.Module):
    """Sample-specific multi-channel masks (SMM): ``out = N(r(x)) + delta * up_f(f_mask(N(r(x))))``.

    ``r`` resizes the input to ``output_size`` (bilinear by default), ``N`` normalises with mean/std
    (skipped when they are not given), ``f_mask`` is a small ConvNet (``mask_network``) giving a mask
    at ``ceil(S / f)`` resolution for ``f = mask_scale`` (a power of two), optionally through a
    ``mask_activation`` (``"none"`` or ``"sigmoid"``), and ``up_f`` is patch-wise (nearest) upsampling:
    output position ``p`` reads mask position ``p // f``. ``delta [channels, *output_size]`` is shared
    by all samples. One ``masked_perturb(..., normalize="before", mask_scale=f)`` call computes it.

    Shapes: ``x [B, 1|channels, *input_size]`` -> ``[B, channels, *output_size]``.
    """

    MASK_ACTIVATIONS = ("none", "sigmoid")

    def __init__(
        self,
        input_size: Size,
        output_size: Size,
        *,
        channels: int = 3,
        mask_scale: int = 8,
        mask_channels: Optional[int] = None,
        hidden: Sequence[int] = (8, 16, 32, 64),
        mask_activation: str = "none",
        mean=None,
        std=None,
        resize_mode: str = "bilinear",
        init: str = "zeros",
        init_scale: float = 1.0,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = spatial_size(input_size, "input_size", name, 2)
        self.output_size = spatial_size(output_size, "output_size", name, 2)
        if isinstance(mask_scale, bool) or not isinstance(mask_scale, int) or mask_scale < 1 or mask_scale & (mask_scale - 1):
            raise ValueError(f"{name}: mask_scale must be a power of two (1, 2, 4, 8, ...), got {mask_scale!r}")
        pools = mask_scale.bit_length() - 1
        if len(hidden) < pools:
            raise ValueError(f"{name}: hidden needs at least log2(mask_scale)={pools} widths, got {tuple(hidden)}")
        mask_channels = channels if mask_channels is None else mask_channels
        if mask_channels not in (1, channels):
            raise ValueError(f"{name}: mask_channels must be 1 or channels={channels}, got {mask_channels}")
        if mask_activation not in self.MASK_ACTIVATIONS:
            raise ValueError(f"{name}: mask_activation must be one of {self.MASK_ACTIVATIONS}, got {mask_activation!r}")
        self.channels, self.mask_scale, self.mask_channels = channels, mask_scale, mask_channels
        self.mask_activation, self.resize_mode, self.backend = mask_activation, resize_mode, backend
        self.mean, self.std = norm_constants(mean, std, channels, name)
        self.delta = init_program((channels, *self.output_size), init, name, device=device, dtype=dtype, scale=init_scale)
        self.mask_net = mask_network(channels, mask_channels, tuple(hidden), mask_scale).to(device=device, dtype=dtype)

    def resized_input(self, x: torch.Tensor) -> torch.Tensor:
        """``N(r(x))``, the image the mask network sees (and the base of the output)."""
        w = self.mask_net[0].weight
        z = x.to(w.dtype) / 255 if x.dtype == torch.uint8 else x.to(w.dtype)
        if z.shape[1] != self.channels:
            z = z.expand(-1, self.channels, -1, -1)
        z = F.interpolate(z, size=self.output_size, mode=self.resize_mode,
                          align_corners=False if self.resize_mode == "bilinear" else None)
        if self.mean is not None:
            acc = torch.promote_types(z.dtype, torch.float32)  # float64 stays float64 (SPEC §1)
            mean = torch.tensor(self.mean, device=z.device, dtype=acc).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=z.device, dtype=acc).view(1, -1, 1, 1)
            z = ((z.to(acc) - mean) / std).to(w.dtype)
        return z

    def sample_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``f_mask(N(r(x)))``: ``[B, mask_channels, ceil(H/f), ceil(W/f)]``."""
        mask = self.mask_net(self.resized_input(x))
        return torch.sigmoid(mask) if self.mask_activation == "sigmoid" else mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size, type(self).__name__)
        normalize = "before" if self.mean is not None else "none"
        return masked_perturb(
            x, self.delta, self.sample_mask(x), resize=self.output_size, resize_mode=self.resize_mode, offset=(0, 0),
            normalize=normalize, mean=self.mean, std=self.std, mask_scale=self.mask_scale, backend=self.backend,
        )

    def extra_repr(self) -> str:
        norm = ", normalized" if self.mean is not None else ""
        return (f"input_size={self.input_size}, output_size={self.output_size}, channels={self.channels}, "
                f"mask_scale={self.mask_scale}, mask_channels={self.mask_channels}, "
                f"mask_activation={self.mask_activation!r}{norm}, backend={self.backend!r}")
