"""The backward ops' mask-gradient contract: the mask gradient comes back at mask resolution with the MASK's
channel count, [Bm, Cm, ceil(H / s), ceil(W / s)] -- a one-channel mask's (Cm = 1) already summed over the
canvas channels inside the op, in channel order from channel 0 (the fused cell kernels fold that sum into the
kernel; the other paths sum in the op). Checked on every kernel backend present (the C++ CPU op; the Triton op
under the interpreter; CUDA and Triton on a GPU), on the fused cell paths (blend add, per-sample and shared
masks) and the general ones (blend replace, mask_scale 1, a prompt bank):
- the output's shape, and its values against the reference's mask gradient (float64, 1e-12 relative);
- a one-channel mask's gradient equals the C-channel gradient of the same mask repeated over the channels,
  summed in channel order (the same bits on the C++ CPU op, float rounding on the others);
- the fake kernels agree (opcheck), and gradcheck through the op for one- and C-channel masks.
"""
from __future__ import annotations

import pytest
import torch

import reprogram_ext
from backend_params import INTERPRET, backend_device_params
from reprogram_ext import masked_perturb

FUSED = backend_device_params(include_reference=False)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# name -> (B, canvas (H, W), mask batch Bm, mask_scale, user options, bank entries V or 0)
CASES = {
    # SMM's layout: the fused cell kernels (per-sample mask, blend add); H ends inside a footprint
    "cells_per_sample_s4": (3, (10, 16), 3, 4, dict(normalize="before", mean=MEAN, std=STD), 0),
    # a shared mask coarser than the canvas (the Triton cell kernel's shared path; CPU / CUDA canvas partials)
    "cells_shared_s3": (4, (7, 9), 1, 3, dict(activation="tanh", mean=MEAN, std=STD), 0),
    # the general kernels: blend replace reads the placed input
    "replace_per_sample_s2": (2, (6, 8), 2, 2, dict(blend="replace", activation="sigmoid"), 0),
    # mask_scale 1: the per-sample mask's gradient at canvas resolution
    "per_sample_s1": (2, (5, 6), 2, 1, dict(activation="sigmoid", mean=MEAN, std=STD), 0),
    # a prompt bank of 2 programs sharing a per-sample mask
    "bank_per_sample_s2": (2, (6, 6), 2, 2, dict(activation="tanh"), 2),
}


def _op(backend):
    if backend == "triton":
        from reprogram_ext.ops.masked_perturb import triton_op as tk
        return tk.backward_op()
    return torch.ops.reprogram_ext.masked_perturb_backward.default


def _inputs(case, mask_channels, dtype=torch.float64):
    B, (H, W), Bm, s, kwargs, V = CASES[case]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 4, 5, generator=gen, dtype=dtype)
    delta = torch.randn(*((V,) if V else ()), 3, H, W, generator=gen, dtype=dtype)
    mask = torch.rand(Bm, 1, -(-H // s), -(-W // s), generator=gen, dtype=dtype)
    if mask_channels > 1:
        mask = mask.repeat(1, mask_channels, 1, 1)  # the same values on every channel
    return x, delta, mask, dict(kwargs, resize=(H, W), offset=(0, 0), mask_scale=s, bank=bool(V))


def _op_args(device, x, delta, mask, kwargs, g=None):
    """The backward op's arguments for this call (the front end's canonical form), grad_out random."""
    from reprogram_ext.ops.masked_perturb.args import canonicalize

    options = dict(out_size=None, resize=None, resize_mode="bilinear", offset=None, activation="none", blend="add",
                   normalize="after", mean=None, std=None, clamp=None, mask_scale=1, out_dtype=None)
    options.update(kwargs)
    cp = canonicalize(x.to(device), delta.to(device), mask.to(device), **options)
    rows = cp.x.shape[0] * (cp.delta.shape[0] if kwargs.get("bank") else 1)
    if g is None:
        g = torch.randn((rows, cp.channels, *cp.delta.shape[2:]), generator=torch.Generator().manual_seed(1),
                        dtype=cp.delta.dtype)
    return (g.to(device), cp.x, cp.delta, cp.mask, *cp.options.backward_args(cp.norm, [True, True, False]))


def _reference_mask_grad(x, delta, mask, kwargs, g):
    m = mask.detach().clone().requires_grad_()
    out = masked_perturb(x, delta, m, backend="reference", **kwargs)
    out.backward(g.view(out.shape))
    return m.grad


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("mask_channels", [1, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_backward_op_mask_gradient_has_the_masks_channels(bd, case, mask_channels):
    """The op's grad_mask is [Bm, Cm, Hm, Wm] (Cm: the mask's channels) and equals the reference's mask gradient
    (float64, 1e-12 relative to its largest entry); the fake kernel gives the same shape (opcheck)."""
    backend, device = bd
    x, delta, mask, kwargs = _inputs(case, mask_channels)
    args = _op_args(device, x, delta, mask, kwargs)
    gd, gm, _ = _op(backend)(*args)
    assert gm.shape == mask.shape, (tuple(gm.shape), tuple(mask.shape))
    want = _reference_mask_grad(x, delta, mask, kwargs, args[0].cpu())
    err = ((gm.cpu() - want).abs().max() / want.abs().max()).item()
    assert err <= 1e-12, f"relative error {err:.3g}"
    torch.library.opcheck(_op(backend), args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_channel_mask_gradient_is_the_channel_sum_in_order(bd, case, dtype):
    """A one-channel mask's gradient from the op equals the C-channel gradient of the same mask repeated over the
    channels, added in channel order from channel 0: bit for bit on the C++ CPU op (whose C-channel cells are the
    same sums), to float rounding elsewhere (the fused kernels may order each channel's cell differently)."""
    backend, device = bd
    x, delta, mask1, kwargs = _inputs(case, 1, dtype)
    mask3 = mask1.repeat(1, 3, 1, 1)
    args1 = _op_args(device, x, delta, mask1, kwargs)
    args3 = _op_args(device, x, delta, mask3, kwargs, g=args1[0].cpu())
    gm1, gm3 = _op(backend)(*args1)[1], _op(backend)(*args3)[1]
    assert gm1.shape[1] == 1 and gm3.shape[1] == 3
    in_order = (gm3[:, :1] + gm3[:, 1:2]) + gm3[:, 2:3]
    if backend == "cpu":
        assert torch.equal(gm1, in_order)
    else:
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(gm1, in_order, rtol=tol, atol=tol)


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("mask_channels", [1, 3])
@pytest.mark.parametrize("case", ["cells_per_sample_s4", "per_sample_s1", "bank_per_sample_s2"])
def test_gradcheck_mask_through_the_op(bd, case, mask_channels):
    """gradcheck of delta and the mask (float64) through the backend's autograd, one- and three-channel masks,
    mask_scale 1 and > 1, a bank (fast mode under the Triton interpreter: ~1 s per call)."""
    backend, device = bd
    x, delta, mask, kwargs = _inputs(case, mask_channels)
    x = x.to(device)
    d = delta.to(device).requires_grad_()
    m = mask.to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda d, m: masked_perturb(x, d, m, backend=backend, **kwargs), (d, m),
                                    atol=1e-10, rtol=1e-7, fast_mode=INTERPRET and backend == "triton")


TRITON = [p for p in FUSED if p.values[0][0] == "triton"]


@pytest.mark.parametrize("bd", TRITON)
@pytest.mark.parametrize("case", ["cells_per_sample_s4", "cells_shared_s3"])
def test_triton_cell_kernel_sums_the_channels_itself(bd, case):
    """The Triton cell kernel serves a one-channel mask with programs of all C channels (CH = C: the channel sum
    in the kernel, its grad_mask buffer already [.., 1, Hm, Wm]) and a per-channel mask with CH = 1."""
    from reprogram_ext.ops.masked_perturb import triton_op as tk
    from reprogram_ext.ops.masked_perturb.triton_cell_backward import masked_perturb_cell_backward_kernel

    _, device = bd
    for mask_channels, ch in ((1, 3), (3, 1)):
        x, delta, mask, kwargs = _inputs(case, mask_channels)
        (gd, gm, _), launch = tk.plan_backward(*_op_args(device, x, delta, mask, kwargs))
        assert launch.kernel is masked_perturb_cell_backward_kernel
        assert launch.args["CH"] == ch and gm.shape[1] == mask_channels
