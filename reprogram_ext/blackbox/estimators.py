"""Zeroth-order gradient estimates from the losses of a seeded query bank (docs/blackbox.md).

With losses f_k of the bank's queries (``perturbation_bank`` with the same seed, q, directions,
antithetic and theta's number of elements d):
- one-sided (query 0 is theta):   g = (b / q) sum_j ((f_j - f_0) / beta) v_j
- antithetic (pairs theta +- beta u_j):   g = (b / q) sum_j ((f_j+ - f_j-) / (2 beta)) v_j
with v_j = u_j for "sphere" (RGE, BAR: b = d) and "gaussian" (b = 1) directions, and
v_j = Delta_j^-1 (elementwise) for "segmented" ones (SPSA, BlackVIP: b = 1); ``scale`` replaces b.
The directions are regenerated from the seed (never stored); the weights
w_j = b * diff_j / (q * beta [* 2]) are computed in float64 and rounded once to the compute dtype
(float32, float64 for float64 theta), the sum runs over j ascending.

CGE (DeepZero): ``coordinate_bank`` queries theta and theta + mu e_i for a chunk of coordinates i,
``cge_gradient`` turns those losses into g_i = (f_i - f_0) / mu on the chunk (0 elsewhere); chunks
from ``coordinate_chunks`` cover theta once, and their estimates add.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..ops.masked_perturb import masked_perturb
from ..ops.masked_perturb.options import FLOAT_DTYPES
from ..ops.perturbation_bank.api import combine_directions, compute_dtype
from ..ops.perturbation_bank.args import (as_count, as_directions, as_flag, as_seed, as_step, check_numel, err,
                                          num_queries)
from ..ops.perturbation_bank.options import DEFAULT_SCALE
from ..ops.perturbation_bank.reference import direction_values


def _theta(theta, fn: str) -> torch.Tensor:
    if not isinstance(theta, torch.Tensor):
        raise TypeError(err(fn, "theta", "a torch.Tensor", type(theta).__name__))
    if theta.dtype not in FLOAT_DTYPES:
        raise TypeError(err(fn, "theta", "a floating tensor", theta.dtype))
    return theta


def _losses(losses, fn: str, device) -> torch.Tensor:
    """losses as a float64 [Q] tensor on ``device``, checked finite (a host read in eager mode)."""
    if isinstance(losses, torch.Tensor):
        if not (losses.is_floating_point()):
            raise TypeError(err(fn, "losses", "a floating tensor [Q]", losses.dtype))
        t = losses.detach()
    else:
        try:
            t = torch.tensor(losses, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(err(fn, "losses", "a floating tensor [Q] or a sequence of Q numbers",
                                type(losses).__name__)) from None
    if t.dim() != 1:
        raise ValueError(err(fn, "losses", "one scalar loss per query, shape [Q]", f"shape {tuple(t.shape)}"))
    t = t.to(device=device, dtype=torch.float64)
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(t).all()):
        bad = [i for i, v in enumerate(t.cpu().tolist()) if not torch.isfinite(torch.tensor(v))]
        raise ValueError(err(fn, "losses", "finite", f"non-finite values at queries {bad[:8]}"))
    return t


def _scale(scale, directions: str, numel: int, fn: str) -> float:
    return DEFAULT_SCALE(directions, numel) if scale is None else as_step(scale, fn, "scale")


def zo_weights(losses, *, q: int, beta: float, antithetic: bool, scale: float) -> torch.Tensor:
    """w_j = scale * diff_j / (q * beta) one-sided, scale * diff_j / (q * 2 beta) antithetic (float64 [q])."""
    if antithetic:
        diff = losses[0::2] - losses[1::2]
        return diff * (scale / (q * 2.0 * beta))
    return (losses[1:] - losses[0]) * (scale / (q * beta))


def zo_gradient(losses, theta: torch.Tensor, *, seed: int, beta: float, directions: str = "sphere",
                antithetic: bool = False, scale: Optional[float] = None, q: Optional[int] = None,
                backend: str = "auto") -> torch.Tensor:
    """The zeroth-order estimate (module docstring) from the Q losses of a bank, shaped like theta.

    ``losses [Q]``: Q = q + 1 (query 0 is theta) or 2q (antithetic). ``q``, when given, must be the
    bank's q (a check: a bank of another size is detected, a bank of another seed cannot be). Returns
    theta's dtype (computed in float32, float64 for float64 theta). Nothing is modified.
    """
    fn = "zo_gradient"
    theta = _theta(theta, fn)
    seed = as_seed(seed, fn)
    beta = as_step(beta, fn, "beta")
    directions = as_directions(directions, fn)
    antithetic = as_flag(antithetic, fn, "antithetic")
    check_numel(theta.numel(), directions, fn)
    b = _scale(scale, directions, theta.numel(), fn)
    f = _losses(losses, fn, theta.device)
    Q = f.numel()
    if antithetic and (Q < 2 or Q % 2):
        raise ValueError(err(fn, "losses", "an even number Q = 2q >= 2 of losses for an antithetic bank", f"Q={Q}"))
    if not antithetic and Q < 2:
        raise ValueError(err(fn, "losses", "Q = q + 1 >= 2 losses (query 0 is theta)", f"Q={Q}"))
    bank_q = Q // 2 if antithetic else Q - 1
    if q is not None and as_count(q, fn, "q") != bank_q:
        raise ValueError(f"{fn}: the losses are those of a bank with q={bank_q} "
                         f"({Q} queries{', antithetic' if antithetic else ''}), but q={q} was given")
    compute = compute_dtype(theta.dtype)
    w = zo_weights(f, q=bank_q, beta=beta, antithetic=antithetic, scale=b).to(compute)
    g = combine_directions(w, seed=seed, numel=theta.numel(), directions=directions, backend=backend)
    return g.view(theta.shape).to(theta.dtype)


def zo_directions(shape, *, seed: int, q: int, directions: str = "sphere", dtype: torch.dtype = torch.float32,
                  device=None) -> torch.Tensor:
    """The q directions u_1..u_q of a bank, materialised ``[q, *shape]`` (for inspection and tests; the
    bank and the estimate never store them)."""
    fn = "zo_directions"
    shape = torch.Size(shape)
    seed = as_seed(seed, fn)
    q = as_count(q, fn, "q")
    directions = as_directions(directions, fn)
    check_numel(shape.numel(), directions, fn, "shape")
    return torch.stack([direction_values(seed, j, shape.numel(), directions, dtype, device).view(shape)
                        for j in range(1, q + 1)])


def _coords(coords, numel: int, fn: str, device) -> torch.Tensor:
    t = torch.as_tensor(coords, device=device) if not isinstance(coords, torch.Tensor) else coords.to(device)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(err(fn, "coords", "a non-empty 1-D tensor of flat indices", f"shape {tuple(t.shape)}"))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(err(fn, "coords", "integer flat indices of theta", t.dtype))
    t = t.to(torch.int64)
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= numel:
        raise ValueError(err(fn, "coords", f"flat indices in [0, d={numel})", f"values in [{lo}, {hi}]"))
    if torch.unique(t).numel() != t.numel():
        raise ValueError(err(fn, "coords", "distinct indices", "repeated indices"))
    return t


def coordinate_chunks(theta: torch.Tensor, chunk: int, coords=None) -> List[torch.Tensor]:
    """The coordinate set (default: all d flat indices of theta) split into chunks of ``chunk``."""
    fn = "coordinate_chunks"
    theta = _theta(theta, fn)
    chunk = as_count(chunk, fn, "chunk")
    c = (torch.arange(theta.numel(), device=theta.device) if coords is None
         else _coords(coords, theta.numel(), fn, theta.device))
    return list(torch.split(c, chunk))


def coordinate_bank(x: torch.Tensor, theta: torch.Tensor, mask: Optional[torch.Tensor] = None, *, coords,
                    mu: float, out_dtype: Optional[torch.dtype] = None, backend: str = "auto",
                    **options) -> torch.Tensor:
    """CGE queries ``[1 + K, B, C, *S_out]``: query 0 applies theta, query k applies theta + mu e_{coords[k-1]}
    (through ``masked_perturb(x, ., mask, **options)``); float32 (float64 for float64 theta) unless
    ``out_dtype``."""
    fn = "coordinate_bank"
    theta = _theta(theta, fn)
    mu = as_step(mu, fn, "mu")
    c = _coords(coords, theta.numel(), fn, theta.device)
    compute = compute_dtype(theta.dtype)
    base = theta.detach().to(compute)
    step = torch.tensor(mu, dtype=compute, device=theta.device)
    outs = [masked_perturb(x, base, mask, out_dtype=compute, backend=backend, **options)]
    for i in c.tolist():
        t = base.clone()
        t.view(-1)[i] += step
        outs.append(masked_perturb(x, t, mask, out_dtype=compute, backend=backend, **options))
    out = torch.stack(outs)
    return out if out_dtype is None else out.to(out_dtype)


def cge_gradient(losses, theta: torch.Tensor, *, coords, mu: float) -> torch.Tensor:
    """g_i = (f_k - f_0) / mu at i = coords[k-1], 0 elsewhere, shaped like theta (float64 differences,
    rounded once to theta's dtype). ``losses [1 + K]``: those of ``coordinate_bank`` with the same coords."""
    fn = "cge_gradient"
    theta = _theta(theta, fn)
    mu = as_step(mu, fn, "mu")
    c = _coords(coords, theta.numel(), fn, theta.device)
    f = _losses(losses, fn, theta.device)
    if f.numel() != c.numel() + 1:
        raise ValueError(err(fn, "losses", f"1 + K = {c.numel() + 1} values (theta, then one per coordinate)",
                             f"{f.numel()} values"))
    g = torch.zeros(theta.numel(), dtype=torch.float64, device=theta.device)
    g[c] = (f[1:] - f[0]) / mu
    return g.view(theta.shape).to(theta.dtype)
