"""Argument checks and small shared pieces of the nn layers (sizes, init, normalisation constants)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

Size = Union[int, Sequence[int]]
INITS = ("zeros", "randn", "uniform")


def spatial_size(value: Size, name: str, layer: str, ndim: Optional[int] = None) -> Tuple[int, ...]:
    """An int (square 2-D size, or a 1-D length when ``ndim == 1``) or a tuple of 1 or 2 positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = (value,) * (ndim or 2)
    elif isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        size = tuple(value)
    else:
        raise TypeError(f"{layer}: {name} must be an int or a tuple of ints, got {value!r}")
    if len(size) not in (1, 2) or (ndim is not None and len(size) != ndim):
        want = f"{ndim}" if ndim is not None else "1 or 2"
        raise ValueError(f"{layer}: {name} must have {want} spatial dim(s), got {value!r}")
    if any(s < 1 for s in size):
        raise ValueError(f"{layer}: {name} must be positive, got {value!r}")
    return size


def norm_constants(mean, std, channels: int, layer: str):
    """``mean``/``std`` as tuples of floats (constants, not state), both or neither."""
    if (mean is None) != (std is None):
        raise ValueError(f"{layer}: mean and std must be given together (got only one)")
    if mean is None:
        return None, None
    out = []
    for name, value in (("mean", mean), ("std", std)):
        values = tuple(float(v) for v in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else
                                          (value if isinstance(value, (tuple, list)) else (value,))))
        if len(values) not in (1, channels):
            raise ValueError(f"{layer}: {name} must have 1 or channels={channels} values, got {len(values)}")
        out.append(values)
    if any(s <= 0 for s in out[1]):
        raise ValueError(f"{layer}: std must be positive, got {out[1]}")
    return out[0], out[1]


def init_program(shape, init: str, layer: str, *, device=None, dtype=None, scale: float = 1.0) -> torch.nn.Parameter:
    """A trainable program: zeros, ``scale * randn`` or ``uniform(-scale, scale)``."""
    if init not in INITS:
        raise ValueError(f"{layer}: init must be one of {INITS}, got {init!r}")
    t = torch.zeros(shape, device=device, dtype=dtype)
    if init == "randn":
        t.normal_(0.0, scale)
    elif init == "uniform":
        t.uniform_(-scale, scale)
    return torch.nn.Parameter(t)


def check_input(x: torch.Tensor, size: Tuple[int, ...], layer: str) -> None:
    """``x`` must be ``[B, C, *size]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(size) + 2 or tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"{layer}: x must have shape [B, C, {', '.join(map(str, size))}], got {tuple(x.shape)}")


def register_mask(module: torch.nn.Module, mask: Optional[torch.Tensor], dtype=None) -> None:
    """Register the fixed ``mask`` buffer of a prompt layer, in ``dtype`` (default: torch's default dtype);
    ``None`` registers an absent buffer (no mask: all ones, nothing in the state_dict)."""
    module.register_buffer("mask", None if mask is None else mask.to(dtype or torch.get_default_dtype()))


def settings_repr(module: torch.nn.Module, normalized: bool = False) -> str:
    """The settings every prompt layer prints last: channels, activation, ", normalized", backend."""
    norm = ", normalized" if normalized else ""
    return f"channels={module.channels}, activation={module.activation!r}{norm}, backend={module.backend!r}"


def region_mask(canvas: Tuple[int, ...], origins, extent: Tuple[int, ...], inside: float, *, device=None) -> torch.Tensor:
    """``[1, *canvas]`` float mask: ``inside`` over each box ``[o, o + extent)`` (cropped), 1 elsewhere."""
    mask = torch.ones((1, *canvas), device=device)
    for origin in origins:
        box = tuple(slice(max(o, 0), max(min(o + e, c), 0)) for o, e, c in zip(origin, extent, canvas))
        mask[(slice(None),) + box] = inside
    return mask
