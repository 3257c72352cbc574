"""Validation of tokens_to_canvas's arguments and their canonical form (options.py describes it).

Errors name the argument, what was expected and what was given. The token values (in [0, V))
need a host read: eagerly the front end reads them and names the first bad one; while
``torch.compile`` traces they become ``torch._assert_async`` checks in the graph (a check on CPU, a
device-side assert on CUDA). The C++ CPU kernels check the values themselves (same message), so
the front end skips its own check when they run: no backend reads outside the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch

from .options import ACTIVATIONS, FLOAT_DTYPES, NORMALIZE, PAD_RULES

Size = Union[int, Sequence[int]]
OP = "tokens_to_canvas"


@dataclass
class CanonicalTokens:
    cells: torch.Tensor  # int64 [B, G]: the token of every grid cell, row-major
    table: torch.Tensor  # [V, C, Ph, Pw]
    program: Optional[torch.Tensor]  # [Bp, Cp, H, W], table dtype
    program_mask: Optional[torch.Tensor]  # [Bm, Cm, H, W], table dtype
    base: Optional[torch.Tensor]  # [Bb, Cb, H, W], table dtype
    norm: torch.Tensor  # [4, C] accumulation dtype: mean, 1 / std, base_weight, patch_weight
    geometry: Tuple[int, int, int, int]  # (Gh, Gw, oy, ox)
    canvas: Tuple[int, int]  # (H, W)
    activation: str
    normalize: str  # "after" or "none" (no mean/std given)
    clamp: Optional[Tuple[float, float]]
    spatial_ndim: int

    def op_args(self) -> tuple:
        """The op's arguments after (cells, table, program, program_mask, base), in OPTIONS_SCHEMA order."""
        return (self.norm, list(self.geometry), list(self.canvas), self.activation, self.normalize,
                None if self.clamp is None else list(self.clamp))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _err(arg: str, expected: str, got) -> str:
    return f"{OP}: {arg} must be {expected}, got {got}"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_size(value, nsp: int, arg: str, minimum: int) -> tuple:
    if _is_int(value):
        size = (value,) * nsp
    elif isinstance(value, (tuple, list, torch.Size)) and all(_is_int(v) for v in value):
        size = tuple(value)
    else:
        raise TypeError(_err(arg, f"an int or a sequence of {nsp} ints", repr(value)))
    if len(size) != nsp:
        raise ValueError(_err(arg, f"{nsp} sizes (one per patch dim of table)", repr(value)))
    if any(s < minimum for s in size):
        raise ValueError(_err(arg, f">= {minimum}", repr(value)))
    return size


def _real(v, arg: str) -> float:
    if isinstance(v, (bool, str, bytes, complex)) or v is None:
        raise TypeError(_err(arg, "real numbers", repr(v)))
    try:
        f = float(v)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(_err(arg, "real numbers", repr(v))) from None
    return f


def _channel_values(value, channels: int, arg: str, positive: bool = False) -> list:
    """A float or one float per channel, finite (std: > 0 with a finite reciprocal), as a list of C floats."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(_err(arg, "real numbers", value.dtype))
        if torch.compiler.is_compiling():
            raise TypeError(_err(arg, "Python numbers under torch.compile (a tensor needs a host read)", "a tensor"))
        given = value.detach().double().reshape(-1).cpu().tolist()
    elif isinstance(value, (tuple, list)):
        given = [_real(v, arg) for v in value]
    else:
        given = [_real(value, arg)]
    if len(given) not in (1, channels):
        raise ValueError(_err(arg, f"1 or C={channels} values", f"{len(given)} values"))
    big = torch.finfo(torch.float32).max
    if not all(abs(v) <= big and (not positive or v >= 1 / big) for v in given):  # False for nan too
        raise ValueError(_err(arg, "finite in float32" + (", > 0, with a finite reciprocal" if positive else ""),
                              given))
    return given * channels if len(given) == 1 else given


def _check_tensor(t, arg: str, floating: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(_err(arg, "a torch.Tensor", type(t).__name__))
    if floating and t.dtype not in FLOAT_DTYPES:
        raise TypeError(_err(arg, "float16/bfloat16/float32/float64", t.dtype))


def _canvas_tensor(t, arg: str, nsp: int, canvas: tuple, B: int, C: int, dtype, device,
                   spatial_broadcast: bool) -> torch.Tensor:
    """program / program_mask / base -> [B' in {1, B}, C' in {1, C}, H, W] (1-D: H = 1), table dtype.

    Accepted: [*S], [C', *S], [B', C', *S]; spatial dims equal to the canvas (or 1 where
    spatial_broadcast). Size-1 spatial dims are expanded here (aten ops: autograd sums them back)."""
    _check_tensor(t, arg)
    if t.device != device:
        raise ValueError(_err(arg, f"on the tokens' device {device}", t.device))
    if not nsp <= t.dim() <= nsp + 2:
        raise ValueError(_err(arg, f"[*S], [C, *S] or [B, C, *S] with S = {list(canvas)}", list(t.shape)))
    lead = t.shape[: t.dim() - nsp]
    spatial = tuple(t.shape[t.dim() - nsp:])
    ok = all(s == c or (spatial_broadcast and s == 1) for s, c in zip(spatial, canvas))
    lead = (1,) * (2 - len(lead)) + tuple(lead)
    if not ok or lead[0] not in (1, B) or lead[1] not in (1, C):
        sp = "each 1 or the canvas size " if spatial_broadcast else ""
        raise ValueError(_err(arg, f"[*S], [1|C, *S] or [1|B, 1|C, *S] with B={B}, C={C}, S {sp}= {list(canvas)}",
                              list(t.shape)))
    t = t.reshape(*lead, *spatial)
    if nsp == 1:
        t = t.unsqueeze(-2)
    H, W = (1,) + tuple(canvas) if nsp == 1 else tuple(canvas)
    if t.shape[-2:] != (H, W):
        t = t.expand(*lead, H, W)
    return t.to(dtype).contiguous()


def _cells(tokens: torch.Tensor, G: int, pad, V: int) -> torch.Tensor:
    """int64 [B, G]: tokens[b, g] for g < L, then the pad rule's token."""
    B, L = tokens.shape
    t = tokens.to(torch.int64)
    if L == G:
        return t.contiguous()
    if pad == "repeat_last":
        fill = t[:, -1:].expand(B, G - L)
    else:
        fill = t.new_full((B, G - L), pad)
    return torch.cat([t, fill], dim=1)


def check_token_values(cells: torch.Tensor, V: int) -> None:
    """Every cell's token in [0, V) (eager: a host read naming the bad value; compiled: an in-graph assert)."""
    if cells.numel() == 0:
        return
    words = f"{OP}: tokens must hold ids in [0, V={V}) (V = table.shape[0])"
    if torch.compiler.is_compiling():
        torch._assert_async(((cells >= 0) & (cells < V)).all(), words)
        return
    lo, hi = int(cells.min()), int(cells.max())
    if lo < 0 or hi >= V:
        raise ValueError(f"{words}, got {lo if lo < 0 else hi}")


def canonicalize(tokens, table, *, grid, out_size, offset, activation, pad, program, program_mask, base,
                 base_weight, patch_weight, clamp, mean, std, normalize) -> CanonicalTokens:
    _check_tensor(tokens, "tokens", floating=False)
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(_err("tokens", "an integer tensor (token ids)", tokens.dtype))
    if tokens.dim() != 2:
        raise ValueError(_err("tokens", "[B, L] (token ids)", list(tokens.shape)))
    B, L = tokens.shape
    if L == 0:
        raise ValueError(_err("tokens", "[B, L] with L >= 1 (an empty sequence has no token to draw)",
                              list(tokens.shape)))
    _check_tensor(table, "table")
    if table.dim() not in (3, 4):
        raise ValueError(_err("table", "[V, C, P] (1-D patches) or [V, C, Ph, Pw] (2-D patches)", list(table.shape)))
    if table.device != tokens.device:
        raise ValueError(_err("table", f"on the tokens' device {tokens.device}", table.device))
    nsp = table.dim() - 2
    V, C = table.shape[:2]
    patch = tuple(table.shape[2:])
    if V == 0 or C == 0 or 0 in patch:
        raise ValueError(_err("table", "non-empty [V, C, *P]", list(table.shape)))
    grid = _as_size(grid, nsp, "grid", 1)
    span = tuple(g * p for g, p in zip(grid, patch))
    canvas = span if out_size is None else _as_size(out_size, nsp, "out_size", 1)
    if offset is None:  # centred as masked_perturb centres its input: (out - in + 1) // 2
        off = tuple((c - s + 1) // 2 for c, s in zip(canvas, span))
    else:
        off = _as_size(offset, nsp, "offset", 0)
    if any(o < 0 or o + s > c for o, s, c in zip(off, span, canvas)):
        raise ValueError(_err("out_size", f"large enough for the grid ({list(grid)} cells of {list(patch)} = "
                              f"{list(span)}) at offset {list(off)}", list(canvas)))
    G = math.prod(grid)
    if L > G:
        raise ValueError(_err("grid", f"at least L={L} cells (one per token; slice tokens[:, :{G}] to drop the rest)",
                              f"{list(grid)} = {G} cells"))
    if L < G and pad is None:
        raise ValueError(_err("pad", f"a pad rule ('repeat_last' or a token id): the grid has {G} cells for L={L} "
                              "tokens", None))
    if pad is not None and not (pad in PAD_RULES or _is_int(pad)):
        raise TypeError(_err("pad", "'repeat_last', an int token id or None", repr(pad)))
    if _is_int(pad) and not 0 <= pad < V:
        raise ValueError(_err("pad", f"a token id in [0, V={V})", pad))
    if activation not in ACTIVATIONS:
        raise ValueError(_err("activation", f"one of {tuple(ACTIVATIONS)}", repr(activation)))
    if normalize not in NORMALIZE:
        raise ValueError(_err("normalize", f"one of {NORMALIZE}", repr(normalize)))
    if (mean is None) != (std is None):
        raise ValueError(_err("mean, std", "both given or both None", f"mean={mean!r}, std={std!r}"))
    dtype, device = table.dtype, table.device
    H, W = (1,) + canvas if nsp == 1 else canvas
    if program is None and program_mask is not None:
        raise ValueError(_err("program_mask", "None when no program is given", "a tensor"))
    if program_mask is not None and isinstance(program_mask, torch.Tensor) and program_mask.requires_grad:
        raise ValueError(_err("program_mask", "a constant (its gradient is not computed); pass program_mask.detach()",
                              "a tensor that requires grad"))
    prog = None if program is None else _canvas_tensor(program, "program", nsp, canvas, B, C, dtype, device, False)
    pmask = (None if program_mask is None else
             _canvas_tensor(program_mask, "program_mask", nsp, canvas, B, C, dtype, device, True))
    base_t = None if base is None else _canvas_tensor(base, "base", nsp, canvas, B, C, dtype, device, True)
    acc = accumulation_dtype(dtype)
    normalise = normalize == "after" and mean is not None
    mean_v = _channel_values(mean, C, "mean") if normalise else [0.0] * C
    std_v = _channel_values(std, C, "std", positive=True) if normalise else [1.0] * C
    rows = [mean_v, [1.0 / s for s in std_v], _channel_values(base_weight, C, "base_weight"),
            _channel_values(patch_weight, C, "patch_weight")]
    norm = torch.tensor(rows, dtype=acc).to(device)
    clamp_t = None
    if clamp is not None:
        if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
            raise TypeError(_err("clamp", "(lo, hi) or None", repr(clamp)))
        lo, hi = _real(clamp[0], "clamp"), _real(clamp[1], "clamp")
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(_err("clamp", "(lo, hi) with lo <= hi", repr(clamp)))
        clamp_t = (lo, hi)
    cells = _cells(tokens, G, pad, V)
    gh, gw = (1,) + grid if nsp == 1 else grid
    oy, ox = (0,) + off if nsp == 1 else off
    return CanonicalTokens(cells, table.contiguous().reshape(V, C, *((1,) + patch if nsp == 1 else patch)), prog,
                           pmask, base_t, norm, (gh, gw, oy, ox), (H, W), activation,
                           "after" if normalise else "none", clamp_t, nsp)
