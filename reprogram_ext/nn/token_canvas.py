"""``TokenCanvasPrompt``: token sequences drawn on a source model's input canvas (tokens_to_canvas).

Each token id owns a learned patch (a row of ``table``); the sequence fills a grid of cells row by
row, blended into an optional base image and an optional trainable program, clamped and normalised
(Neekhara et al. 2022; Chen et al. 2021's feature overlay). docs/ops/tokens_to_canvas.md.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .layer_args import Size, init_program, norm_constants, spatial_size
from ..ops.tokens_to_canvas import tokens_to_canvas


class TokenCanvasPrompt(nn.Module):
    """Draw ``tokens [B, L]`` as learned patches on a ``grid`` of cells and blend them into a canvas.

    ``out = N(clamp(base_weight * base + patch_weight * act(table[token of cell]) + M * act(program)))``
    per canvas element (see ``tokens_to_canvas``), with ``table [num_tokens, channels, *patch_size]``
    a Parameter (``init``: ``randn`` with ``init_scale``, as ``nn.Embedding``; ``zeros``; ``uniform``),
    ``base`` a buffer (or a Parameter with ``train_base=True``), ``program`` a Parameter over the
    canvas when ``program=True`` (``program_mask`` a fixed buffer). Tokens beyond the grid's cells
    are dropped when ``truncate=True`` (as Neekhara et al.'s loop over the cells ignores them), else
    they are an error. ``patch_size``/``grid``: ints (square 2-D) or tuples of 1 or 2 ints.
    """

    def __init__(
        self,
        num_tokens: int,
        patch_size: Size,
        grid: Size,
        *,
        channels: int = 3,
        out_size: Optional[Size] = None,
        offset: Optional[Size] = None,
        activation: str = "tanh",
        pad: Union[str, int, None] = "repeat_last",
        base: Optional[torch.Tensor] = None,
        train_base: bool = False,
        base_weight=1.0,
        patch_weight=1.0,
        program: bool = False,
        program_mask: Optional[torch.Tensor] = None,
        clamp: Optional[Tuple[float, float]] = None,
        mean=None,
        std=None,
        init: str = "randn",
        init_scale: float = 1.0,
        truncate: bool = True,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"{name}: num_tokens must be a positive int, got {num_tokens!r}")
        self.patch_size = spatial_size(patch_size, "patch_size", name)
        nsp = len(self.patch_size)
        self.grid = spatial_size(grid, "grid", name, nsp)
        span = tuple(g * p for g, p in zip(self.grid, self.patch_size))
        self.out_size = span if out_size is None else spatial_size(out_size, "out_size", name, nsp)
        self.offset = offset
        self.num_tokens, self.channels, self.activation, self.pad = num_tokens, channels, activation, pad
        self.base_weight, self.patch_weight, self.clamp = base_weight, patch_weight, clamp
        self.mean, self.std = norm_constants(mean, std, channels, name)
        self.truncate, self.backend = truncate, backend
        self.table = init_program((num_tokens, channels, *self.patch_size), init, name, device=device, dtype=dtype,
                                  scale=init_scale)
        if base is not None:
            base = base.detach().to(device=device, dtype=dtype or torch.get_default_dtype()).clone()
            if train_base:
                self.base = nn.Parameter(base)
            else:
                self.register_buffer("base", base)
        else:
            self.base = None
        self.program = init_program((channels, *self.out_size), "zeros", name, device=device, dtype=dtype) if program \
            else None
        self.register_buffer("program_mask", None if program_mask is None else
                             program_mask.detach().to(device=device, dtype=dtype or torch.get_default_dtype()))

    @property
    def num_cells(self) -> int:
        return math.prod(self.grid)

    def _tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.truncate and isinstance(tokens, torch.Tensor) and tokens.dim() == 2 and tokens.shape[1] > self.num_cells:
            return tokens[:, : self.num_cells]
        return tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens_to_canvas(
            self._tokens(tokens), self.table, grid=self.grid, out_size=self.out_size, offset=self.offset,
            activation=self.activation, pad=self.pad, program=self.program, program_mask=self.program_mask,
            base=self.base, base_weight=self.base_weight, patch_weight=self.patch_weight, clamp=self.clamp,
            mean=self.mean, std=self.std, backend=self.backend,
        )

    def perturbation_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """``‖canvas of act(table[token]) patches‖₂ / B`` (Neekhara et al. 2022's regulariser, before the
        patch weight), from per-token squared norms: no canvas is built."""
        tokens = self._tokens(tokens)
        B, L = tokens.shape
        acts = tokens_to_canvas_activation(self.activation)(self.table)
        per_token = acts.flatten(1).square().sum(1)
        cells = tokens.long()
        if L < self.num_cells:
            fill = cells[:, -1:] if self.pad == "repeat_last" else torch.full_like(cells[:, :1], int(self.pad))
            extra = per_token[fill].sum() * (self.num_cells - L)
        else:
            extra = per_token.new_zeros(())
        return (per_token[cells].sum() + extra).sqrt() / B

    def extra_repr(self) -> str:
        parts = [f"num_tokens={self.num_tokens}", f"patch_size={self.patch_size}", f"grid={self.grid}",
                 f"out_size={self.out_size}", f"channels={self.channels}", f"activation={self.activation!r}"]
        if self.clamp is not None:
            parts.append(f"clamp={self.clamp}")
        if self.mean is not None:
            parts.append("normalized")
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


def tokens_to_canvas_activation(name: str):
    """The activation function of a name (the op's vocabulary)."""
    from ..ops.tokens_to_canvas.options import ACTIVATIONS

    return ACTIVATIONS[name]
