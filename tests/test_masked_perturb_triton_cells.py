"""The Triton backward's mask-cell kernel (masked_perturb_cell_backward_kernel, triton_cell_backward.py): a mask
coarser than the canvas (mask_scale s > 1), blend add, no clamp, no input gradient. It writes the mask gradient
at mask resolution [Bm, C, ceil(H / s), ceil(W / s)] and the delta's batch sum in one pass over grad_out.
Checked against the reference's autograd (and the C++ CPU kernel when it is built) on odd canvases (H, W not
multiples of s), one- and three-channel masks, per-sample and shared masks, float64 / float32 / float16, and by
gradcheck. Triton cases run where backend_params generates them (the interpreter process, or a GPU).
"""
from __future__ import annotations

import pytest
import torch

import reprogram_ext
from backend_params import backend_device_params
from reprogram_ext import masked_perturb

TRITON = [p for p in backend_device_params(include_reference=False) if p.values[0][0] == "triton"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# name -> (B, canvas (H, W), mask shape, user options); x is [B, 3, 5, 5], resized onto the canvas (or placed).
CASES = {
    # SMM's layout at s = 8: 20 rows (the last footprints hold 4), 5 cells per row, one mask channel per sample
    "smm_s8_ragged_rows": (5, (20, 40), (5, 1, 3, 5),
                           dict(resize=(20, 40), offset=(0, 0), normalize="before", mean=MEAN, std=STD, mask_scale=8)),
    # s = 3 (footprints padded to 4 x 4 in the kernel), 13 x 11: the last row and column of footprints cropped
    "per_channel_s3_odd": (3, (13, 11), (3, 3, 5, 4), dict(activation="sigmoid", mean=MEAN, std=STD, mask_scale=3)),
    # a mask shared by the batch (Bm = 1), one channel: grad_mask sums the samples too
    "shared_one_channel_s3": (4, (13, 11), (1, 1, 5, 4), dict(activation="tanh", mean=MEAN, std=STD, mask_scale=3)),
    # shared, one mask per channel, s = 4 on 10 x 9
    "shared_per_channel_s4": (3, (10, 9), (1, 3, 3, 3), dict(activation="relu", normalize="none", mask_scale=4)),
    # a single sample (B = Bm = 1)
    "single_sample_s2": (1, (7, 9), (1, 1, 4, 5), dict(resize=(6, 6), offset=(1, 2), mask_scale=2)),
    # a per-sample mask row broadcast over the mask rows: [B, 1, 1, Wm]
    "row_broadcast_s2": (2, (8, 8), (2, 1, 1, 4), dict(mask_scale=2)),
}


def _inputs(case, dtype):
    B, (H, W), mask_shape, kwargs = CASES[case]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 5, 5, generator=gen).to(dtype)
    delta = torch.randn(3, H, W, generator=gen).to(dtype)
    mask = torch.rand(*mask_shape, generator=gen).to(dtype)
    return x, delta, mask, kwargs


def _grads(backend, device, x, delta, mask, kwargs, g=None):
    d = delta.detach().clone().to(device).requires_grad_()
    m = mask.detach().clone().to(device).requires_grad_()
    out = masked_perturb(x.to(device), d, m, backend=backend, **kwargs)
    if g is None:
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    out.backward(g.to(device))
    return d.grad.cpu(), m.grad.cpu(), g


def _planned_launch(device, x, delta, mask, kwargs, needs=(True, True, False)):
    """The backward Launch the op plans for this call (the front end's canonical arguments)."""
    from reprogram_ext.ops.masked_perturb import triton_op as tk
    from reprogram_ext.ops.masked_perturb.args import canonicalize

    options = dict(out_size=None, resize=None, resize_mode="bilinear", offset=None, activation="none", blend="add",
                   normalize="after", mean=None, std=None, clamp=None, mask_scale=1, out_dtype=None)
    options.update(kwargs)
    cp = canonicalize(x.to(device), delta.to(device), mask.to(device), **options)
    grad_out = torch.zeros((cp.x.shape[0], cp.channels, *cp.delta.shape[2:]), dtype=cp.delta.dtype, device=device)
    args = (grad_out, cp.x, cp.delta, cp.mask, *cp.options.backward_args(cp.norm, list(needs)))
    return args, tk.plan_backward(*args)[1]


def _relative_error(got, want):
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


def _uses_cell_kernel(launch) -> bool:
    """Whether a planned Launch runs the cell kernel (imported at call time: other tests re-import the package's
    modules, which makes new kernel objects)."""
    from reprogram_ext.ops.masked_perturb.triton_cell_backward import masked_perturb_cell_backward_kernel

    return launch.kernel is masked_perturb_cell_backward_kernel


if TRITON:
    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_cell_kernel_gradients_match_the_reference(bd, dtype, case):
        """delta's and the mask's gradients through the cell kernel (the op plans it for these calls) against the
        reference's autograd: float64 to 1e-12 relative, float32 to 1e-5 (the tests' tolerance for every
        fused backend); against the C++ CPU kernel too when it is built."""
        _, device = bd
        x, delta, mask, kwargs = _inputs(case, dtype)
        _, launch = _planned_launch(device, x, delta, mask, kwargs)
        assert _uses_cell_kernel(launch)
        gd, gm, g = _grads("triton", device, x, delta, mask, kwargs)
        want_d, want_m, _ = _grads("reference", "cpu", x, delta, mask, kwargs, g)
        assert gm.shape == mask.shape and gd.shape == delta.shape
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        for name, got, want in (("delta", gd, want_d), ("mask", gm, want_m)):
            if dtype == torch.float64:
                assert _relative_error(got, want) <= tol, name
            else:
                torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda msg: f"grad of {name}: {msg}")
        if reprogram_ext.backends()["cpp"]:
            cpu_d, cpu_m, _ = _grads("cpu", "cpu", x, delta, mask, kwargs, g)
            torch.testing.assert_close(gd, cpu_d, rtol=tol, atol=tol)
            torch.testing.assert_close(gm, cpu_m, rtol=tol, atol=tol)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("case", ["smm_s8_ragged_rows", "shared_one_channel_s3"])
    def test_cell_kernel_float16(bd, case):
        """16-bit tensors: gradients (float32 accumulation, cast to float16) against the reference run in float32
        on the same float16 values, to float16 rounding of the result (2e-3 relative to the largest entry)."""
        _, device = bd
        x, delta, mask, kwargs = _inputs(case, torch.float16)
        assert _uses_cell_kernel(_planned_launch(device, x, delta, mask, kwargs)[1])
        gd, gm, g = _grads("triton", device, x, delta, mask, kwargs)
        want_d, want_m, _ = _grads("reference", "cpu", x.float(), delta.float(), mask.float(), kwargs, g.float())
        assert gd.dtype == gm.dtype == torch.float16
        assert _relative_error(gd, want_d) <= 2e-3
        assert _relative_error(gm, want_m) <= 2e-3

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("case", ["per_channel_s3_odd", "shared_per_channel_s4"])
    def test_backward_op_mask_gradient_at_mask_resolution(bd, case):
        """The backward op itself: grad_mask is [Bm, C, Hm, Wm], each cell the sum over its cropped footprint of
        g * inv_std * act(delta) (summed over the samples for a shared mask), from the cell kernel and from the
        general kernel (blend replace); the op's fake kernel agrees (opcheck); the same bits on a second run."""
        from reprogram_ext.ops.masked_perturb import triton_op as tk

        _, device = bd
        x, delta, mask, kwargs = _inputs(case, torch.float64)
        args, launch = _planned_launch(device, x, delta, mask, kwargs)
        assert _uses_cell_kernel(launch)
        g = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)
        args = (g,) + args[1:]
        gd, gm, _ = tk.backward_op()(*args)
        s, (H, W), C = kwargs["mask_scale"], delta.shape[-2:], 3
        Hm, Wm = -(-H // s), -(-W // s)
        assert gm.shape == (mask.shape[0], C, Hm, Wm) and gd.shape == (1, C, H, W)
        act = {"none": lambda t: t, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[
            kwargs.get("activation", "none")]
        inv_std = 1 / torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1) if "std" in kwargs else 1
        ge = (g.cpu() * inv_std * act(delta)).sum(0, keepdim=True) if mask.shape[0] == 1 else g.cpu() * inv_std * act(
            delta)
        want = torch.zeros(ge.shape[0], C, Hm, Wm, dtype=torch.float64)
        for q in range(Hm):
            for r in range(Wm):
                want[:, :, q, r] = ge[:, :, q * s:(q + 1) * s, r * s:(r + 1) * s].sum((2, 3))
        assert _relative_error(gm.cpu(), want) <= 1e-12
        assert all(torch.equal(a, b) for a, b in zip(tk.backward_op()(*args), (gd, gm)))
        torch.library.opcheck(tk.backward_op(), args, test_utils=("test_schema", "test_faketensor"))
        replace = list(args)
        replace[9] = "replace"  # blend: the general kernel's canvas partials, summed per footprint by the op
        assert tk.plan_backward(*replace)[1].kernel is None
        gm_general = tk.backward_op()(*replace)[1]
        assert gm_general.shape == gm.shape
        torch.library.opcheck(tk.backward_op(), tuple(replace), test_utils=("test_schema", "test_faketensor"))

    @pytest.mark.parametrize("bd", TRITON)
    def test_cell_kernel_gradcheck(bd):
        """gradcheck of delta and a per-sample mask through the cell kernel, float64 (fast mode: one random
        direction per input; the interpreter runs ~1 s per call)."""
        _, device = bd
        kwargs = dict(resize=(7, 9), offset=(0, 0), activation="sigmoid", mean=MEAN, std=STD, mask_scale=3)
        x = torch.rand(2, 3, 4, 5, dtype=torch.float64, device=device)
        d = torch.randn(3, 7, 9, dtype=torch.float64, device=device, requires_grad=True)
        m = torch.rand(2, 1, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
        assert _uses_cell_kernel(_planned_launch(device, x, d.detach(), m.detach(), kwargs)[1])
        assert torch.autograd.gradcheck(lambda d, m: masked_perturb(x, d, m, backend="triton", **kwargs), (d, m),
                                        atol=1e-10, rtol=1e-7, fast_mode=True)

    @pytest.mark.parametrize("bd", TRITON)
    def test_footprints_above_the_limit_take_the_general_kernel(bd):
        """mask_scale 70 > MAX_FOOTPRINT (one cell per sample on a 70 x 70 canvas): the general kernel's canvas
        partials, summed per footprint by the op, give the same mask-resolution gradient as the reference's."""
        from reprogram_ext.ops.masked_perturb.triton_cell_backward import MAX_FOOTPRINT

        _, device = bd
        kwargs = dict(resize=(70, 70), offset=(0, 0), activation="sigmoid", mean=MEAN, std=STD, mask_scale=70)
        assert kwargs["mask_scale"] > MAX_FOOTPRINT
        gen = torch.Generator().manual_seed(3)
        x, delta, mask = torch.rand(2, 3, 5, 5, generator=gen), torch.randn(3, 70, 70, generator=gen), torch.rand(
            2, 1, 1, 1, generator=gen)
        assert _planned_launch(device, x, delta, mask, kwargs)[1].kernel is None
        gd, gm, g = _grads("triton", device, x, delta, mask, kwargs)
        want_d, want_m, _ = _grads("reference", "cpu", x, delta, mask, kwargs, g)
        torch.testing.assert_close(gd, want_d, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gm, want_m, rtol=1e-5, atol=1e-5)
