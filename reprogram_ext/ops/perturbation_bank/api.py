"""``perturbation_bank``: the Q query canvases of one zeroth-order step in one pass, and
``combine_directions``: the directions' weighted sum of the estimate (docs/blackbox.md)."""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from ... import _extension  # noqa: F401  (loads the compiled kernels when built)
from ...backend_registry import resolve_backend
from ..masked_perturb.args import canonicalize
from ..masked_perturb.options import FLOAT_DTYPES
from .args import (CanonicalBank, as_count, as_directions, as_flag, as_query_range, as_seed, as_step, check_numel,
                   err, low_precision_warning, num_queries, signed_seed)
from .backends import auto_order, refusal
from .options import PERTURB_DEFAULTS
from .reference import bank_reference, combine_reference

FN = "perturbation_bank"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def canonicalize_bank(x, theta, mask, *, q, beta, seed, directions, antithetic, queries, out_dtype,
                      options: dict) -> CanonicalBank:
    if not isinstance(theta, torch.Tensor):
        raise TypeError(err(FN, "theta", "a torch.Tensor", type(theta).__name__))
    if theta.dtype not in FLOAT_DTYPES:
        raise TypeError(err(FN, "theta", "a floating tensor", theta.dtype))
    q = as_count(q, FN, "q")
    beta = as_step(beta, FN, "beta")
    seed = as_seed(seed, FN)
    directions = as_directions(directions, FN)
    antithetic = as_flag(antithetic, FN, "antithetic")
    check_numel(theta.numel(), directions, FN)
    start, stop = as_query_range(queries, num_queries(q, antithetic), FN)
    if out_dtype is None:  # float32 (float64 for float64 theta), also under autocast
        out_dtype = compute_dtype(theta.dtype)
    if out_dtype not in FLOAT_DTYPES:
        raise TypeError(err(FN, "out_dtype", "a floating dtype", out_dtype))
    compute = compute_dtype(out_dtype if out_dtype == torch.float64 else theta.dtype)
    unknown = sorted(set(options) - set(PERTURB_DEFAULTS))
    if unknown:
        raise TypeError(err(FN, "options", f"masked_perturb's input-transform options {tuple(PERTURB_DEFAULTS)}",
                            unknown))
    cp = canonicalize(x, theta, mask, out_dtype=compute, **{**PERTURB_DEFAULTS, **options})
    warning = low_precision_warning(out_dtype, beta, directions, theta.numel())
    if warning is not None:
        warnings.warn(warning, RuntimeWarning, stacklevel=3)
    return CanonicalBank(cp, seed, q, beta, directions, antithetic, start, stop, out_dtype)


def perturbation_bank(x: torch.Tensor, theta: torch.Tensor, mask: Optional[torch.Tensor] = None, *, q: int,
                      beta: float, seed: int, directions: str = "sphere", antithetic: bool = False,
                      queries=None, out_dtype: Optional[torch.dtype] = None, backend: str = "auto",
                      **options) -> torch.Tensor:
    """The Q query canvases ``[Q, B, C, *S_out]`` of one zeroth-order step.

    Query 0 applies theta, query j = 1..q applies theta + beta * u_j; with ``antithetic=True`` there
    is no centre and Q = 2q: query 2(j-1) applies theta + beta * u_j, query 2(j-1)+1 theta - beta * u_j.
    Each query is ``masked_perturb(x, theta_k, mask, **options)`` (``options``: masked_perturb's
    out_size, resize, resize_mode, offset, activation, blend, normalize, mean, std, clamp,
    mask_scale). u_j is regenerated from (seed, j, element) by the Philox4x32-10 generator
    (``directions``: "sphere" z/||z||, "gaussian" z, "segmented" entries uniform on +-[0.5, 1)),
    the same bits on every backend, and never stored. ``queries``: a range of the Q queries to build
    (default all; ranks or memory-bound callers build disjoint parts). Output dtype: ``out_dtype``,
    else float32 (float64 for float64 theta), also under autocast; a RuntimeWarning when a
    float16/bfloat16 ``out_dtype`` cannot resolve the perturbations (BlackVIP issue #2).
    """
    cb = canonicalize_bank(x, theta, mask, q=q, beta=beta, seed=seed, directions=directions, antithetic=antithetic,
                           queries=queries, out_dtype=out_dtype, options=options)
    chosen = resolve_backend(backend, x.device, "perturbation_bank", refusal(cb), auto_order(cb, x.device.type))
    if chosen == "reference" or cb.perturb.x.shape[0] == 0:
        return bank_reference(cb)
    if chosen == "triton":
        from . import triton_op

        op = triton_op.bank_op()
    else:
        op = torch.ops.reprogram_ext.perturbation_bank
    cp = cb.perturb
    out = op(cp.x, cp.delta, cp.mask, signed_seed(cb.seed), cb.q, cb.beta, cb.directions, cb.antithetic,
             cb.query_start, cb.query_stop, *cp.options.option_args(cp.norm))
    if cp.spatial_ndim == 1:
        out = out.squeeze(-2)
    return out if out.dtype == cb.out_dtype else out.to(cb.out_dtype)


def combine_directions(weights: torch.Tensor, *, seed: int, numel: int, directions: str,
                       backend: str = "auto") -> torch.Tensor:
    """sum_{j=1..q} weights[j-1] * u_j (segmented: weights[j-1] / Delta_j), flat [numel], weights' dtype;
    the directions regenerated from ``seed``. ``weights``: float32/float64 [q] (validated by the caller)."""
    chosen = resolve_backend(backend, weights.device, "perturbation_bank_combine")
    if chosen == "reference":
        return combine_reference(weights, seed, numel, directions)
    if chosen == "triton":
        from . import triton_op

        return triton_op.combine(weights, signed_seed(seed), numel, directions)
    return torch.ops.reprogram_ext.perturbation_bank_combine(weights.contiguous(), signed_seed(seed), numel,
                                                              directions)
