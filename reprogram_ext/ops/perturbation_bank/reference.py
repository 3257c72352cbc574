"""Pure-PyTorch perturbation bank and directions' weighted sum: the oracle of the tests.

Bank query k (canonical form, compute dtype float32 or float64):
    theta_k = theta + s_k * (beta * u_{j_k})      (j_k = 0: theta itself; s_k = +-1)
    out[k]  = masked_perturb(x, theta_k, mask, options)     (the reference's formula)
Weighted sum: out = sum_{j=1..q} w_j * u_j   (segmented: w_j / Delta_j), j ascending, in w's dtype.
"""
from __future__ import annotations

import dataclasses

import torch

from ..masked_perturb.reference import masked_perturb_reference
from . import philox
from .args import CanonicalBank, query_of


BLOCK = 1 << 20  # elements of directions generated at once by the reference


def direction_values(seed: int, j, numel: int, directions: str, dtype, device) -> torch.Tensor:
    """u_j as a flat tensor of ``dtype`` (float32 values, widened for float64); j an int ([numel]) or a
    sequence of directions ([len(j), numel])."""
    return philox.direction(seed, j, numel, directions, device).to(dtype)


def _direction_blocks(seed: int, js, numel: int, directions: str, dtype, device):
    """(start, u [n, numel]) for blocks of the directions ``js``."""
    per = max(1, BLOCK // numel)
    for s in range(0, len(js), per):
        yield s, direction_values(seed, list(js[s:s + per]), numel, directions, dtype, device)


def bank_reference(cb: CanonicalBank) -> torch.Tensor:
    cp = cb.perturb
    theta = cp.delta
    compute = theta.dtype
    beta = torch.tensor(cb.beta, dtype=compute).item()  # beta rounded to the compute dtype
    queries = [query_of(k, cb.antithetic) for k in range(cb.query_start, cb.query_stop)]
    js = sorted({j for j, _ in queries if j > 0})
    steps = {}
    for s, u in _direction_blocks(cb.seed, js, theta.numel(), cb.directions, compute, theta.device):
        for i in range(u.shape[0]):
            steps[js[s + i]] = (u[i] * beta).view(theta.shape)
    outs = []
    for j, sign in queries:
        theta_k = theta if j == 0 else theta + steps[j] * sign
        outs.append(masked_perturb_reference(dataclasses.replace(cp, delta=theta_k)))
    out = torch.stack(outs)
    if cp.spatial_ndim == 1:
        out = out.squeeze(-2)
    return out.to(cb.out_dtype)


def combine_reference(weights: torch.Tensor, seed: int, numel: int, directions: str) -> torch.Tensor:
    """sum_j w_j u_j (segmented: w_j / Delta_j) in weights' dtype, j = 1..len(weights) ascending."""
    acc = torch.zeros(numel, dtype=weights.dtype, device=weights.device)
    js = list(range(1, weights.numel() + 1))
    for s, u in _direction_blocks(seed, js, numel, directions, weights.dtype, weights.device):
        w = weights[s:s + u.shape[0]].view(-1, 1)
        terms = w / u if directions == "segmented" else w * u
        for i in range(terms.shape[0]):  # j ascending, one rounding per addition
            acc = acc + terms[i]
    return acc
