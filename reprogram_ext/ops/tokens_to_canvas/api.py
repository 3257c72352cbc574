"""``tokens_to_canvas``: token ids and a learned patch table to the normalised input canvas
(docs/ops/tokens_to_canvas.md)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from ... import _extension  # noqa: F401  (loads the compiled kernels when built)
from ...backend_registry import resolve_backend
from .args import canonicalize, check_token_values
from .backends import auto_order, refusal
from .reference import tokens_to_canvas_reference

Size = Union[int, Sequence[int]]
Weight = Union[float, Sequence[float]]


def tokens_to_canvas(
    tokens: torch.Tensor,
    table: torch.Tensor,
    *,
    grid: Size,
    out_size: Optional[Size] = None,
    offset: Optional[Size] = None,
    activation: str = "tanh",
    pad: Union[str, int, None] = "repeat_last",
    program: Optional[torch.Tensor] = None,
    program_mask: Optional[torch.Tensor] = None,
    base: Optional[torch.Tensor] = None,
    base_weight: Weight = 1.0,
    patch_weight: Weight = 1.0,
    clamp: Optional[Tuple[float, float]] = None,
    mean=None,
    std=None,
    normalize: str = "after",
    backend: str = "auto",
) -> torch.Tensor:
    """Draw each token as a learned patch on a grid of cells and blend the grid into a canvas.

    ``tokens [B, L]`` int, ``table [V, C, *P]`` (one patch per token, ``P = (Ph, Pw)`` or ``(P,)``),
    ``grid`` cells per dim (``Gh x Gw`` or ``G``). Per output element ``(b, c, p)`` of
    ``[B, C, *out_size]`` (``out_size`` default ``grid * P``; the grid's first element lands at
    ``offset``, default centred ``(out - grid * P + 1) // 2``):

    1. inside the grid: ``g`` = the row-major index of p's cell, ``t = tokens[b, g]`` (cells
       ``g >= L`` take the last token with ``pad="repeat_last"``, or the id ``pad``; ``pad=None``
       needs ``L == cells``), ``u = patch_weight_c * act(table[t, c, p mod P])``; outside it ``u = 0``;
    2. ``v = base_weight_c * base[b?, c?, p] + u + program_mask[b?, c?, p] * act(program[b?, c, p])``
       (each term only when given; ``act``: none / tanh / sigmoid / relu, the same for both);
    3. ``v = min(max(v, lo), hi)`` when ``clamp=(lo, hi)``;
    4. ``out = (v - mean_c) / std_c`` when ``normalize="after"`` and mean/std are given, else ``v``.

    ``base``/``program_mask``: ``[*S]``, ``[1|C, *S]`` or ``[1|B, 1|C, *S]`` (size-1 spatial dims
    broadcast); ``program``: ``[1|C, *S]`` or ``[B, 1|C, *S]``. ``base_weight`` / ``patch_weight``: a
    float or one per channel. Output dtype: ``table.dtype``; math in float32 at least (float64 for
    float64). Gradients: to ``table`` (each row: the sum, in a fixed order, over the cells holding
    its token; deterministic), ``program`` and ``base``; ``program_mask`` is a constant.
    ``backend``: auto / cuda / triton / cpu / reference.

    Example (Neekhara et al. 2022: 24 x 24 cells of 16 x 16, base image + 0.2 tanh patches,
    clamped to [0, 1] in pixel space, then normalised)::

        out = tokens_to_canvas(ids, table, grid=24, base=image, patch_weight=0.2,
                               clamp=(0.0, 1.0), mean=mean, std=std)
    """
    cp = canonicalize(tokens, table, grid=grid, out_size=out_size, offset=offset, activation=activation, pad=pad,
                      program=program, program_mask=program_mask, base=base, base_weight=base_weight,
                      patch_weight=patch_weight, clamp=clamp, mean=mean, std=std, normalize=normalize)
    chosen = resolve_backend(backend, tokens.device, "tokens_to_canvas_forward", refusal(cp), auto_order(cp, tokens.device.type))
    if chosen != "cpu":  # the C++ CPU kernels check the token values themselves
        check_token_values(cp.cells, cp.table.shape[0])
    if chosen == "reference" or cp.cells.shape[0] == 0:
        out = tokens_to_canvas_reference(cp)
    else:
        if chosen == "triton":
            from . import triton_op

            op = triton_op.forward_op()
        else:
            op = torch.ops.reprogram_ext.tokens_to_canvas_forward
        out = op(cp.cells, cp.table, cp.program, cp.program_mask, cp.base, *cp.op_args())
    return out.squeeze(-2) if cp.spatial_ndim == 1 else out
