"""``EVPPrompt``: EVP's input transformation, ``N(pad(resize(flip(x))) + delta)`` with a border mask."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layer_args import Size, check_input, norm_constants, region_mask, register_mask, spatial_size
from ..ops.masked_perturb import masked_perturb

RESIZE_MODES = ("bicubic", "bilinear", "nearest")


class EVPPrompt(nn.Module):
    """EVP (Wu et al., TMLR 2024): ``out = N(pad(resize(flip(x), image_size)) + delta)`` on the canvas.

    - ``flip``: in training mode with ``flip=True`` each sample is mirrored left-right with
      probability 1/2 (EVP's input diversity, its ``RandomHorizontalFlip``; ``generator`` draws it);
      never in eval mode;
    - ``resize``: to ``image_size`` (``224 - 2·30 = 164`` in EVP), ``resize_mode`` as
      ``F.interpolate(align_corners=False)``; ``"bicubic"`` (EVP's) is computed by
      ``F.interpolate`` and clamped to ``[0, 1]`` (EVP resizes 8-bit images, whose values cannot
      leave that range), ``"bilinear"`` / ``"nearest"`` are fused into ``masked_perturb``;
    - ``pad``: zeros around the image, which starts at ``(out - image_size) // 2`` per dim (EVP's
      ``int((224 - image_size) / 2)``);
    - ``+ delta``: the program ``delta [C, *output_size]`` (zeros at the start; EVP's
      ``perturbation``), added over the WHOLE canvas as EVP's forward does. The buffer ``mask``
      (1 on a border ``prompt_size`` wide, 0 inside) is applied by EVP's update
      (``presets.EVPOptimizer``), which moves only the border, so that ``delta`` stays 0 inside and
      the sum equals ``pad(...) + delta ⊙ M``;
    - ``N``: ``(z - mean_c) / std_c`` with CLIP's constants in EVP (none without mean/std).

    Shapes: ``x [B, 1|channels, *input_size]`` -> ``[B, channels, *output_size]``.
    """

    def __init__(
        self,
        input_size: Size,
        image_size: Size = 164,
        output_size: Size = 224,
        *,
        prompt_size: int = 30,
        channels: int = 3,
        mean=None,
        std=None,
        resize_mode: str = "bicubic",
        flip: bool = True,
        generator: Optional[torch.Generator] = None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = spatial_size(input_size, "input_size", name, 2)
        self.image_size = spatial_size(image_size, "image_size", name, 2)
        self.output_size = spatial_size(output_size, "output_size", name, 2)
        if any(i > o for i, o in zip(self.image_size, self.output_size)):
            raise ValueError(f"{name}: image_size {self.image_size} must fit in output_size {self.output_size}")
        if isinstance(prompt_size, bool) or not isinstance(prompt_size, int) or not (
                0 <= 2 * prompt_size <= min(self.output_size)):
            raise ValueError(f"{name}: prompt_size must be an int in [0, {min(self.output_size) // 2}], "
                             f"got {prompt_size!r}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"{name}: resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if not isinstance(flip, bool):
            raise TypeError(f"{name}: flip must be a bool, got {flip!r}")
        self.offset = tuple((o - i) // 2 for o, i in zip(self.output_size, self.image_size))
        self.prompt_size, self.channels, self.resize_mode, self.flip = prompt_size, channels, resize_mode, flip
        self.mean, self.std = norm_constants(mean, std, channels, name)
        self.generator, self.backend = generator, backend
        self.delta = nn.Parameter(torch.zeros(channels, *self.output_size, device=device, dtype=dtype))
        p = prompt_size
        inner = tuple(o - 2 * p for o in self.output_size)
        register_mask(self, region_mask(self.output_size, [(p, p)], inner, 0.0, device=device), dtype)

    def _flipped(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.flip and self.training):
            return x
        draw = torch.rand(x.shape[0], generator=self.generator, device=getattr(self.generator, "device", None))
        mirrored = (draw < 0.5).to(x.device).view(-1, 1, 1, 1)
        return torch.where(mirrored, x.flip(-1), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size, type(self).__name__)
        x = self._flipped(x)
        resize = None if self.input_size == self.image_size else self.image_size
        if resize is not None and self.resize_mode == "bicubic":
            source = x if x.is_floating_point() else x.float() / 255
            x = F.interpolate(source, size=resize, mode="bicubic", align_corners=False).clamp(0, 1)
            resize = None
        return masked_perturb(x, self.delta, None, resize=resize, resize_mode=self.resize_mode, offset=self.offset,
                              normalize="after", mean=self.mean, std=self.std, backend=self.backend)

    def extra_repr(self) -> str:
        norm = ", normalized" if self.mean is not None else ""
        return (f"input_size={self.input_size}, image_size={self.image_size}, output_size={self.output_size}, "
                f"offset={self.offset}, prompt_size={self.prompt_size}, resize_mode={self.resize_mode!r}, "
                f"flip={self.flip}, channels={self.channels}{norm}, backend={self.backend!r}")
