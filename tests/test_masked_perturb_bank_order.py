"""The prompt-bank forward in its sample-major work order (issue 11, D3 of bench/notes/gpu_predictions.md).

masked_perturb(x, delta, mask, bank=True) with delta [V, Cd, H, W] returns [V * B, C, H, W], row v * B + b
= masked_perturb(x, delta[v], mask)[b]. The GPU backends order their work so that one sample's x serves all V
programs while it is cached (Triton: grid axis 0 = block * V + bank entry; CUDA: one launch whose threads
loop over the V programs, csrc/masked_perturb/bank_tiling.h). Whatever the order, every row must be the
single-program call's, bit for bit on the same backend, and match the reference.

The cases: V in {1, 3, 8}, an odd batch that the Triton launcher splits into several chunks, a canvas of
more than one block of positions (the interpreter's blocks are 2048 positions), one- and three-channel delta
and mask, the mask shared by the batch or per sample (at canvas resolution, or SMM's at 1 / 4), or none.
"""
from __future__ import annotations

import pytest
import torch

from reprogram_ext import masked_perturb
from backend_params import backend_device_params

IN_MEAN = (0.485, 0.456, 0.406)
IN_STD = (0.229, 0.224, 0.225)
BACKENDS = backend_device_params()
B, C, H, W = 5, 3, 40, 56  # H * W = 2240: two interpreter blocks; B = 5: chunks of 2, 2, 1 samples
X_SIZE = (32, 48)
# mask: None, shared by the batch ([Cm, H, W]) or per sample ([B, Cm, H, W])
MASKS = ("none", "shared", "per_sample")


def _inputs(V: int, channels: int, mask_kind: str, dtype=torch.float32):
    g = torch.Generator().manual_seed(1000 * V + 10 * channels + MASKS.index(mask_kind))
    x = torch.rand(B, C, *X_SIZE, generator=g, dtype=dtype)
    delta = torch.randn(V, channels, H, W, generator=g, dtype=dtype)
    mask = None
    if mask_kind == "shared":
        mask = torch.rand(channels, H, W, generator=g, dtype=dtype)
    elif mask_kind == "per_sample":
        mask = torch.rand(B, channels, H, W, generator=g, dtype=dtype)
    return x, delta, mask


# ILM-VP's options (the fast batch-shared layout on CUDA), and a tanh program without normalisation
OPTIONS = {
    "ilmvp": dict(offset=(4, 4), activation="sigmoid", mean=IN_MEAN, std=IN_STD),
    "tanh_plain": dict(offset=(3, 5), activation="tanh", normalize="none"),
}


def _assert_rows_are_single_calls(backend, device, x, delta, mask, kwargs):
    """The bank's [V, B, C, H, W] output: program v's rows equal the single-program call on the same
    backend bit for bit, and the reference's call to float32 rounding."""
    to = (lambda t: None if t is None else t.to(device))
    out = masked_perturb(to(x), to(delta), to(mask), bank=True, backend=backend, **kwargs).cpu()
    assert out.shape == (delta.shape[0], B, C, H, W)
    for v in range(delta.shape[0]):
        single = masked_perturb(to(x), to(delta[v]), to(mask), backend=backend, **kwargs).cpu()
        assert torch.equal(out[v], single), f"program {v}"
        want = masked_perturb(x, delta[v], mask, backend="reference", **kwargs)
        torch.testing.assert_close(out[v], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("V", [1, 3, 8])
@pytest.mark.parametrize("channels", [1, C])
@pytest.mark.parametrize("mask_kind", MASKS)
def test_bank_rows_are_the_single_program_calls(bd, V, channels, mask_kind):
    """Row v * B + b of the bank equals sample b of the call with program v alone, bit for bit on the same
    backend, and the reference's loop of calls to float32 rounding."""
    backend, device = bd
    x, delta, mask = _inputs(V, channels, mask_kind)
    _assert_rows_are_single_calls(backend, device, x, delta, mask, OPTIONS["ilmvp"])


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("V", [1, 3, 8])
@pytest.mark.parametrize("channels", [1, C])
def test_bank_per_sample_coarse_mask_rows_are_the_single_program_calls(bd, V, channels):
    """SMM's per-sample mask at 1 / 4 resolution (the Triton forward reads it once per group of 4 positions
    of its block, MASK_GROUP): every row the single-program call's, bit for bit, and the reference's."""
    backend, device = bd
    x, delta, _ = _inputs(V, channels, "none")
    mask = torch.rand(B, channels, H // 4, W // 4, generator=torch.Generator().manual_seed(V + channels))
    kwargs = dict(offset=(4, 4), normalize="before", mean=IN_MEAN, std=IN_STD, mask_scale=4)
    _assert_rows_are_single_calls(backend, device, x, delta, mask, kwargs)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("V", [1, 3, 8])
def test_bank_float64_without_mask_matches_the_reference(bd, V):
    """A tanh bank without a mask or normalisation, in float64: every row within 1e-12 of the reference."""
    backend, device = bd
    x, delta, _ = _inputs(V, C, "none", torch.float64)
    kwargs = OPTIONS["tanh_plain"]
    out = masked_perturb(x.to(device), delta.to(device), None, bank=True, backend=backend, **kwargs).cpu()
    want = torch.stack([masked_perturb(x, delta[v], None, backend="reference", **kwargs) for v in range(V)])
    assert ((out - want).abs().max() / want.abs().max()).item() <= 1e-12
