"""Triton backend of the perturbation bank: ``reprogram_ext::perturbation_bank_triton`` and
``reprogram_ext::perturbation_bank_combine_triton``, with the schemas and results of the C++ ops
(options.py, csrc/schemas.cpp).

The bank: the sphere's norm partials (int64, exact) and the perturbed programs theta + sign fl(beta u)
are Triton kernels (triton_kernels.py: the directions' bits equal the reference's); the canvases are
masked_perturb's Triton forward over the programs as one prompt bank (bank=True: one launch, the
canvases written once into the [Q, B, ...] output) when theta is one program shared by the batch,
else one forward per query. Imported on the first ``backend="triton"`` call; runs on CUDA
tensors, and on CPU tensors under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton

from ..masked_perturb import triton_op as perturb_triton
from . import autograd
from .args import query_of
from .options import BANK_SCHEMA, COMBINE_SCHEMA, DIRECTIONS
from .triton_kernels import combine_kernel, programs_kernel, sphere_partials_kernel

BANK_NAME = "reprogram_ext::perturbation_bank_triton"
COMBINE_NAME = "reprogram_ext::perturbation_bank_combine_triton"
BLOCK = 256  # element groups (of 4) per program
NO_FMA = dict(enable_fp_fusion=False)  # each operation rounded once, as the reference


def _key(seed: int):
    u = seed % (1 << 64)
    return u & 0xFFFFFFFF, u >> 32


def _blocks(numel: int) -> int:
    return triton.cdiv(triton.cdiv(numel, 4), BLOCK)


def sphere_norms(js: list, seed: int, numel: int, device) -> torch.Tensor:
    """||z_j|| for each j in js (float32, philox.norm_from_fixed of the exact int64 sums)."""
    from .philox import norm_from_fixed

    lo, hi = _key(seed)
    blocks = _blocks(numel)
    partial = torch.empty((len(js), blocks), dtype=torch.int64, device=device)
    js_t = torch.tensor(js, dtype=torch.int32, device=device)
    sphere_partials_kernel[(len(js), blocks)](partial, js_t, lo, hi, numel, blocks, BLOCK=BLOCK, **NO_FMA)
    return norm_from_fixed(partial.sum(1, keepdim=True)).view(-1)


def programs(theta: torch.Tensor, seed: int, q: int, beta: float, directions: str, antithetic: bool,
             start: int, stop: int) -> torch.Tensor:
    """[nq, *theta.shape]: theta + sign_k fl(beta u_{j_k}) for the queries k in [start, stop)."""
    theta = theta.contiguous()
    numel = theta.numel()
    queries = [query_of(k, antithetic) for k in range(start, stop)]
    js = [j for j, _ in queries]
    signs = torch.tensor([s for _, s in queries], dtype=torch.int32, device=theta.device)
    kind = DIRECTIONS.index(directions)
    norms = torch.ones(len(js), dtype=torch.float32, device=theta.device)
    if directions == "sphere" and any(js):
        used = sorted({j for j in js if j})
        by_j = dict(zip(used, sphere_norms(used, seed, numel, theta.device).tolist()))
        norms = torch.tensor([by_j.get(j, 1.0) for j in js], dtype=torch.float32, device=theta.device)
    out = torch.empty((len(js), numel), dtype=theta.dtype, device=theta.device)
    beta_t = torch.tensor([beta], dtype=theta.dtype, device=theta.device)
    js_t = torch.tensor(js, dtype=torch.int32, device=theta.device)
    lo, hi = _key(seed)
    programs_kernel[(len(js), _blocks(numel))](out, theta, beta_t, js_t, signs, norms, lo, hi, numel, KIND=kind,
                                               BLOCK=BLOCK, **NO_FMA)
    return out.view(len(js), *theta.shape)


def perturbation_bank_triton(x, theta, mask, seed, q, beta, directions, antithetic, query_start, query_stop,
                             offsets, norm, resized_size, resize_mode, activation, blend, normalize, clamp,
                             mask_scale):
    if directions not in DIRECTIONS:
        raise ValueError(f"perturbation_bank: directions must be one of {DIRECTIONS}, got {directions!r}")
    progs = programs(theta, seed, q, beta, directions, antithetic, query_start, query_stop)
    forward = perturb_triton.forward_op()
    opts = (offsets, norm, resized_size, resize_mode, activation, blend, normalize, clamp, mask_scale)
    if theta.shape[0] == 1:  # one program for the batch: the queries are a prompt bank [Q, C, H, W]
        out = forward(x, progs.flatten(0, 1), mask, *opts, True)
        return out.view(len(progs), x.shape[0], *out.shape[1:])
    return torch.stack([forward(x, p, mask, *opts) for p in progs])


def perturbation_bank_combine_triton(weights, seed, numel, directions):
    if directions not in DIRECTIONS:
        raise ValueError(f"perturbation_bank_combine: directions must be one of {DIRECTIONS}, got {directions!r}")
    weights = weights.contiguous()
    q = weights.numel()
    norms = (sphere_norms(list(range(1, q + 1)), seed, numel, weights.device) if directions == "sphere"
             else torch.ones(q, dtype=torch.float32, device=weights.device))
    out = torch.empty(numel, dtype=weights.dtype, device=weights.device)
    lo, hi = _key(seed)
    combine_kernel[(_blocks(numel),)](out, weights, norms, q, lo, hi, numel, KIND=DIRECTIONS.index(directions),
                                      F64=weights.dtype == torch.float64, BLOCK=BLOCK, **NO_FMA)
    return out


_OPS = {}


def _register() -> None:
    if _OPS:
        return
    for name, schema, fn in ((BANK_NAME, BANK_SCHEMA, perturbation_bank_triton),
                             (COMBINE_NAME, COMBINE_SCHEMA, perturbation_bank_combine_triton)):
        torch.library.custom_op(name, mutates_args=(), schema=schema)(fn)
    autograd.register_fakes(BANK_NAME, COMBINE_NAME)
    _OPS["bank"] = torch.ops.reprogram_ext.perturbation_bank_triton
    _OPS["combine"] = torch.ops.reprogram_ext.perturbation_bank_combine_triton


def bank_op():
    _register()
    return _OPS["bank"]


def combine(weights, seed: int, numel: int, directions: str) -> torch.Tensor:
    _register()
    return _OPS["combine"](weights, seed, numel, directions)
