"""The demo's data: scikit-learn's 8x8 digits (shipped inside the package, no download).

Source task: digits 0-4 drawn at a random size (14-28 px) and position on a 32x32 canvas, with noise.
Target task: digits 5-9 at 16x16, which the reprogramming layer pads into the 32x32 canvas.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

CANVAS = 32
TARGET_SIZE = 16


def load_digits_tensors() -> Tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``[N, 8, 8]`` floats in [0, 1] and their labels ``[N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.images, dtype=torch.float32) / 16.0, torch.tensor(digits.target, dtype=torch.int64)


def scatter_on_canvas(images: torch.Tensor, generator: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """Each ``[8, 8]`` image resized to a random 14..28 px square at a random place of a 32x32 canvas."""
    out = torch.zeros(images.shape[0], 1, CANVAS, CANVAS)
    for i, image in enumerate(images):
        size = int(torch.randint(14, 29, (1,), generator=generator))
        scaled = F.interpolate(image[None, None], size=(size, size), mode="bilinear", align_corners=False)[0]
        oy, ox = (int(v) for v in torch.randint(0, CANVAS - size + 1, (2,), generator=generator))
        out[i, :, oy:oy + size, ox:ox + size] = scaled
    return (out + noise * torch.randn(out.shape, generator=generator)).clamp(0, 1)


def source_task(copies: int, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Digits 0-4 on the 32x32 canvas, ``copies`` random placements of each: ``[N, 1, 32, 32]``, labels 0..4."""
    images, labels = load_digits_tensors()
    keep = labels < 5
    x = torch.cat([scatter_on_canvas(images[keep], generator) for _ in range(copies)])
    return x, labels[keep].repeat(copies)


def target_task(generator: torch.Generator, train_fraction: float = 0.7):
    """Digits 5-9 at 16x16 (labels 0..4 = digits 5..9), split into (x_train, y_train, x_test, y_test)."""
    images, labels = load_digits_tensors()
    keep = labels >= 5
    x = F.interpolate(images[keep][:, None], size=(TARGET_SIZE, TARGET_SIZE), mode="bilinear", align_corners=False)
    y = labels[keep] - 5
    perm = torch.randperm(x.shape[0], generator=generator)
    cut = int(train_fraction * x.shape[0])
    return x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]
