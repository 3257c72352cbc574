"""Chen, Fan and Ye 2021, "Adversarial Reprogramming of Pretrained Neural Networks for Fraud
Detection" (CIKM 2021): tabular transaction features overlaid on an image read by a frozen image
classifier.

No public implementation was found (searched the stored GitHub index and web pages), so this
preset follows the paper's idea as our SPEC states it — the transaction's features drawn on an
image through ``tokens_to_canvas`` — with these choices of ours, each a parameter:
- each feature ``f`` (scaled to [0, 1] by the caller) is quantised into ``bins`` levels, and the
  token of feature ``f`` at level ``q`` is ``f * bins + q``: the table holds one learned patch per
  (feature, level), ``tanh``-activated;
- the ``F`` feature cells fill a ``grid`` (default: the smallest square holding F cells; cells past
  the last feature repeat it) of ``patch_size``² cells centred on the canvas;
- they are overlaid on a base image (default: mid-grey 0.5) with weight ``alpha``; a trainable
  program ``tanh(W)`` covers the canvas outside the grid (the adversarial program around the overlay);
- clamp to [0, 1] in pixel space, then normalise with the source model's mean/std;
- output mapping: the first ``k`` source classes per target, averaged (``identity``); the loss
  is the cross-entropy on the mapped logits.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..nn.label_mapping import LabelMapping
from ..nn.token_canvas import TokenCanvasPrompt

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureTokens(nn.Module):
    """Tabular features ``x [B, F]`` in [0, 1] -> tokens ``f * bins + round(x_f * (bins - 1))`` (clamped)."""

    def __init__(self, num_features: int, bins: int) -> None:
        super().__init__()
        self.num_features, self.bins = num_features, bins
        self.register_buffer("first_token", torch.arange(num_features) * bins, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"chen2021: features must be [B, F={self.num_features}], got {list(x.shape)}")
        level = torch.round(x.clamp(0, 1) * (self.bins - 1)).long()
        return self.first_token + level


class FeatureCanvasPrompt(nn.Module):
    """``tokens = FeatureTokens(x)`` then ``TokenCanvasPrompt`` (attributes ``.tokens``, ``.canvas``)."""

    def __init__(self, tokens: FeatureTokens, canvas: TokenCanvasPrompt) -> None:
        super().__init__()
        self.tokens, self.canvas = tokens, canvas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.canvas(self.tokens(x))


def chen2021(num_target: int, *, num_features: int, bins: int = 16, num_source: int = 1000, image_size: int = 224,
             patch_size: int = 16, grid: Optional[int] = None, base_image: Optional[torch.Tensor] = None,
             alpha: float = 1.0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
             k: int = 1, backend: str = "auto"):
    """Fraud-detection reprogramming (Chen et al. 2021, our reading, see the module docstring).

    ``out = N(clamp(base + alpha * tanh(table[f * bins + level_f]) over the feature grid
    + M * tanh(W), 0, 1))``, ``M = 1`` outside the grid; mapped by the mean of ``k`` source classes.
    """
    from . import Recipe

    if num_features < 1 or bins < 2:
        raise ValueError(f"chen2021: need num_features >= 1 and bins >= 2, got {num_features}, {bins}")
    g = grid if grid is not None else math.ceil(math.sqrt(num_features))
    if g * patch_size > image_size:
        raise ValueError(f"chen2021: a grid of {g} x {g} cells of {patch_size} does not fit image_size={image_size}")
    base = torch.full((3, 1, 1), 0.5) if base_image is None else base_image
    off = (image_size - g * patch_size + 1) // 2
    mask = torch.ones(image_size, image_size)
    mask[off:off + g * patch_size, off:off + g * patch_size] = 0
    canvas = TokenCanvasPrompt(num_features * bins, patch_size, g, channels=3, out_size=image_size,
                               activation="tanh", pad="repeat_last", base=base, patch_weight=alpha, program=True,
                               program_mask=mask, clamp=(0.0, 1.0), mean=mean, std=std, init="randn",
                               init_scale=0.1, truncate=False, backend=backend)
    mapping = LabelMapping(num_source, num_target, "identity", k=k, backend=backend)
    return Recipe(FeatureCanvasPrompt(FeatureTokens(num_features, bins), canvas), mapping)
