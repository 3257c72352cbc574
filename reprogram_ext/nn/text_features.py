"""Checks of the text / attribute embedding tensors that the CLIP-style output mappings take."""
from __future__ import annotations

import torch


def check_text_features(value, arg: str, layer: str, shape: str, ndim: int) -> None:
    """``value`` must be a finite floating tensor of ``ndim`` dims (``shape`` names them), none empty."""
    if not isinstance(value, torch.Tensor) or value.dim() != ndim or not value.is_floating_point():
        got = (f"{value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
               else type(value).__name__)
        raise ValueError(f"{layer}: {arg} must be a floating tensor {shape}, got {got}")
    if value.numel() == 0:
        raise ValueError(f"{layer}: {arg} must have no empty dim, got shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{layer}: {arg} must be finite")
