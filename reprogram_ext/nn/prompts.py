"""Input-side reprogramming layers with a shared program: padding, additive and time-series prompts.

Each layer holds a trainable program ``delta`` (a Parameter) and a fixed ``mask`` buffer, and calls
``masked_perturb`` once per forward (``backend=`` is passed through). The sample-specific (SMM)
prompt lives in ``sample_specific.py``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layer_args import (Size, check_input, init_program, norm_constants, region_mask, register_mask, settings_repr,
                         spatial_size)
from ..ops.masked_perturb import masked_perturb


class PaddingPrompt(nn.Module):
    """Expansive prompt (ILM-VP, Elsayed, BAR, AutoVP): pad the input into a larger canvas and add a
    trainable program on the border.

    ``out = N((pad(resize(x)) + act(delta) * M))`` with ``M = 0`` over the placed input and 1 on the
    border (``M = 1`` everywhere when ``prompt_over_input=True``), ``act`` = ``activation``,
    ``N(z) = (z - mean_c) / std_c`` when mean/std are given, and the input (optionally resized to
    ``resize``) centred at ``(out - in + 1) // 2`` unless ``offset`` says otherwise. With a binary
    mask ``M * act(W) = act(W * M)`` whenever ``act(0) = 0`` (tanh: Elsayed's ``tanh(W ⊙ M)``).

    Shapes: ``x [B, 1|channels, *input_size]`` -> ``[B, channels, *output_size]``; sizes are ints
    (square images) or tuples of 1 (signals) or 2 ints.
    """

    def __init__(
        self,
        input_size: Size,
        output_size: Size,
        *,
        channels: int = 3,
        activation: str = "sigmoid",
        mean=None,
        std=None,
        resize: Optional[Size] = None,
        resize_mode: str = "bilinear",
        offset: Optional[Sequence[int]] = None,
        prompt_over_input: bool = False,
        clamp: Optional[Tuple[float, float]] = None,
        init: str = "zeros",
        init_scale: float = 1.0,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = spatial_size(input_size, "input_size", name)
        self.output_size = spatial_size(output_size, "output_size", name, len(self.input_size))
        self.resize = None if resize is None else spatial_size(resize, "resize", name, len(self.input_size))
        placed = self.resize or self.input_size
        if offset is None:
            offset = tuple((o - i + 1) // 2 for o, i in zip(self.output_size, placed))
        else:
            offset = tuple(int(v) for v in (offset if isinstance(offset, (tuple, list)) else (offset,)))
            if len(offset) != len(placed):
                raise ValueError(f"{name}: offset must have {len(placed)} ints, got {offset!r}")
        self.offset = offset
        self.channels, self.activation, self.resize_mode = channels, activation, resize_mode
        self.mean, self.std = norm_constants(mean, std, channels, name)
        self.clamp, self.backend, self.prompt_over_input = clamp, backend, prompt_over_input
        self.delta = init_program((channels, *self.output_size), init, name, device=device, dtype=dtype, scale=init_scale)
        register_mask(self, region_mask(self.output_size, [offset], placed, 1.0 if prompt_over_input else 0.0,
                                        device=device), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size, type(self).__name__)
        return masked_perturb(
            x, self.delta, self.mask, resize=self.resize, resize_mode=self.resize_mode, offset=self.offset,
            activation=self.activation, normalize="after", mean=self.mean, std=self.std, clamp=self.clamp,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        resize = f", resize={self.resize}" if self.resize else ""
        return (f"input_size={self.input_size}, output_size={self.output_size}{resize}, offset={self.offset}, "
                + settings_repr(self, normalized=self.mean is not None))


class AdditivePrompt(nn.Module):
    """Prompts added onto an image of the model's own size (Bahng et al. 2022), ``out = x + M * act(delta)``.

    ``kind``:
      - ``"full"``: a full-image "watermark" ``delta [C, H, W]`` (``M = 1``);
      - ``"pad"``: Bahng's pad prompter, a border ``prompt_size`` pixels wide (``M = 1`` on the border);
      - ``"patch"``: Bahng's patch prompter, a ``prompt_size`` x ``prompt_size`` patch ``delta [C, p, p]``
        at ``patch_location`` (default top-left), or, with ``random_location=True``, at a location
        drawn uniformly per forward pass in training mode (the whole batch shares it); in eval mode the
        patch sits at ``patch_location``.
    Bahng adds the prompt to an already normalised image, so by default nothing is normalised; with
    mean/std the sum is normalised afterwards, ``N(x + M * act(delta))``.
    """

    KINDS = ("full", "pad", "patch")

    def __init__(
        self,
        image_size: Size,
        *,
        kind: str = "pad",
        prompt_size: int = 30,
        channels: int = 3,
        activation: str = "none",
        random_location: bool = False,
        patch_location: Sequence[int] = (0, 0),
        mean=None,
        std=None,
        clamp: Optional[Tuple[float, float]] = None,
        init: str = "randn",
        init_scale: float = 1.0,
        generator: Optional[torch.Generator] = None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if kind not in self.KINDS:
            raise ValueError(f"{name}: kind must be one of {self.KINDS}, got {kind!r}")
        self.image_size = spatial_size(image_size, "image_size", name, 2)
        H, W = self.image_size
        if kind != "full" and not (isinstance(prompt_size, int) and 1 <= prompt_size <= min(H, W)):
            raise ValueError(f"{name}: prompt_size must be an int in [1, {min(H, W)}], got {prompt_size!r}")
        if kind == "pad" and 2 * prompt_size >= min(H, W):
            raise ValueError(f"{name}: a pad prompt of width {prompt_size} leaves no image inside {self.image_size}")
        if random_location and kind != "patch":
            raise ValueError(f"{name}: random_location needs kind='patch', got kind={kind!r}")
        self.kind, self.prompt_size, self.channels = kind, prompt_size, channels
        self.activation, self.random_location, self.clamp, self.backend = activation, random_location, clamp, backend
        self.patch_location = tuple(int(v) for v in patch_location)
        if kind == "patch" and not all(0 <= v <= s - prompt_size for v, s in zip(self.patch_location, self.image_size)):
            raise ValueError(f"{name}: patch_location must keep the patch inside the image, got {self.patch_location}")
        self.mean, self.std = norm_constants(mean, std, channels, name)
        self.generator = generator
        shape = (channels, prompt_size, prompt_size) if kind == "patch" else (channels, H, W)
        self.delta = init_program(shape, init, name, device=device, dtype=dtype, scale=init_scale)
        mask = None
        if kind == "pad":
            inner = (prompt_size, prompt_size)
            mask = region_mask(self.image_size, [inner], (H - 2 * prompt_size, W - 2 * prompt_size), 0.0, device=device)
        register_mask(self, mask, dtype)

    def _patch_origin(self) -> Tuple[int, int]:
        if not (self.random_location and self.training):
            return self.patch_location
        p = self.prompt_size
        return tuple(int(torch.randint(0, s - p + 1, (1,), generator=self.generator)) for s in self.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.image_size, type(self).__name__)
        delta, mask = self.delta, self.mask
        if self.kind == "patch":  # place the patch on the canvas: the program and its window
            (oy, ox), p = self._patch_origin(), self.prompt_size
            pad = [ox, self.image_size[1] - ox - p, oy, self.image_size[0] - oy - p]
            delta = F.pad(delta, pad)
            mask = F.pad(torch.ones((1, p, p), device=delta.device, dtype=delta.dtype), pad)
        return masked_perturb(
            x, delta, mask, offset=(0, 0), activation=self.activation, normalize="after", mean=self.mean,
            std=self.std, clamp=self.clamp, backend=self.backend,
        )

    def extra_repr(self) -> str:
        size = "" if self.kind == "full" else f", prompt_size={self.prompt_size}"
        where = ", random_location=True" if self.random_location else (
            f", patch_location={self.patch_location}" if self.kind == "patch" else "")
        return f"image_size={self.image_size}, kind={self.kind!r}{size}{where}, " + settings_repr(self)


class TimeSeriesPrompt(nn.Module):
    """Voice2Series input reprogramming of 1-D signals: ``out = tile(x) + M * act(theta)``.

    ``tile(x)`` places ``copies`` back-to-back copies of the length-``L`` series, as one block centred
    on the ``output_length`` canvas (16000 samples, one second of 16 kHz audio), or at explicit
    ``offsets`` (overlapping copies add; parts outside the canvas are cropped). ``M`` is 0 where a
    copy lies and 1 elsewhere (all ones with ``prompt_over_input=True``). ``dropout = p > 0`` applies
    ``F.dropout(theta, p)`` to the program in training mode (Voice2Series: ``x + dropout(W)``).

    Shapes: ``x [B, L]`` or ``[B, 1|channels, L]`` -> ``[B, channels, output_length]``.
    """

    def __init__(
        self,
        input_length: int,
        output_length: int = 16000,
        *,
        channels: int = 1,
        copies: int = 1,
        offsets: Optional[Sequence[int]] = None,
        activation: str = "none",
        prompt_over_input: bool = False,
        init: str = "zeros",
        init_scale: float = 1.0,
        dropout: float = 0.0,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        (self.input_length,) = spatial_size(input_length, "input_length", name, 1)
        (self.output_length,) = spatial_size(output_length, "output_length", name, 1)
        L, N = self.input_length, self.output_length
        if offsets is None:
            if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1 or copies * L > N:
                raise ValueError(f"{name}: copies must be an int with 1 <= copies and copies*input_length <= "
                                 f"output_length={N}, got {copies!r}")
            start = (N - copies * L + 1) // 2
            offsets = [start + i * L for i in range(copies)]
        else:
            offsets = [int(o) for o in offsets]
            if not offsets:
                raise ValueError(f"{name}: offsets must hold at least one position")
        self.offsets = tuple(offsets)
        self.channels, self.activation, self.backend = channels, activation, backend
        self.prompt_over_input = prompt_over_input
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.delta = init_program((channels, N), init, name, device=device, dtype=dtype, scale=init_scale)
        register_mask(self, region_mask((N,), [(o,) for o in self.offsets], (L,), 1.0 if prompt_over_input else 0.0,
                                        device=device), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() == 2:
            x = x.unsqueeze(1)
        check_input(x, (self.input_length,), type(self).__name__)
        delta = F.dropout(self.delta, self.dropout, self.training) if self.dropout else self.delta
        return masked_perturb(x, delta, self.mask, offset=[(o,) for o in self.offsets],
                              activation=self.activation, normalize="none", backend=self.backend)

    def extra_repr(self) -> str:
        dropout = f", dropout={self.dropout}" if self.dropout else ""
        return (f"input_length={self.input_length}, output_length={self.output_length}, offsets={self.offsets}"
                f"{dropout}, " + settings_repr(self))
