"""``LowRankPrompt``: LoR-VP's full-image program of low rank, ``delta_c = B_c @ A_c`` per channel."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .layer_args import Size, check_input, norm_constants, spatial_size
from ..ops.masked_perturb import masked_perturb

# How LoR-VP initialises each factor (its ``--init_method`` words).
FACTOR_INITS = ("zero", "normal", "random", "uniform", "xavier", "kaiming")


def init_factor(t: torch.Tensor, init: str, layer: str) -> None:
    """In place: ``zero`` 0; ``normal`` N(0, 0.01²); ``random`` N(0, 1); ``uniform`` U(-0.1, 0.1);
    ``xavier`` / ``kaiming`` torch's ``xavier_uniform_`` / ``kaiming_uniform_(nonlinearity="relu")``
    on the factor's 3-D shape."""
    if init not in FACTOR_INITS:
        raise ValueError(f"{layer}: each init must be one of {FACTOR_INITS}, got {init!r}")
    with torch.no_grad():
        if init == "zero":
            t.zero_()
        elif init == "normal":
            t.normal_(0.0, 0.01)
        elif init == "random":
            t.normal_(0.0, 1.0)
        elif init == "uniform":
            t.uniform_(-0.1, 0.1)
        elif init == "xavier":
            nn.init.xavier_uniform_(t)
        else:
            nn.init.kaiming_uniform_(t, nonlinearity="relu")


class LowRankPrompt(nn.Module):
    """LoR-VP (Jin et al. 2025): ``out = N(resize(x) + delta)`` with ``delta_c = B_c @ A_c``.

    ``B [C, H, rank]`` and ``A [C, rank, W]`` are the trainable factors (one matrix product per
    channel, ``torch.bmm``), so the program covers the whole ``H x W`` canvas with ``C·rank·(H + W)``
    parameters. ``resize(x)`` is ``x`` resized to ``output_size`` (``resize_mode`` as
    ``F.interpolate(align_corners=False)``), skipped when ``input_size == output_size``. No mask, no
    activation; ``N(z) = (z - mean_c) / std_c`` when mean/std are given, else ``N`` is the identity.
    ``init = (init_B, init_A)``: see ``init_factor``; LoR-VP's default ``("zero", "normal")`` starts
    from ``delta = 0``.

    Shapes: ``x [B, 1|channels, *input_size]`` -> ``[B, channels, *output_size]``.
    """

    def __init__(
        self,
        input_size: Size,
        output_size: Size = 224,
        *,
        rank: int = 4,
        channels: int = 3,
        mean=None,
        std=None,
        resize_mode: str = "bilinear",
        init: Sequence[str] = ("zero", "normal"),
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = spatial_size(input_size, "input_size", name, 2)
        self.output_size = spatial_size(output_size, "output_size", name, 2)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"{name}: rank must be a positive int, got {rank!r}")
        if isinstance(init, str) or len(init) != 2:
            raise ValueError(f"{name}: init must be a pair (init_B, init_A), got {init!r}")
        self.rank, self.channels, self.resize_mode, self.backend = rank, channels, resize_mode, backend
        self.mean, self.std = norm_constants(mean, std, channels, name)
        H, W = self.output_size
        self.B = nn.Parameter(torch.empty(channels, H, rank, device=device, dtype=dtype))
        self.A = nn.Parameter(torch.empty(channels, rank, W, device=device, dtype=dtype))
        self.init = tuple(init)
        init_factor(self.B, self.init[0], name)
        init_factor(self.A, self.init[1], name)

    def program(self) -> torch.Tensor:
        """``delta [C, H, W] = B @ A`` per channel."""
        return torch.bmm(self.B, self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size, type(self).__name__)
        resize: Optional[Tuple[int, int]] = None if self.input_size == self.output_size else self.output_size
        return masked_perturb(x, self.program(), None, resize=resize, resize_mode=self.resize_mode, offset=(0, 0),
                              normalize="after", mean=self.mean, std=self.std, backend=self.backend)

    def extra_repr(self) -> str:
        norm = ", normalized" if self.mean is not None else ""
        return (f"input_size={self.input_size}, output_size={self.output_size}, rank={self.rank}, "
                f"channels={self.channels}, init={self.init}{norm}, backend={self.backend!r}")
