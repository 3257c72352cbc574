"""Pure-PyTorch tokens_to_canvas on the canonical form (args.py): the oracle of the tests and the
eager baseline of the benchmarks (gather, fold, blend). Plain torch ops, differentiated by autograd;
math in float32 at least (float64 for a float64 table).

Per output element (b, c, h, w), with the grid's cells of Ph x Pw at offset (oy, ox):
    inside the grid: g = (h - oy) // Ph * Gw + (w - ox) // Pw,  t = cells[b, g],
                     u = patch_weight_c * act(table[t, c, (h - oy) % Ph, (w - ox) % Pw]);  outside: u = 0
    v = base_weight_c * base[b?, c?, h, w] + u + program_mask[b?, c?, h, w] * act(program[b?, c?, h, w])
    v = clamp(v, lo, hi);   out = (v - mean_c) / std_c   (normalize="after" with mean/std)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .args import CanonicalTokens, accumulation_dtype
from .options import ACTIVATIONS


def patch_canvas(cells: torch.Tensor, patches: torch.Tensor, geometry, canvas) -> torch.Tensor:
    """The patches of each cell's token, folded into the canvas: [B, C, H, W], 0 outside the grid.

    patches [V, C, Ph, Pw] (already activated and weighted); gather -> [B, Gh, Gw, C, Ph, Pw] -> fold."""
    gh, gw, oy, ox = geometry
    H, W = canvas
    V, C, ph, pw = patches.shape
    B = cells.shape[0]
    u = patches[cells].reshape(B, gh, gw, C, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(B, C, gh * ph, gw * pw)
    return F.pad(u, [ox, W - ox - gw * pw, oy, H - oy - gh * ph])


def tokens_to_canvas_reference(cp: CanonicalTokens) -> torch.Tensor:
    dtype = cp.table.dtype
    compute = accumulation_dtype(dtype)
    act = ACTIVATIONS[cp.activation]
    norm = cp.norm.to(compute)
    C = cp.table.shape[1]
    mean, inv_std, base_w, patch_w = (norm[i].view(1, C, 1, 1) for i in range(4))
    patches = act(cp.table.to(compute)) * patch_w.view(1, C, 1, 1)
    v = patch_canvas(cp.cells, patches, cp.geometry, cp.canvas)
    if cp.base is not None:
        v = base_w * cp.base.to(compute) + v
    if cp.program is not None:
        a = act(cp.program.to(compute))
        v = v + (a if cp.program_mask is None else cp.program_mask.to(compute) * a)
    if cp.clamp is not None:
        v = torch.clamp(v, *cp.clamp)
    if cp.normalize == "after":
        v = (v - mean) * inv_std
    return v.to(dtype).contiguous()
