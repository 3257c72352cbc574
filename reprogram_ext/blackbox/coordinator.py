"""BlackVIP's coordinator (Oh et al. 2023, changdaeoh/BlackVIP, ``trainers/visual_prompters.py``).

The coordinator turns each image into its own visual prompt: a frozen encoder gives features ``z``,
a small trainable decoder ``dec`` maps ``[z, φ]`` (``φ``: a trainable "prompt trigger" vector,
initialised uniform on [0, 0.1)) to a 3-channel prompt of the image's size, and the prompted image is
clipped to the normalised pixel range::

    out = clip_c( x + ε · dec(reshape([z, φ], [N, src_dim / g², g, g])) )
    clip_c(v) = min(max(v, −mean_c / std_c), (1 − mean_c) / std_c)      (CLIP's range by default)

with ``x`` already normalised, ``ε`` = ``P_EPS`` = 1, ``src_dim`` = 1568 and ``g`` = 7. The decoder
(``DecoderManual``) is five ×2 upsampling stages, ``g → 32g`` (7 → 224)::

    ConvT(c₀, 64, 2, stride 2, groups=G) → ConvT(64, 64, 1) → BN → GELU
    ConvT(64, 64, 2, 2, groups=64) → ConvT(64, 32, 1) → BN → GELU
    ConvT(32, 32, 2, 2, groups=32) → ConvT(32, 32, 1) → BN → GELU
    ConvT(32, 32, 2, 2, groups=32) → ConvT(32, 16, 1) → BN → GELU
    ConvT(16, 3, 2, 2)

``c₀ = src_dim / g²``; ``G = min(c₀, 64)`` for its ViT encoders (``arch="vit"``) and 32 for its DINO
ResNet-50 (``arch="resnet"``); the 1×1 and the last transposed convolutions have no bias. Only the
decoder (with ``φ``) is trained, by SPSA-GC; BlackVIP keeps it in training mode, so its BatchNorms use
the batch's statistics during the queries (and update their running statistics at each query).

Deliberate differences: the encoder is any frozen module passed in that returns features ``[N, z_dim]``
(BlackVIP hard-codes ViT-MAE-base's [CLS] token, a ViT-B or a DINO ResNet-50 from Hugging Face);
``grid`` (``g``) is a parameter so that small canvases work (``32·g`` pixels), 7 as in BlackVIP.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _stage(c_in: int, c_mid: int, c_out: int, groups: int) -> list:
    return [nn.ConvTranspose2d(c_in, c_mid, 2, 2, 0, groups=groups), nn.ConvTranspose2d(c_mid, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out), nn.GELU()]


class CoordinatorDecoder(nn.Module):
    """BlackVIP's ``DecoderManual`` with a shared feature: ``[z, φ] [N, src_dim] → prompt [N, 3, 32g, 32g]``."""

    def __init__(self, z_dim: int, src_dim: int = 1568, *, grid: int = 7, arch: str = "vit") -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("z_dim", z_dim), ("src_dim", src_dim), ("grid", grid)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if src_dim % (grid * grid) or src_dim <= z_dim:
            raise ValueError(f"{name}: src_dim must be a multiple of grid² = {grid * grid} and larger than "
                             f"z_dim = {z_dim}, got {src_dim}")
        if arch not in ("vit", "resnet"):
            raise ValueError(f"{name}: arch must be 'vit' or 'resnet', got {arch!r}")
        c0 = src_dim // (grid * grid)
        groups = min(c0, 64) if arch == "vit" else 32
        if c0 % groups or 64 % groups:
            raise ValueError(f"{name}: src_dim / grid² = {c0} channels cannot be split into {groups} groups")
        self.z_dim, self.src_dim, self.grid, self.arch = z_dim, src_dim, grid, arch
        self.p_trigger = nn.Parameter(torch.empty(1, src_dim - z_dim).uniform_(0.0, 0.1))
        self.body = nn.Sequential(*_stage(c0, 64, 64, groups), *_stage(64, 64, 32, 64), *_stage(32, 32, 32, 32),
                                  *_stage(32, 32, 16, 32), nn.ConvTranspose2d(16, 3, 2, 2, 0, bias=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"{type(self).__name__}: expected features [N, {self.z_dim}], got {tuple(z.shape)}")
        cube = torch.cat([z, self.p_trigger.expand(z.shape[0], -1).to(z.dtype)], dim=1)
        return self.body(cube.reshape(z.shape[0], -1, self.grid, self.grid))


class Coordinator(nn.Module):
    """``clip_c(x + ε · decoder(encoder(x)))`` (module docstring); the encoder is frozen, the decoder trains."""

    def __init__(self, encoder: nn.Module, decoder: CoordinatorDecoder, *, eps: float = 1.0,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
            raise TypeError("Coordinator: encoder and decoder must be nn.Modules")
        if not (isinstance(eps, (int, float)) and eps > 0 and eps < float("inf")):
            raise ValueError(f"Coordinator: eps must be a finite positive number, got {eps!r}")
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        if mean_t.shape != (3,) or std_t.shape != (3,) or not bool((std_t > 0).all()):
            raise ValueError("Coordinator: mean and std must be 3 numbers each, std positive")
        self.encoder = encoder.requires_grad_(False).eval()
        self.decoder, self.eps = decoder, float(eps)
        self.register_buffer("lo", (-mean_t / std_t).view(1, 3, 1, 1))
        self.register_buffer("hi", ((1 - mean_t) / std_t).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "Coordinator":
        super().train(mode)
        self.encoder.eval()  # frozen: its statistics stay as given
        return self

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        """``decoder(encoder(x))``, the per-image prompt ``[N, 3, H, W]``."""
        with torch.no_grad():
            z = self.encoder(x)
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"Coordinator: the encoder must return a feature tensor [N, z_dim], got {type(z).__name__}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Coordinator: expected normalised images [N, 3, H, W], got {tuple(x.shape)}")
        p = self.prompt(x)
        if p.shape != x.shape:
            raise ValueError(f"Coordinator: the decoder gives prompts of shape {tuple(p.shape)} for images of shape "
                             f"{tuple(x.shape)} (32·grid pixels per side)")
        return torch.maximum(torch.minimum(x + self.eps * p, self.hi), self.lo)


__all__ = ["Coordinator", "CoordinatorDecoder", "CLIP_MEAN", "CLIP_STD"]
