"""Pure-PyTorch masked_perturb on the canonical 4-D form: the oracle of the tests and the eager
baseline of the benchmarks. Plain torch ops, differentiated by autograd; math in float32 at least.

Per output element (b, c, h, w), with X = resize(x) placed at each offset (copies add):
    u = sum_k X[b, c, h - oy_k, w - ox_k];  u = N(u) where covered   (normalize="before")
    a = act(delta);  m = mask[.., h // s, w // s]
    v = u + m*a  (add)   or   (1 - m)*u + m*a  (replace);   v = clamp(v, lo, hi)
    out = N(v)   (normalize="after"),   N(z) = (z - mean_c) / std_c
Prompt bank (bank=True, delta [V, Cd, H, W]): the same formula for every (v, b) by broadcasting
delta over the batch and x / mask over the V programs; output [V * B, C, H, W] (program-major).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .args import CanonicalPerturb
from .options import ACTIVATIONS


def copy_visible(offset, resized, canvas) -> bool:
    """Whether a copy of size `resized` placed at `offset` overlaps the canvas at all."""
    return all(o < c and o + r > 0 for o, r, c in zip(offset, resized, canvas))


def _pads(offset, resized, canvas):
    """F.pad amounts (left, right, top, bottom) placing a resized input at `offset` (negative = crop)."""
    (oy, ox), (hr, wr), (h, w) = offset, resized, canvas
    return [ox, w - ox - wr, oy, h - oy - hr]


def masked_perturb_reference(cp: CanonicalPerturb) -> torch.Tensor:
    cfg = cp.options
    compute = torch.float64 if cp.out_dtype == torch.float64 else torch.float32
    x = cp.x.to(compute) / 255 if cp.x.dtype == torch.uint8 else cp.x.to(compute)
    B, C = x.shape[0], cp.channels
    H, W = cp.delta.shape[-2:]
    if x.shape[1] != C:
        x = x.expand(B, C, *x.shape[2:])
    if cfg.resize_mode != "none":
        x = F.interpolate(x, size=tuple(cfg.resized_size), mode=cfg.resize_mode,
                          align_corners=False if cfg.resize_mode == "bilinear" else None)
    resized = tuple(x.shape[2:])
    u, covered = None, None
    for off in cfg.offsets:
        if not copy_visible(off, resized, (H, W)):
            continue
        p = _pads(off, resized, (H, W))
        placed = F.pad(x, p)
        cov = F.pad(torch.ones(resized, dtype=torch.bool, device=x.device), p)
        u = placed if u is None else u + placed
        covered = cov if covered is None else covered | cov
    if u is None:  # no copy reaches the canvas
        u = torch.zeros((B, C, H, W), dtype=compute, device=x.device)
        covered = torch.zeros((H, W), dtype=torch.bool, device=x.device)
    mean = cp.norm[0].to(compute).view(1, C, 1, 1)
    std = (1 / cp.norm[1].to(compute)).view(1, C, 1, 1)
    if cfg.normalize == "before":
        u = torch.where(covered, (u - mean) / std, u)
    a = ACTIVATIONS[cfg.activation](cp.delta.to(compute))
    if cfg.bank:  # [V, 1, C, H, W] programs against [1, B, C, H, W] samples
        a, u = a.unsqueeze(1), u.unsqueeze(0)
    if cp.mask is not None:
        m = cp.mask.to(compute)
        s = cfg.mask_scale
        for dim, size in ((-2, H), (-1, W)):
            if s > 1 and m.shape[dim] > 1:  # patch-wise (nearest) upsampling: position p reads p // s
                m = m.repeat_interleave(s, dim=dim).narrow(dim, 0, size)
        if cfg.bank:
            m = m.unsqueeze(0)
        v = u + m * a if cfg.blend == "add" else (1 - m) * u + m * a
    else:
        v = u + a if cfg.blend == "add" else 0 * u + a  # replace with m = 1: x still gets its (zero) gradient
    if cfg.clamp is not None:
        v = torch.clamp(v, *cfg.clamp)
    if cfg.normalize == "after":
        v = (v - mean) / std
    if cfg.bank:
        v = v.expand(cp.delta.shape[0], B, C, H, W).reshape(-1, C, H, W)
    return v.to(cp.out_dtype).contiguous()
