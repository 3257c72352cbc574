"""Fake (meta) kernels of the perturbation_bank ops, for torch.compile and opcheck.

The bank and the directions' weighted sum are not differentiable: black-box training has no autograd
through the queries (the estimate replaces the gradient), so no autograd is registered.
"""
from __future__ import annotations

import torch


def _fake_bank(x, theta, mask, seed, q, beta, directions, antithetic, query_start, query_stop, offsets, norm,
               resized_size, resize_mode, activation, blend, normalize, clamp, mask_scale):
    C = theta.shape[1] if theta.shape[1] != 1 else x.shape[1]
    return theta.new_empty((query_stop - query_start, x.shape[0], C, theta.shape[2], theta.shape[3]))


def _fake_combine(weights, seed, numel, directions):
    return weights.new_empty((numel,))


def register_fakes(bank_name: str, combine_name: str) -> None:
    torch.library.register_fake(bank_name)(_fake_bank)
    torch.library.register_fake(combine_name)(_fake_combine)


def register_compiled() -> None:
    """Fake kernels of the compiled (C++ / CUDA) ops."""
    register_fakes("reprogram_ext::perturbation_bank", "reprogram_ext::perturbation_bank_combine")
