"""Validation of masked_perturb's user arguments and their canonical form.

Every backend computes on a canonical 4-D layout ``[B, C, H, W]`` (1-D signals get ``H = 1``):
``x [B, Cx, Hin, Win]``, ``delta [Bd, Cd, H, W]``, ``mask [Bm, Cm, Hm, Wm]`` (size-1 dimensions
broadcast), offsets as ``(oy, ox)`` pairs, and the normalisation as a ``[2, C]`` tensor
``(mean, 1 / std)`` in the compute dtype (float64 for float64 outputs, else float32). With
``bank=True`` delta is ``[V, Cd, H, W]``, one program per bank entry, each applied to every sample. Errors name the argument, what was expected and what was given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from .options import ACTIVATIONS, BLENDS, FLOAT_DTYPES, NORMALIZE, RESIZE_MODES, PerturbOptions

Size = Union[int, Sequence[int]]
MAX_RESIZE = (1 << 31) - 1  # resize entries are interpolated with 32-bit coordinates by the kernels


@dataclass
class CanonicalPerturb:
    x: torch.Tensor  # [B, Cx, Hin, Win], out dtype or uint8
    delta: torch.Tensor  # [Bd, Cd, H, W], out dtype
    mask: Optional[torch.Tensor]  # [Bm, Cm, Hm, Wm], out dtype
    norm: torch.Tensor  # [2, C] on the device: float64 for float64 outputs, else float32
    options: PerturbOptions
    channels: int
    spatial_ndim: int
    out_dtype: torch.dtype


def _err(arg: str, expected: str, got) -> str:
    return f"masked_perturb: {arg} must be {expected}, got {got}"


def _as_size(value, nsp: int, arg: str) -> tuple:
    if isinstance(value, bool):
        raise TypeError(_err(arg, f"an int or a sequence of {nsp} ints", repr(value)))
    if isinstance(value, int):
        size = (value,) * nsp
    elif isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        size = tuple(value)
    else:
        raise TypeError(_err(arg, f"an int or a sequence of {nsp} ints", repr(value)))
    if len(size) != nsp:
        raise ValueError(_err(arg, f"{nsp} sizes (one per spatial dim of x)", repr(value)))
    if any(s < 0 for s in size):
        raise ValueError(_err(arg, "non-negative", repr(value)))
    return size


def _as_offsets(offset, nsp: int, out_size: tuple, in_size: tuple) -> tuple:
    if offset is None:  # one copy, centred as ILM-VP pads: (out - in + 1) // 2
        return (tuple((o - i + 1) // 2 for o, i in zip(out_size, in_size)),)

    def one(v):
        if isinstance(v, int) and not isinstance(v, bool) and nsp == 1:
            return (v,)
        if isinstance(v, (tuple, list)) and len(v) == nsp and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            return tuple(v)
        raise TypeError(_err("offset", f"{nsp} int(s) per copy, or a list of such tuples", repr(offset)))

    if isinstance(offset, (tuple, list)) and len(offset) > 0 and all(isinstance(v, (tuple, list)) for v in offset):
        return tuple(one(v) for v in offset)
    if isinstance(offset, (tuple, list)) and len(offset) > 1 and nsp == 1:
        return tuple(one(v) for v in offset)  # 1-D: a list of ints is a list of copies
    if isinstance(offset, (tuple, list)) and len(offset) == 0:
        raise ValueError(_err("offset", "at least one copy", repr(offset)))
    return (one(offset),)


def _as_float(v, arg: str) -> float:
    """A real number (an int, a float, a numpy or 0-d tensor scalar); bools, strings and complex refused."""
    if isinstance(v, (bool, str, bytes, complex)) or v is None:
        raise TypeError(_err(arg, "real numbers", repr(v)))
    try:
        return float(v)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(_err(arg, "real numbers", repr(v))) from None


def _norm_values(value, channels: int, arg: str, device, dtype: torch.dtype) -> torch.Tensor:
    """mean or std as [C] of the compute dtype (float32, or float64 for float64 outputs): finite
    there, and std > 0 with a finite reciprocal (a zero, negative, tiny or infinite std has no
    normalisation to compute; backends would disagree on it). A float that overflows float32 (1e300)
    is not finite there."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(_err(arg, "real numbers", value.dtype))
        t = value.detach().to(dtype=dtype).reshape(-1)
        # a tensor's values need a host read: checked in eager mode (constants under torch.compile)
        given = t.cpu().tolist() if not torch.compiler.is_compiling() else []
    else:
        given = [_as_float(v, arg) for v in (value if isinstance(value, (tuple, list)) else (value,))]
        t = torch.tensor(given, dtype=dtype)
    if t.numel() not in (1, channels):
        raise ValueError(_err(arg, f"1 or C={channels} values", f"{t.numel()} values"))
    big = torch.finfo(dtype).max
    if not all(abs(v) <= big and (arg != "std" or v >= 1 / big) for v in given):  # False for nan too
        name = str(dtype).replace("torch.", "")
        raise ValueError(_err(arg, f"finite in {name}" + (", > 0, with a finite reciprocal" if arg == "std" else ""),
                              given))
    return t.to(device).expand(channels)


def _clamp_bound(v: float, compute: torch.dtype) -> float:
    """A clamp bound beyond the compute dtype's range is +-inf there (the same clamp, computable)."""
    big = torch.finfo(compute).max
    return v if -big <= v <= big else math.copysign(math.inf, v)


def _keep_on_canvas(offsets: tuple, resized: tuple, canvas: tuple) -> tuple:
    """Each offset clipped to [-resized, canvas] per dim: a copy that lies off the canvas stays off it
    (nothing of it is placed), and any int offset, however large, fits the kernels' int64."""
    return tuple(tuple(min(max(o, -r), c) for o, r, c in zip(off, resized, canvas)) for off in offsets)


def _to_4d(t: torch.Tensor, nsp: int, leading: int) -> torch.Tensor:
    """View with `leading` dims of size 1 prepended (and H = 1 inserted for 1-D)."""
    for _ in range(leading):
        t = t.unsqueeze(0)
    return t.unsqueeze(-2) if nsp == 1 else t


def canonicalize(
    x, delta, mask, *, out_size, resize, resize_mode, offset, activation, blend, normalize, mean, std, clamp,
    mask_scale, out_dtype, bank=False,
) -> CanonicalPerturb:
    if not isinstance(x, torch.Tensor):
        raise TypeError(_err("x", "a torch.Tensor", type(x).__name__))
    if not isinstance(delta, torch.Tensor):
        raise TypeError(_err("delta", "a torch.Tensor", type(delta).__name__))
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(_err("mask", "a torch.Tensor or None", type(mask).__name__))
    if x.dtype not in FLOAT_DTYPES + (torch.uint8,):
        raise TypeError(_err("x", "float16/bfloat16/float32/float64 or uint8", x.dtype))
    if delta.dtype not in FLOAT_DTYPES:
        raise TypeError(_err("delta", "a floating tensor (float16/bfloat16/float32/float64)", delta.dtype))
    if mask is not None and not (mask.dtype in FLOAT_DTYPES or mask.dtype == torch.bool):
        raise TypeError(_err("mask", "a floating or bool tensor", mask.dtype))
    nsp = x.dim() - 2
    if nsp not in (1, 2):
        raise ValueError(_err("x", "[B, Cx, L] or [B, Cx, H, W] (1 or 2 spatial dims)", f"shape {tuple(x.shape)}"))
    for name, t in (("delta", delta), ("mask", mask)):
        if t is not None and t.device != x.device:
            raise ValueError(f"masked_perturb: {name} is on {t.device} but x is on {x.device}")
    B, Cx = x.shape[0], x.shape[1]
    in_size = tuple(x.shape[2:])

    if not isinstance(bank, bool):
        raise TypeError(_err("bank", "a bool", repr(bank)))
    if bank and delta.dim() != nsp + 2:
        raise ValueError(_err("delta", f"[V, Cd, *S_out] with {nsp} spatial dim(s) when bank=True (V programs, each "
                              "shared by the batch; per-sample programs [B, Cd, *S_out] take bank=False)",
                              f"shape {tuple(delta.shape)}"))
    if delta.dim() == nsp + 1:
        delta4 = delta.unsqueeze(0)
    elif delta.dim() == nsp + 2:
        delta4 = delta
    else:
        raise ValueError(_err("delta", f"[Cd, *S_out] or [B, Cd, *S_out] with {nsp} spatial dim(s)", f"shape {tuple(delta.shape)}"))
    Bd, Cd = delta4.shape[0], delta4.shape[1]
    canvas = tuple(delta4.shape[2:])
    C = Cx if Cd == 1 else Cd
    if Bd not in (1, B) and not bank:
        raise ValueError(_err("delta", f"batch 1 or B={B} (V programs for every sample: bank=True)",
                              f"shape {tuple(delta.shape)}"))
    if Cx not in (1, C):
        raise ValueError(_err("x", f"1 or C={C} channels (C is delta's channel count)", f"{Cx} channels"))
    if out_size is not None and _as_size(out_size, nsp, "out_size") != canvas:
        raise ValueError(_err("out_size", f"delta's spatial size {canvas}", repr(out_size)))
    if any(s == 0 for s in canvas):
        raise ValueError(_err("delta", "a non-empty canvas", f"shape {tuple(delta.shape)}"))

    if resize is None:
        resized, mode = in_size, "none"
    else:
        resized = _as_size(resize, nsp, "resize")
        if any(s == 0 or s > MAX_RESIZE for s in resized):
            raise ValueError(_err("resize", f"sizes in [1, 2^31) (an input resized to 0 has nothing to place)",
                                  repr(resize)))
        if not isinstance(resize_mode, str) or resize_mode not in RESIZE_MODES:
            raise ValueError(_err("resize_mode", f"one of {tuple(RESIZE_MODES)}", repr(resize_mode)))
        if any(s == 0 for s in in_size):
            raise ValueError(_err("x", "non-empty spatial dims when resize is given", f"shape {tuple(x.shape)}"))
        mode = resize_mode
    offsets = _keep_on_canvas(_as_offsets(offset, nsp, canvas, resized), resized, canvas)

    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(_err("activation", f"one of {tuple(ACTIVATIONS)}", repr(activation)))
    if not isinstance(blend, str) or blend not in BLENDS:
        raise ValueError(_err("blend", f"one of {tuple(BLENDS)}", repr(blend)))
    if not isinstance(normalize, str) or normalize not in NORMALIZE:
        raise ValueError(_err("normalize", f"one of {NORMALIZE}", repr(normalize)))
    if isinstance(mask_scale, bool) or not isinstance(mask_scale, int) or mask_scale < 1:
        raise ValueError(_err("mask_scale", "a positive int", repr(mask_scale)))
    if (mean is None) != (std is None):
        raise ValueError("masked_perturb: mean and std must be given together (got only one)")
    use_norm = normalize != "none" and mean is not None
    if normalize == "before" and mean is None:
        raise ValueError("masked_perturb: normalize='before' needs mean and std")
    if clamp is not None:
        if not (isinstance(clamp, (tuple, list)) and len(clamp) == 2):
            raise TypeError(_err("clamp", "a (lo, hi) pair or None", repr(clamp)))
        lo, hi = _as_float(clamp[0], "clamp"), _as_float(clamp[1], "clamp")
        if lo != lo or hi != hi:
            raise ValueError(_err("clamp", "a (lo, hi) pair without NaN (+-inf is allowed)", repr(clamp)))
        if lo > hi:
            raise ValueError(_err("clamp", "lo <= hi", repr(clamp)))
    else:
        lo = hi = None

    if out_dtype is None:
        if torch.is_autocast_enabled(x.device.type):
            out_dtype = torch.get_autocast_dtype(x.device.type)
        else:
            out_dtype = delta.dtype
    if out_dtype not in FLOAT_DTYPES:
        raise TypeError(_err("out_dtype", "a floating dtype", out_dtype))
    compute = torch.float64 if out_dtype == torch.float64 else torch.float32  # the math's dtype
    if clamp is not None:
        lo, hi = _clamp_bound(lo, compute), _clamp_bound(hi, compute)

    mask4 = None
    if mask is not None:
        s_m = tuple(-(-s // mask_scale) for s in canvas)
        lead = nsp + 2 - mask.dim()
        if lead < 0 or lead > 2:
            raise ValueError(_err("mask", f"[*S_m], [1|C, *S_m] or [B, 1|C, *S_m] with S_m={s_m}", f"shape {tuple(mask.shape)}"))
        mask4 = _to_4d(mask, nsp, lead)
        ok = mask4.shape[0] in (1, B) and mask4.shape[1] in (1, C) and all(
            m in (1, s) for m, s in zip(mask4.shape[2:], (s_m if nsp == 2 else (1,) + s_m))
        )
        if not ok:
            raise ValueError(_err("mask", f"broadcastable to [B={B}, C={C}, *S_m={s_m}] (S_m = ceil(S_out / mask_scale))",
                                  f"shape {tuple(mask.shape)}"))
        mask4 = mask4.to(out_dtype)

    device = x.device
    if use_norm:
        mean_t = _norm_values(mean, C, "mean", device, compute)
        std_t = _norm_values(std, C, "std", device, compute)
        norm = torch.stack([mean_t, 1.0 / std_t])
    else:
        norm = torch.stack([torch.zeros(C, dtype=compute, device=device), torch.ones(C, dtype=compute, device=device)])

    off2 = tuple((0,) + o if nsp == 1 else o for o in offsets)
    options = PerturbOptions(
        offsets=off2,
        resized_size=(1,) + resized if nsp == 1 else resized,
        resize_mode=mode,
        activation=activation,
        blend=blend,
        normalize=normalize if use_norm else "none",
        clamp=None if clamp is None else (lo, hi),
        mask_scale=min(mask_scale, max(canvas)),  # p // s is 0 on the whole canvas from s = max(canvas) on
        bank=bank,
    )
    x4 = x if x.dtype == torch.uint8 else x.to(out_dtype)
    return CanonicalPerturb(
        x=_to_4d(x4, nsp, 0),
        delta=_to_4d(delta4.to(out_dtype), nsp, 0),
        mask=mask4,
        norm=norm.contiguous(),
        options=options,
        channels=C,
        spatial_ndim=nsp,
        out_dtype=out_dtype,
    )
