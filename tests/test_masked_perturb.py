"""masked_perturb (SPEC §1) on every backend: the paper special cases against their formulas written
out in plain torch, gradients, options, dtypes, layouts, properties and errors.

The same test bodies run on each (backend, device) from tests/backend_params.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reprogram_ext
from reprogram_ext import masked_perturb
from backend_params import INTERPRET, backend_device_params, interpreter_dtypes

IN_MEAN = (0.485, 0.456, 0.406)
IN_STD = (0.229, 0.224, 0.225)
BACKENDS = backend_device_params()
FUSED = backend_device_params(include_reference=False)
# float64 gradcheck runs on the compiled and reference backends.
NON_TRITON = [p for p in BACKENDS if p.values[0][0] != "triton"]


def _n(z, mean=IN_MEAN, std=IN_STD):
    """N_{mu,sigma}(z) = (z - mu_c) / sigma_c over the channel dim (dim 1)."""
    c = z.shape[1]
    shape = (1, c) + (1,) * (z.dim() - 2)
    return (z - torch.tensor(mean, dtype=z.dtype).view(shape)) / torch.tensor(std, dtype=z.dtype).view(shape)


def _leaf(t, device, grad=True):
    t = t.detach().clone().to(device)
    return t.requires_grad_(grad and t.is_floating_point())


def _check_case(bd, inputs: dict, kwargs: dict, formula, rtol=1e-5, atol=1e-5, frozen=()):
    """masked_perturb(**inputs, **kwargs) on backend bd equals `formula(**inputs)` (plain torch),
    forward and the gradient of every floating input not named in `frozen`."""
    backend, device = bd
    ours = {k: _leaf(v, device, grad=k not in frozen) if v is not None else None for k, v in inputs.items()}
    theirs = {k: _leaf(v, "cpu", grad=k not in frozen) if v is not None else None for k, v in inputs.items()}
    out = masked_perturb(ours["x"], ours["delta"], ours.get("mask"), backend=backend, **kwargs)
    expected = formula(**theirs)
    torch.testing.assert_close(out.cpu(), expected.detach(), rtol=rtol, atol=atol)
    g = torch.randn_like(expected)
    out.backward(g.to(device))
    expected.backward(g)
    for name, t in ours.items():
        if t is not None and t.requires_grad:
            want = theirs[name].grad  # None when the output does not depend on the input at all
            want = torch.zeros_like(theirs[name]) if want is None else want
            torch.testing.assert_close(t.grad.cpu(), want, rtol=rtol, atol=atol,
                                       msg=lambda m: f"grad of {name}: {m}")


def _pad_to(x, out, offset=None):
    h, w = x.shape[-2:]
    oy, ox = offset if offset is not None else ((out - h + 1) // 2, (out - w + 1) // 2)
    return F.pad(x, (ox, out - ox - w, oy, out - oy - h))


def _frame_mask(out, inner, dtype=torch.float32):
    """ILM-VP's binary mask: 1 outside the centred inner x inner region, 0 inside it."""
    m = torch.ones(out, out, dtype=dtype)
    o = (out - inner + 1) // 2
    m[o:o + inner, o:o + inner] = 0
    return m


# ---------------------------------------------------------------- SPEC special cases

@pytest.mark.parametrize("bd", BACKENDS)
def test_ilm_vp(bd):
    """ILM-VP: N_IN(pad(x) + sigmoid(theta) * M)."""
    x, theta, mask = torch.rand(3, 3, 32, 32), torch.randn(3, 48, 48), _frame_mask(48, 32)
    _check_case(bd, dict(x=x, delta=theta, mask=mask), dict(activation="sigmoid", mean=IN_MEAN, std=IN_STD),
                lambda x, delta, mask: _n(_pad_to(x, 48) + torch.sigmoid(delta) * mask))


@pytest.mark.parametrize("bd", BACKENDS)
def test_elsayed(bd):
    """Elsayed et al.: N_IN(pad(x) + tanh(W * M)); with binary M, tanh(W * M) = M * tanh(W)."""
    x, w, mask = torch.rand(2, 3, 20, 20), torch.randn(3, 40, 40), _frame_mask(40, 20)
    _check_case(bd, dict(x=x, delta=w, mask=mask), dict(activation="tanh", mean=IN_MEAN, std=IN_STD),
                lambda x, delta, mask: _n(_pad_to(x, 40) + torch.tanh(delta * mask)), frozen=("mask",))


@pytest.mark.parametrize("bd", BACKENDS)
def test_bar(bd):
    """BAR: N(pad(x) + sigmoid(W) * M) with its own normalisation, off-centre placement."""
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    x, w, mask = torch.rand(2, 3, 16, 16), torch.randn(3, 36, 36), torch.rand(36, 36)
    _check_case(bd, dict(x=x, delta=w, mask=mask), dict(activation="sigmoid", mean=mean, std=std, offset=(3, 11)),
                lambda x, delta, mask: _n(_pad_to(x, 36, (3, 11)) + torch.sigmoid(delta) * mask, mean, std))


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("kind", ["pad", "fixed_patch"])
def test_bahng(bd, kind):
    """Bahng et al. prompters: x + prompt on an already normalised image (pad border / fixed patch)."""
    size = 32
    x, prompt = torch.randn(3, 3, size, size), torch.randn(3, size, size)
    mask = torch.zeros(size, size)
    if kind == "pad":
        mask[:], mask[4:-4, 4:-4] = 1, 0
    else:
        mask[:6, :6] = 1
    _check_case(bd, dict(x=x, delta=prompt, mask=mask), dict(normalize="none"),
                lambda x, delta, mask: x + delta * mask)


@pytest.mark.parametrize("bd", BACKENDS)
def test_autovp(bd):
    """AutoVP: N_IN(pad(resize(x, s*h)) + sigmoid(delta) * M), bilinear resize 20 -> 30, canvas 48."""
    x, d, mask = torch.rand(2, 3, 20, 20), torch.randn(3, 48, 48), _frame_mask(48, 30)
    _check_case(bd, dict(x=x, delta=d, mask=mask),
                dict(resize=30, activation="sigmoid", mean=IN_MEAN, std=IN_STD),
                lambda x, delta, mask: _n(_pad_to(F.interpolate(x, size=(30, 30), mode="bilinear",
                                                                align_corners=False), 48)
                                          + torch.sigmoid(delta) * mask))


@pytest.mark.parametrize("bd", BACKENDS)
def test_smm(bd):
    """SMM: N_IN(resize(x)) + delta * up_f(mask(x)), per-sample mask at 1/f resolution, f = 8."""
    B, f = 3, 8
    x, d = torch.rand(B, 3, 16, 16), torch.randn(3, 44, 44)
    mask = torch.rand(B, 1, math.ceil(44 / f), math.ceil(44 / f))

    def formula(x, delta, mask):
        up = mask.repeat_interleave(f, -2).repeat_interleave(f, -1)[..., :44, :44]
        return _n(F.interpolate(x, size=(44, 44), mode="bilinear", align_corners=False)) + delta * up

    _check_case(bd, dict(x=x, delta=d, mask=mask),
                dict(resize=44, offset=(0, 0), normalize="before", mean=IN_MEAN, std=IN_STD, mask_scale=f), formula)


@pytest.mark.parametrize("bd", BACKENDS)
def test_voice2series(bd):
    """Voice2Series: tile(x) + M * theta on a 16000-sample 1-D canvas (last copy cropped)."""
    L, canvas = 3000, 16000
    x, theta, mask = torch.randn(2, 1, L), torch.randn(1, canvas), (torch.rand(canvas) > 0.3).float()
    offsets = [(k * L,) for k in range(math.ceil(canvas / L))]

    def formula(x, delta, mask):
        tiled = torch.cat([x] * len(offsets), dim=-1)[..., :canvas]
        return tiled + mask * delta

    _check_case(bd, dict(x=x, delta=theta, mask=mask), dict(offset=offsets, normalize="none"), formula)


# ---------------------------------------------------------------- options against the reference

def _against_reference(bd, inputs: dict, kwargs: dict, rtol=1e-5, atol=1e-5):
    _check_case(bd, inputs, kwargs,
                lambda **t: masked_perturb(t["x"], t["delta"], t.get("mask"), backend="reference", **kwargs),
                rtol=rtol, atol=atol)


OPTION_CASES = {
    "nearest_resize": (dict(x=(2, 3, 7, 9), delta=(3, 20, 21), mask=(20, 21)), dict(resize=(13, 17), resize_mode="nearest")),
    "bilinear_down": (dict(x=(2, 3, 19, 17), delta=(3, 16, 16), mask=None), dict(resize=(11, 7))),
    "grey_input": (dict(x=(2, 1, 8, 8), delta=(3, 12, 12), mask=(1, 12, 12)), dict(activation="tanh")),
    "grey_delta": (dict(x=(2, 3, 8, 8), delta=(1, 12, 12), mask=(3, 12, 12)), dict()),
    "relu_per_sample_delta": (dict(x=(2, 3, 6, 6), delta=(2, 3, 10, 10), mask=(10, 10)), dict(activation="relu")),
    "per_sample_delta_mask": (dict(x=(3, 3, 6, 6), delta=(3, 3, 10, 10), mask=(3, 3, 10, 10)), dict(activation="sigmoid")),
    "replace_clamp": (dict(x=(2, 3, 8, 8), delta=(3, 12, 12), mask=(12, 12)), dict(blend="replace", clamp=(0.2, 0.7))),
    "normalize_before": (dict(x=(2, 3, 8, 8), delta=(3, 12, 12), mask=(3, 12, 12)),
                         dict(normalize="before", mean=IN_MEAN, std=IN_STD, offset=(1, 2))),
    "overlapping_copies": (dict(x=(2, 3, 6, 7), delta=(3, 11, 13), mask=(11, 13)),
                           dict(offset=[(0, 0), (3, 4), (8, 10), (-2, -3)])),
    "crop_negative_offset": (dict(x=(2, 3, 9, 9), delta=(3, 8, 8), mask=None), dict(offset=(-3, 2))),
    "mask_scale_ragged": (dict(x=(2, 3, 6, 6), delta=(3, 13, 11), mask=(2, 1, 4, 3)), dict(mask_scale=4)),
    "mask_spatial_broadcast": (dict(x=(2, 3, 6, 6), delta=(3, 9, 9), mask=(3, 1, 1)), dict()),
    "one_d_resize_copies": (dict(x=(2, 2, 9), delta=(2, 40), mask=(2, 40)),
                            dict(resize=13, offset=[(0,), (13,), (26,), (39,)], activation="sigmoid")),
    "batch_one": (dict(x=(1, 3, 5, 5), delta=(3, 9, 9), mask=(9, 9)), dict(clamp=(-1.0, 1.0), mean=IN_MEAN, std=IN_STD)),
    # upscales of more than 3x: the bilinear rows gather runs of 4 columns from a three-column window
    # (bilinear_run_values), with runs cut by the copy's edges (odd offset) and a partly covered canvas
    "bilinear_upscale_runs": (dict(x=(2, 3, 5, 6), delta=(3, 30, 45), mask=(30, 45)),
                              dict(resize=(23, 37), offset=(3, 5), activation="sigmoid", mean=IN_MEAN, std=IN_STD)),
    "bilinear_upscale_runs_scaled_mask": (dict(x=(2, 3, 4, 4), delta=(3, 40, 40), mask=(2, 1, 5, 5)),
                                          dict(resize=40, offset=(0, 0), normalize="before", mean=IN_MEAN,
                                               std=IN_STD, mask_scale=8, activation="none")),
    # rows that are not 16-byte aligned (W % 4 != 0) with a batch-shared program: CUDA's flat forward
    # (output groups that cross rows, per-sample shifts: plane = 3 * 11 * 13 is odd)
    "odd_width_shared": (dict(x=(3, 3, 5, 7), delta=(3, 11, 13), mask=(11, 13)),
                         dict(offset=(4, 3), activation="tanh", mean=IN_MEAN, std=IN_STD)),
    "odd_width_shared_no_mask_grey": (dict(x=(5, 1, 6, 6), delta=(3, 9, 7), mask=None), dict(activation="sigmoid")),
}


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_options_match_reference(bd, case):
    shapes, kwargs = OPTION_CASES[case]
    inputs = {k: (torch.randn(s) if k != "mask" else torch.rand(s)) if s is not None else None
              for k, s in shapes.items()}
    _against_reference(bd, inputs, kwargs)


# The linear backward (x frozen: no input gradient; delta and mask shared by the batch) on rows that are
# not 16-byte aligned: CUDA's flat backward (cuda_flat_backward.cu: grad_out groups that cross rows and
# samples, per-sample shifts, batch chunks). elsayed_like_b17: plane 3 * 31 * 29 = 2697 (odd), B = 17:
# 22 slices of 128 positions, J = 16 chunks (one of 2 samples); relu_plain: a [C, H, W] mask, no norm.
ODD_WIDTH_LINEAR_CASES = {
    "odd_width_shared": OPTION_CASES["odd_width_shared"],
    "odd_width_shared_no_mask_grey": OPTION_CASES["odd_width_shared_no_mask_grey"],
    "elsayed_like_b17": (dict(x=(17, 3, 7, 5), delta=(3, 31, 29), mask=(31, 29)),
                         dict(activation="tanh", mean=IN_MEAN, std=IN_STD)),
    "odd_width_relu_plain": (dict(x=(9, 3, 4, 4), delta=(3, 5, 7), mask=(3, 5, 7)),
                             dict(activation="relu", normalize="none")),
}


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("frozen", [("x",), ("x", "mask")], ids=["delta_mask", "delta_only"])
@pytest.mark.parametrize("case", sorted(ODD_WIDTH_LINEAR_CASES))
def test_odd_width_linear_backward(bd, case, frozen):
    shapes, kwargs = ODD_WIDTH_LINEAR_CASES[case]
    inputs = {k: (torch.randn(s) if k != "mask" else torch.rand(s)) if s is not None else None
              for k, s in shapes.items()}
    _check_case(bd, inputs, kwargs,
                lambda **t: masked_perturb(t["x"], t["delta"], t.get("mask"), backend="reference", **kwargs),
                frozen=frozen)


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("dtype", interpreter_dtypes([torch.float16, torch.bfloat16]))
def test_odd_width_linear_backward_low_precision(bd, dtype):
    """16-bit grad_out on odd widths (CUDA: the flat backward at VEC = 8): delta's and the mask's
    gradients against the float32 reference of the same rounded inputs."""
    backend, device = bd
    x, d, m = torch.rand(17, 3, 7, 5), torch.randn(3, 31, 29), torch.rand(31, 29)
    x, d, m = (t.to(dtype).float() for t in (x, d, m))
    kw = dict(activation="sigmoid", mean=IN_MEAN, std=IN_STD)
    g = torch.randn(17, 3, 31, 29).to(dtype)
    dl, ml = (t.to(dtype).to(device).requires_grad_() for t in (d, m))
    masked_perturb(x.to(dtype).to(device), dl, ml, backend=backend, **kw).backward(g.to(device))
    d32, m32 = d.clone().requires_grad_(), m.clone().requires_grad_()
    masked_perturb(x, d32, m32, backend="reference", **kw).backward(g.float())
    torch.testing.assert_close(dl.grad.float().cpu(), d32.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ml.grad.float().cpu(), m32.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bd", FUSED)
def test_uint8_input(bd):
    backend, device = bd
    x = torch.randint(0, 256, (2, 3, 10, 10), dtype=torch.uint8)
    d, m = torch.randn(3, 16, 16), torch.rand(16, 16)
    out = masked_perturb(x.to(device), d.to(device), m.to(device), activation="sigmoid", mean=IN_MEAN, std=IN_STD,
                         backend=backend)
    expected = _pad_to(x.float() / 255, 16) + torch.sigmoid(d) * m
    torch.testing.assert_close(out.cpu(), _n(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bd", FUSED)
def test_channels_last_and_strided_inputs(bd):
    backend, device = bd
    x = torch.rand(2, 3, 12, 12).to(memory_format=torch.channels_last)
    d = torch.randn(3, 24, 20).transpose(1, 2)  # non-contiguous [3, 20, 24]
    m = torch.rand(20, 48)[:, ::2]  # strided [20, 24]
    out = masked_perturb(x.to(device), d.to(device), m.to(device), activation="tanh", backend=backend)
    ref = masked_perturb(x.contiguous(), d.contiguous(), m.contiguous(), activation="tanh", backend="reference")
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bd", FUSED)
def test_empty_batch(bd):
    backend, device = bd
    d = torch.randn(3, 8, 8, device=device, requires_grad=True)
    out = masked_perturb(torch.rand(0, 3, 4, 4, device=device), d, backend=backend)
    assert out.shape == (0, 3, 8, 8)
    out.sum().backward()
    assert torch.equal(d.grad.cpu(), torch.zeros(3, 8, 8))


@pytest.mark.parametrize("bd", BACKENDS)
def test_inputs_not_modified(bd):
    backend, device = bd
    x, d, m = torch.rand(2, 3, 6, 6), torch.randn(3, 10, 10), torch.rand(10, 10)
    xs, ds, ms = (t.to(device).requires_grad_() for t in (x, d, m))
    out = masked_perturb(xs, ds, ms, activation="sigmoid", blend="replace", clamp=(0, 1), mean=IN_MEAN,
                         std=IN_STD, backend=backend)
    out.sum().backward()
    for before, after in ((x, xs), (d, ds), (m, ms)):
        assert torch.equal(before, after.detach().cpu())


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("dtype", interpreter_dtypes([torch.float16, torch.bfloat16]))
def test_low_precision_tolerance_rule(bd, dtype):
    """|out - ref32| <= 2 |pt - ref32| + atol, pt = the reference run in the low precision."""
    backend, device = bd
    x, d, m = torch.rand(2, 3, 10, 10), torch.randn(3, 16, 16), torch.rand(16, 16)
    kw = dict(resize=12, activation="sigmoid", mean=IN_MEAN, std=IN_STD)
    ref32 = masked_perturb(x, d, m, backend="reference", **kw)
    pt = masked_perturb(x.to(dtype), d.to(dtype), m.to(dtype), backend="reference", **kw).float()
    dl = d.to(dtype).to(device).requires_grad_()
    out = masked_perturb(x.to(dtype).to(device), dl, m.to(dtype).to(device), backend=backend, **kw)
    assert out.dtype == dtype
    assert ((out.float().cpu() - ref32).abs() <= 2 * (pt - ref32).abs() + 1e-2).all()
    out.float().sum().backward()
    d32 = d.clone().requires_grad_()
    masked_perturb(x, d32, m, backend="reference", **kw).sum().backward()
    torch.testing.assert_close(dl.grad.float().cpu(), d32.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bd", BACKENDS)
def test_out_dtype_and_autocast(bd):
    backend, device = bd
    x, d = torch.rand(2, 3, 6, 6, device=device), torch.randn(3, 8, 8, device=device)
    assert masked_perturb(x, d, backend=backend, out_dtype=torch.float16).dtype == torch.float16
    if backend != "triton":  # the interpreter has no bf16 arithmetic
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            assert masked_perturb(x, d, backend=backend).dtype == torch.bfloat16


@pytest.mark.parametrize("bd", NON_TRITON)
@pytest.mark.parametrize("kwargs", [
    dict(resize=(7, 9), offset=[(0, 0), (2, 3)], activation="sigmoid", blend="replace", mean=IN_MEAN, std=IN_STD),
    dict(resize=(5, 6), resize_mode="nearest", normalize="before", mean=IN_MEAN, std=IN_STD, mask_scale=3,
         clamp=(-0.5, 0.8)),
], ids=["bilinear-copies-replace", "nearest-before-clamp-scale"])
def test_gradcheck_float64(bd, kwargs):
    backend, device = bd
    x = torch.rand(2, 1, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    d = torch.randn(3, 9, 10, dtype=torch.float64, device=device, requires_grad=True)
    m = torch.rand(2, 1, 3 if kwargs.get("mask_scale") else 9, 4 if kwargs.get("mask_scale") else 10,
                   dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, d, m: masked_perturb(x, d, m, backend=backend, **kwargs), (x, d, m))


# ---------------------------------------------------------------- op registration

@pytest.mark.parametrize("bd", FUSED)
def test_opcheck(bd):
    from reprogram_ext.ops.masked_perturb.args import canonicalize

    backend, device = bd
    x, d, m = (torch.rand(2, 3, 6, 6, device=device), torch.randn(3, 10, 10, device=device).requires_grad_(),
               torch.rand(1, 1, 10, 10, device=device).requires_grad_())
    cp = canonicalize(x, d, m, out_size=None, resize=8, resize_mode="bilinear", offset=None, activation="sigmoid",
                      blend="add", normalize="after", mean=IN_MEAN, std=IN_STD, clamp=None, mask_scale=1,
                      out_dtype=None)
    if backend == "triton":
        from reprogram_ext.ops.masked_perturb import triton_op as tk
        op = tk.forward_op()
    else:
        op = torch.ops.reprogram_ext.masked_perturb_forward
    args = (cp.x, cp.delta, cp.mask, *cp.options.op_args(cp.norm))
    torch.library.opcheck(op, args)


@pytest.mark.skipif(INTERPRET or not reprogram_ext.backends()["cpp"], reason="the compiled library's schemas")
def test_compiled_schemas_are_the_python_options_schemas():
    """options.py spells the schemas the Triton ops are defined with; the compiled ops must have the same ones."""
    from reprogram_ext.ops.masked_perturb import options

    for name, schema in (("masked_perturb_forward", options.FORWARD_SCHEMA),
                         ("masked_perturb_backward", options.BACKWARD_SCHEMA)):
        compiled = getattr(torch.ops.reprogram_ext, name).default._schema
        assert compiled == torch._C.parse_schema(f"reprogram_ext::{name}{schema}")


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("arg", ["resize_mode", "activation", "blend", "normalize"])
def test_direct_op_names_a_bad_option(bd, arg):
    """Called directly with an unknown option name, every kernel backend refuses it, naming the argument."""
    from reprogram_ext.ops.masked_perturb.args import canonicalize

    backend, device = bd
    x, d = torch.rand(2, 3, 6, 6, device=device), torch.randn(3, 10, 10, device=device)
    cp = canonicalize(x, d, None, out_size=None, resize=None, resize_mode="bilinear", offset=None, activation="tanh",
                      blend="add", normalize="none", mean=None, std=None, clamp=None, mask_scale=1, out_dtype=None)
    args = list(cp.options.op_args(cp.norm))
    args[("resize_mode", "activation", "blend", "normalize").index(arg) + 3] = "bogus"
    if backend == "triton":
        from reprogram_ext.ops.masked_perturb import triton_op as tk
        op = tk.forward_op()
    else:
        op = torch.ops.reprogram_ext.masked_perturb_forward
    with pytest.raises((ValueError, RuntimeError), match=f"{arg}.*bogus"):
        op(cp.x, cp.delta, None, *args)


@pytest.mark.parametrize("bd", FUSED)
def test_torch_compile_fullgraph(bd):
    backend, device = bd

    def step(x, d, m):
        return masked_perturb(x, d, m, activation="sigmoid", mean=IN_MEAN, std=IN_STD, backend=backend).square().mean()

    x, m = torch.rand(2, 3, 8, 8, device=device), torch.rand(12, 12, device=device)
    d1 = torch.randn(3, 12, 12, device=device, requires_grad=True)
    d2 = d1.detach().clone().requires_grad_()
    compiled = torch.compile(step, fullgraph=True)
    loss_c = compiled(x, d1, m)
    loss_c.backward()
    loss_e = step(x, d2, m)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e)
    torch.testing.assert_close(d1.grad, d2.grad)


# ---------------------------------------------------------------- properties

@st.composite
def _configs(draw):
    nsp = draw(st.sampled_from([1, 2]))
    B = draw(st.integers(1, 3))
    C = draw(st.sampled_from([1, 2, 3]))
    Cx = draw(st.sampled_from([1, C]))
    Cd = draw(st.sampled_from([1, C])) if Cx == C else C
    canvas = tuple(draw(st.integers(3, 14)) for _ in range(nsp))
    size_in = tuple(draw(st.integers(1, 10)) for _ in range(nsp))
    kw = {}
    if draw(st.booleans()):
        kw["resize"] = tuple(draw(st.integers(1, 12)) for _ in range(nsp))
        kw["resize_mode"] = draw(st.sampled_from(["bilinear", "nearest"]))
    copies = draw(st.integers(0, 3))
    if copies:
        kw["offset"] = [tuple(draw(st.integers(-4, 12)) for _ in range(nsp)) for _ in range(copies)]
    kw["activation"] = draw(st.sampled_from(["none", "tanh", "sigmoid", "relu"]))
    kw["blend"] = draw(st.sampled_from(["add", "replace"]))
    kw["normalize"] = draw(st.sampled_from(["after", "before", "none"]))
    if kw["normalize"] != "none" or draw(st.booleans()):
        kw["mean"] = [draw(st.floats(-1, 1)) for _ in range(C)]
        kw["std"] = [draw(st.floats(0.2, 2)) for _ in range(C)]
    if draw(st.booleans()):
        kw["clamp"] = (-0.5, 0.75)
    kw["mask_scale"] = draw(st.integers(1, 4))
    s_m = tuple(-(-s // kw["mask_scale"]) for s in canvas)
    mask_shape = draw(st.sampled_from([None, s_m, (1,) + s_m, (C,) + s_m, (B, 1) + s_m, (B, C) + s_m]))
    delta_shape = draw(st.sampled_from([(Cd,) + canvas, (B, Cd) + canvas]))
    x_dtype = draw(st.sampled_from([torch.float32, torch.uint8]))
    return dict(x=(B, Cx) + size_in, delta=delta_shape, mask=mask_shape, x_dtype=x_dtype, kw=kw)


@pytest.mark.parametrize("bd", FUSED)
def test_property_matches_reference(bd):
    @settings(max_examples=30 if not INTERPRET else 12, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_configs())
    def check(cfg):
        x = (torch.randint(0, 256, cfg["x"], dtype=torch.uint8) if cfg["x_dtype"] == torch.uint8
             else torch.randn(cfg["x"]))
        inputs = dict(x=x, delta=torch.randn(cfg["delta"]),
                      mask=torch.rand(cfg["mask"]) if cfg["mask"] is not None else None)
        _against_reference(bd, inputs, cfg["kw"], rtol=1e-4, atol=1e-5)

    check()


# ---------------------------------------------------------------- errors

def _bad(**over):
    args = dict(x=torch.rand(2, 3, 8, 8), delta=torch.randn(3, 12, 12), mask=torch.rand(12, 12))
    kwargs = {k: over.pop(k) for k in list(over) if k not in args}
    args.update(over)
    return args, kwargs


BAD_INPUTS = [
    ("x rank", _bad(x=torch.rand(8, 8)), ValueError, "x"),
    ("x 3 spatial dims", _bad(x=torch.rand(1, 3, 2, 2, 2)), ValueError, "x"),
    ("x channels", _bad(x=torch.rand(2, 2, 8, 8)), ValueError, "x"),
    ("x int dtype", _bad(x=torch.randint(0, 5, (2, 3, 8, 8))), TypeError, "x"),
    ("integer delta", _bad(delta=torch.randint(0, 5, (3, 12, 12))), TypeError, "delta"),
    ("delta rank", _bad(delta=torch.randn(12)), ValueError, "delta"),
    ("delta batch", _bad(delta=torch.randn(5, 3, 12, 12)), ValueError, "delta"),
    ("mask not broadcastable", _bad(mask=torch.rand(11, 12)), ValueError, "mask"),
    ("mask batch", _bad(mask=torch.rand(5, 1, 12, 12)), ValueError, "mask"),
    ("mask not tensor", _bad(mask=[[1.0]]), TypeError, "mask"),
    ("negative resize", _bad(resize=(-1, 4)), ValueError, "resize"),
    ("resize mode", _bad(resize=4, resize_mode="bicubic"), ValueError, "resize_mode"),
    ("out_size mismatch", _bad(out_size=13), ValueError, "out_size"),
    ("offset type", _bad(offset="centre"), TypeError, "offset"),
    ("offset arity", _bad(offset=(1, 2, 3)), TypeError, "offset"),
    ("activation", _bad(activation="gelu"), ValueError, "activation"),
    ("blend", _bad(blend="mul"), ValueError, "blend"),
    ("normalize", _bad(normalize="both"), ValueError, "normalize"),
    ("mean without std", _bad(mean=IN_MEAN), ValueError, "std"),
    ("mean length", _bad(mean=(0.1, 0.2), std=IN_STD), ValueError, "mean"),
    ("before without mean", _bad(normalize="before"), ValueError, "normalize"),
    ("mask_scale", _bad(mask_scale=0), ValueError, "mask_scale"),
    ("clamp order", _bad(clamp=(1.0, 0.0)), ValueError, "clamp"),
    ("clamp NaN", _bad(clamp=(float("nan"), 1.0)), ValueError, "clamp"),
    ("std zero", _bad(mean=IN_MEAN, std=(0.2, 0.0, 0.2)), ValueError, "std"),
    ("std negative", _bad(mean=IN_MEAN, std=-1.0), ValueError, "std"),
    ("std infinite", _bad(mean=IN_MEAN, std=float("inf")), ValueError, "std"),
    ("mean NaN", _bad(mean=float("nan"), std=IN_STD), ValueError, "mean"),
    ("clamp type", _bad(clamp=0.5), TypeError, "clamp"),
    ("out_dtype", _bad(out_dtype=torch.int32), TypeError, "out_dtype"),
    ("backend", _bad(backend="tpu"), ValueError, "backend"),
    ("mismatched devices", _bad(delta=torch.randn(3, 12, 12, device="meta")), ValueError, "delta"),
]


@pytest.mark.parametrize("name,args,exc,word", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_errors(name, args, exc, word):
    a, kw = args
    with pytest.raises(exc, match=word):
        masked_perturb(a["x"], a["delta"], a["mask"], **kw)


def test_unavailable_backend_errors():
    x, d = torch.rand(1, 3, 4, 4), torch.randn(3, 6, 6)
    with pytest.raises(ValueError, match="cuda"):
        masked_perturb(x, d, backend="cuda")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        masked_perturb(x, d, backend="triton")


def test_backend_refusals_steer_auto_and_name_the_reason():
    """The Triton kernels index a plane in 32 bits: a canvas of 2^31 elements or more is refused by the
    triton backend (the registry's refusal, so auto passes it by and an explicit request names why)."""
    from reprogram_ext.ops.masked_perturb import backends

    huge = torch.empty(1, 1, 2**16, 2**15, device="meta")
    assert "2^31" in backends.triton_limits(huge[:, :, :1, :1], huge, None)
    assert backends.triton_limits(huge[:, :, :1, :1], huge[:, :, :4, :4], None) is None
    from reprogram_ext.backend_registry import resolve_backend

    why = lambda name: "too big for it" if name == "cpu" else None  # noqa: E731
    assert resolve_backend("auto", torch.device("cpu"), "masked_perturb_forward", why) == "reference"
    if reprogram_ext.backends()["cpp"]:
        with pytest.raises(ValueError, match="backend='cpu' cannot take these inputs: too big for it"):
            resolve_backend("cpu", torch.device("cpu"), "masked_perturb_forward", why)


@pytest.mark.parametrize("bd", FUSED)
def test_double_backward_is_refused_not_silently_wrong(bd):
    """The fused backward is not differentiable: create_graph=True raises, naming the op and the way out,
    instead of returning a gradient without its second-order terms; the reference computes it."""
    backend, device = bd
    x = torch.rand(2, 3, 4, 4, device=device)
    d = torch.randn(3, 6, 6, device=device, requires_grad=True)
    out = masked_perturb(x, d, activation="sigmoid", backend=backend)
    with pytest.raises(RuntimeError, match="masked_perturb: higher-order gradients are not supported"):
        torch.autograd.grad(out.square().sum(), d, create_graph=True)
    ref = masked_perturb(x, d, activation="sigmoid", backend="reference")
    (g,) = torch.autograd.grad(ref.square().sum(), d, create_graph=True)
    assert g.requires_grad  # the reference's double backward exists
    # and the first-order gradient without create_graph still works after the refusal
    out = masked_perturb(x, d, activation="sigmoid", backend=backend)
    torch.testing.assert_close(torch.autograd.grad(out.square().sum(), d)[0], g.detach(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- float64 is float64

def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (norm-wise: entries that cancel to ~0 do not dominate)."""
    return ((got.detach().cpu() - want.detach()).abs().max() / want.detach().abs().max()).item()


def _up(mask, f, size):
    return mask.repeat_interleave(f, -2).repeat_interleave(f, -1)[..., :size, :size]


# name -> (input shapes, kwargs, the formula written in float64 torch)
FLOAT64_CASES = {
    "ilmvp_sigmoid_after": (
        dict(x=(2, 3, 8, 8), delta=(3, 14, 14), mask=(14, 14)), dict(activation="sigmoid", mean=IN_MEAN, std=IN_STD),
        lambda x, delta, mask: _n(_pad_to(x, 14) + torch.sigmoid(delta) * mask)),
    "smm_before_bilinear_scaled_mask": (
        dict(x=(2, 3, 6, 6), delta=(3, 14, 14), mask=(2, 1, 4, 4)),
        dict(resize=14, offset=(0, 0), normalize="before", mean=IN_MEAN, std=IN_STD, mask_scale=4),
        lambda x, delta, mask: _n(F.interpolate(x, size=(14, 14), mode="bilinear", align_corners=False))
        + delta * _up(mask, 4, 14)),
    "elsayed_tanh_replace_clamp_grey": (
        dict(x=(2, 1, 7, 7), delta=(3, 13, 13), mask=(13, 13)),
        dict(activation="tanh", blend="replace", clamp=(-0.6, 0.9), mean=IN_MEAN, std=IN_STD),
        lambda x, delta, mask: _n(torch.clamp((1 - mask) * _pad_to(x.expand(-1, 3, -1, -1), 13)
                                              + mask * torch.tanh(delta), -0.6, 0.9))),
    "v2s_copies_one_channel_norm": (
        dict(x=(2, 1, 9), delta=(1, 40), mask=(40,)), dict(offset=[(0,), (13,), (26,)], mean=0.1, std=0.3),
        lambda x, delta, mask: (F.pad(x, (0, 31)) + F.pad(x, (13, 18)) + F.pad(x, (26, 5)) + mask * delta - 0.1) / 0.3),
}


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("case", sorted(FLOAT64_CASES))
def test_float64_is_float64(bd, case):
    """float64 inputs are computed, normalised and accumulated in float64 on every backend: forward and the
    gradients of delta, mask and x within 1e-12 (relative) of the formula written in float64 torch (a float32
    normalisation constant or float32 gradient partials give 1e-8 .. 1e-6)."""
    backend, device = bd
    shapes, kwargs, formula = FLOAT64_CASES[case]
    torch.manual_seed(0)
    inputs = {k: (torch.rand(s) if k != "delta" else torch.randn(s)).double() for k, s in shapes.items()}
    ours = {k: _leaf(v, device) for k, v in inputs.items()}
    theirs = {k: _leaf(v, "cpu") for k, v in inputs.items()}
    out = masked_perturb(ours["x"], ours["delta"], ours["mask"], backend=backend, **kwargs)
    want = formula(**theirs)
    assert out.dtype == torch.float64
    assert _relative_error(out, want) <= 1e-12
    g = torch.randn_like(want)
    out.backward(g.to(device))
    want.backward(g)
    for name in ("x", "delta", "mask"):
        assert ours[name].grad.dtype == torch.float64
        err = _relative_error(ours[name].grad, theirs[name].grad)
        assert err <= 1e-12, f"grad of {name}: relative error {err:.3g}"


# name -> (input shapes, kwargs): per-sample masks at a resolution below the canvas (mask_scale s > 1),
# whose gradient the compiled kernels reduce over each cell's s x s footprint themselves.
PER_SAMPLE_MASK_CASES = {
    # SMM's layout: one mask channel, footprints of whole 128-bit groups (s = 4 on a 16 x 16 canvas)
    "smm_one_channel": (dict(x=(3, 3, 6, 6), delta=(3, 16, 16), mask=(3, 1, 4, 4)),
                        dict(resize=16, offset=(0, 0), normalize="before", mean=IN_MEAN, std=IN_STD, mask_scale=4)),
    # a 13 x 11 canvas: 4 x 3 cells, the last row and column of footprints cropped; a mask channel per channel
    "ragged_per_channel": (dict(x=(2, 3, 5, 5), delta=(3, 13, 11), mask=(2, 3, 4, 3)),
                           dict(activation="sigmoid", mask_scale=4, mean=IN_MEAN, std=IN_STD)),
    # blend replace and clamp: the mask gradient g * (a - u) reads the placed input
    "replace_clamp": (dict(x=(2, 1, 7, 7), delta=(3, 12, 12), mask=(2, 1, 4, 4)),
                      dict(activation="tanh", blend="replace", clamp=(-0.4, 0.9), mask_scale=3)),
    # a per-sample delta too, and one cell per sample (mask_scale = the canvas)
    "one_cell_per_sample": (dict(x=(2, 3, 4, 4), delta=(2, 3, 8, 8), mask=(2, 1, 1, 1)), dict(mask_scale=8)),
    # a per-sample mask row broadcast over the mask's rows: [B, 1, 1, Wm]
    "row_broadcast": (dict(x=(2, 3, 4, 4), delta=(3, 8, 8), mask=(2, 1, 1, 4)), dict(mask_scale=2)),
    # SMM's mask_scale 8 (CUDA float32: the fused cell kernel, cuda_cell_backward.cu): 9 samples over
    # its 8 batch chunks, a 20-row canvas whose last footprints hold 4 rows, a partial 32-column strip
    "smm_scale8_ragged_rows": (dict(x=(9, 3, 5, 5), delta=(3, 20, 40), mask=(9, 1, 3, 5)),
                               dict(resize=(20, 40), offset=(0, 0), normalize="before", mean=IN_MEAN, std=IN_STD,
                                    mask_scale=8)),
}


# float64 on every backend (the reference included: its own gradient against the hand-taken sum), float32 on
# the fused ones.
PER_SAMPLE_MASK_PARAMS = ([pytest.param(p.values[0], torch.float64, id=f"{p.id}-float64", marks=p.marks)
                           for p in BACKENDS] +
                          [pytest.param(p.values[0], torch.float32, id=f"{p.id}-float32", marks=p.marks)
                           for p in FUSED])


@pytest.mark.parametrize("bd, dtype", PER_SAMPLE_MASK_PARAMS)
@pytest.mark.parametrize("case", sorted(PER_SAMPLE_MASK_CASES))
def test_per_sample_mask_gradient_at_mask_resolution(bd, dtype, case):
    """The gradient of a per-sample mask coarser than the canvas: each cell's is the sum over its footprint
    (mask position p // s) of the element gradients, against the formula written out in plain torch --
    mask upsampled by repeat_interleave and cropped -- (float64: relative error <= 1e-12) and, for add,
    against that sum taken by hand: sum over the footprint and the canvas channels of g * act(delta)."""
    backend, device = bd
    shapes, kwargs = PER_SAMPLE_MASK_CASES[case]
    torch.manual_seed(0)
    inputs = {k: (torch.rand(s) if k != "delta" else torch.randn(s)).to(dtype) for k, s in shapes.items()}
    ours = {k: _leaf(v, device) for k, v in inputs.items()}
    theirs = {k: _leaf(v, "cpu") for k, v in inputs.items()}
    out = masked_perturb(ours["x"], ours["delta"], ours["mask"], backend=backend, **kwargs)
    want = masked_perturb(theirs["x"], theirs["delta"], theirs["mask"], backend="reference", **kwargs)
    g = torch.randn_like(want)
    out.backward(g.to(device))
    want.backward(g)
    assert ours["mask"].grad.shape == inputs["mask"].shape
    for name in ("x", "delta", "mask"):
        if dtype == torch.float64:
            err = _relative_error(ours[name].grad, theirs[name].grad)
            assert err <= 1e-12, f"grad of {name}: relative error {err:.3g}"
        else:
            torch.testing.assert_close(ours[name].grad.cpu(), theirs[name].grad, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"grad of {name}: {m}")
    if kwargs.get("blend", "add") == "add" and kwargs.get("clamp") is None:
        s, (H, W), mask = kwargs["mask_scale"], inputs["delta"].shape[-2:], inputs["mask"]
        act = {"none": lambda t: t, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[kwargs.get("activation", "none")]
        inv_std = (1 / torch.tensor(kwargs["std"], dtype=dtype).view(1, 3, 1, 1)
                   if kwargs.get("mean") is not None and kwargs.get("normalize", "after") == "after" else 1)
        ge = g * inv_std * act(inputs["delta"])  # [B, C, H, W]: the element gradients of the upsampled mask
        Hm, Wm = -(-H // s), -(-W // s)
        cells = F.pad(ge, (0, Wm * s - W, 0, Hm * s - H)).reshape(*ge.shape[:2], Hm, s, Wm, s).sum((3, 5))
        cells = cells.sum(1, keepdim=True) if mask.shape[1] == 1 else cells
        cells = cells.sum(2, keepdim=True) if mask.shape[2] == 1 else cells
        torch.testing.assert_close(ours["mask"].grad.cpu(), cells, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bd", FUSED)
@pytest.mark.parametrize("kwargs", [
    dict(resize=(7, 9), offset=[(0, 0), (2, 3)], activation="sigmoid", blend="replace", mean=IN_MEAN, std=IN_STD),
    dict(resize=(5, 6), resize_mode="nearest", normalize="before", mean=IN_MEAN, std=IN_STD, mask_scale=3,
         clamp=(-0.5, 0.8)),
    dict(activation="tanh", mean=IN_MEAN, std=IN_STD, bank=True),
], ids=["bilinear-copies-replace", "nearest-before-clamp-scale", "bank-tanh"])
def test_gradcheck_float64_tight(bd, kwargs):
    """gradcheck at atol 1e-10, rtol 1e-7 on the fused backends (their float64 is float64). Under the Triton
    interpreter (~1 s per call here) in fast mode: one random direction per input instead of the whole Jacobian."""
    backend, device = bd
    bank = kwargs.get("bank", False)
    x = torch.rand(2, 1, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    d = torch.randn(*((2,) if bank else ()), 3, 9, 10, dtype=torch.float64, device=device, requires_grad=True)
    m = torch.rand(2, 1, 3 if kwargs.get("mask_scale") else 9, 4 if kwargs.get("mask_scale") else 10,
                   dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, d, m: masked_perturb(x, d, m, backend=backend, **kwargs), (x, d, m),
                                    atol=1e-10, rtol=1e-7, fast_mode=INTERPRET and backend == "triton")


# ---------------------------------------------------------------- prompt banks

def _bank_loop(kwargs):
    """The prompt bank written as a loop of V reference calls, stacked: [V, B, C, *S_out]."""
    def formula(x, delta, mask):
        return torch.stack([masked_perturb(x, delta[v], mask, backend="reference", **kwargs)
                            for v in range(delta.shape[0])])

    return formula


# name -> (input shapes, kwargs, inputs held constant)
BANK_CASES = {
    "ilmvp_linear": (dict(x=(3, 3, 6, 6), delta=(4, 3, 10, 10), mask=(10, 10)),
                     dict(activation="sigmoid", mean=IN_MEAN, std=IN_STD), ("x",)),
    "ilmvp_all_grads": (dict(x=(3, 3, 6, 6), delta=(4, 3, 10, 10), mask=(10, 10)),
                        dict(activation="sigmoid", mean=IN_MEAN, std=IN_STD), ()),
    "smm_per_sample_mask": (dict(x=(3, 3, 5, 5), delta=(2, 3, 12, 12), mask=(3, 1, 3, 3)),
                            dict(resize=12, offset=(0, 0), normalize="before", mean=IN_MEAN, std=IN_STD,
                                 mask_scale=4), ()),
    "replace_clamp_grey_x": (dict(x=(2, 1, 6, 6), delta=(3, 3, 9, 9), mask=(3, 9, 9)),
                             dict(activation="tanh", blend="replace", clamp=(-0.3, 0.8)), ()),
    "grey_delta": (dict(x=(2, 3, 6, 6), delta=(3, 1, 10, 10), mask=None), dict(activation="relu"), ()),
    "one_d_copies": (dict(x=(2, 1, 7), delta=(3, 1, 30), mask=(30,)),
                     dict(offset=[(0,), (10,), (20,)], normalize="none"), ()),
}


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("case", sorted(BANK_CASES))
def test_bank_equals_a_loop_of_calls(bd, case):
    """bank=True: output[v] = masked_perturb(x, delta[v], ...); delta's gradient per program (summed over the
    batch), the mask's and x's summed over the programs too."""
    shapes, kwargs, frozen = BANK_CASES[case]
    torch.manual_seed(0)
    inputs = {k: (torch.randn(s) if k != "mask" else torch.rand(s)) if s is not None else None
              for k, s in shapes.items()}
    _check_case(bd, inputs, dict(kwargs, bank=True), _bank_loop(kwargs), frozen=frozen)


@pytest.mark.parametrize("bd", BACKENDS)
def test_bank_float64_is_float64(bd):
    backend, device = bd
    shapes, kwargs, _ = BANK_CASES["smm_per_sample_mask"]
    torch.manual_seed(0)
    inputs = {k: torch.rand(s, dtype=torch.float64) for k, s in shapes.items()}
    ours = {k: _leaf(v, device) for k, v in inputs.items()}
    theirs = {k: _leaf(v, "cpu") for k, v in inputs.items()}
    out = masked_perturb(ours["x"], ours["delta"], ours["mask"], bank=True, backend=backend, **kwargs)
    want = _bank_loop(kwargs)(**theirs)
    assert _relative_error(out, want) <= 1e-12
    g = torch.randn_like(want)
    out.backward(g.to(device))
    want.backward(g)
    for name in ("x", "delta", "mask"):
        assert _relative_error(ours[name].grad, theirs[name].grad) <= 1e-12, name


@pytest.mark.parametrize("bd", BACKENDS)
def test_bank_shapes_and_empty_banks(bd):
    backend, device = bd
    x, m = torch.rand(2, 3, 6, 6, device=device), torch.rand(10, 10, device=device)
    d = torch.randn(4, 3, 10, 10, device=device, requires_grad=True)
    assert masked_perturb(x, d, m, bank=True, backend=backend).shape == (4, 2, 3, 10, 10)
    x1, d1 = torch.rand(2, 1, 7, device=device), torch.randn(5, 1, 12, device=device)
    assert masked_perturb(x1, d1, bank=True, backend=backend).shape == (5, 2, 1, 12)
    for xs, ds in ((x[:0], d), (x, d[:0])):  # no sample, no program: empty output, zero gradient
        out = masked_perturb(xs, ds, m, bank=True, backend=backend)
        assert out.shape == (ds.shape[0], xs.shape[0], 3, 10, 10)
        (g,) = torch.autograd.grad(out.sum(), ds)
        assert g.shape == ds.shape and not g.any()


@pytest.mark.parametrize("bd", FUSED)
def test_bank_opcheck(bd):
    from reprogram_ext.ops.masked_perturb.args import canonicalize

    backend, device = bd
    x, d, m = (torch.rand(2, 3, 6, 6, device=device), torch.randn(3, 3, 10, 10, device=device).requires_grad_(),
               torch.rand(1, 1, 10, 10, device=device).requires_grad_())
    cp = canonicalize(x, d, m, out_size=None, resize=8, resize_mode="bilinear", offset=None, activation="sigmoid",
                      blend="add", normalize="after", mean=IN_MEAN, std=IN_STD, clamp=None, mask_scale=1,
                      out_dtype=None, bank=True)
    if backend == "triton":
        from reprogram_ext.ops.masked_perturb import triton_op as tk
        op = tk.forward_op()
    else:
        op = torch.ops.reprogram_ext.masked_perturb_forward
    torch.library.opcheck(op, (cp.x, cp.delta, cp.mask, *cp.options.op_args(cp.norm)))


@pytest.mark.parametrize("bd", FUSED)
def test_bank_torch_compile_fullgraph(bd):
    backend, device = bd

    def step(x, d, m):
        out = masked_perturb(x, d, m, activation="sigmoid", mean=IN_MEAN, std=IN_STD, bank=True, backend=backend)
        return out.square().mean()

    x, m = torch.rand(2, 3, 8, 8, device=device), torch.rand(12, 12, device=device)
    d1 = torch.randn(3, 3, 12, 12, device=device, requires_grad=True)
    d2 = d1.detach().clone().requires_grad_()
    loss_c = torch.compile(step, fullgraph=True)(x, d1, m)
    loss_c.backward()
    loss_e = step(x, d2, m)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e)
    torch.testing.assert_close(d1.grad, d2.grad)


BANK_BAD_INPUTS = [
    ("bank delta without V", _bad(delta=torch.randn(3, 12, 12), bank=True), ValueError, "delta.*bank=True"),
    ("bank 1-D delta without V", (dict(x=torch.rand(2, 1, 8), delta=torch.randn(1, 12), mask=None), dict(bank=True)),
     ValueError, "delta.*bank=True"),
    ("bank with per-sample programs", _bad(delta=torch.randn(4, 2, 3, 12, 12), bank=True), ValueError,
     "delta.*per-sample"),
    ("V programs without bank", _bad(delta=torch.randn(4, 3, 12, 12)), ValueError, "delta.*bank=True"),
    ("bank not a bool", _bad(delta=torch.randn(4, 3, 12, 12), bank=1), TypeError, "bank"),
    ("bank mask with a V dim", _bad(delta=torch.randn(4, 3, 12, 12), mask=torch.rand(4, 2, 1, 12, 12), bank=True),
     ValueError, "mask"),
]


@pytest.mark.parametrize("name,args,exc,word", BANK_BAD_INPUTS, ids=[b[0] for b in BANK_BAD_INPUTS])
def test_bank_bad_input_errors(name, args, exc, word):
    a, kw = args
    with pytest.raises(exc, match=word):
        masked_perturb(a["x"], a["delta"], a["mask"], **kw)


# The C++ CPU forward writes outputs of at least this many bytes with streaming stores, regular stores for
# the partial 64-byte lines at each row's ends (kStreamingMinBytes, csrc/common/streaming_store.h).
STREAMING_MIN_BYTES = 16 << 20

# name -> (dtype, canvas (H, W), programs V of a bank or 0, batch): each output just above that size;
# W = 225 rows start and end inside cache lines (the partial-line stores at both ends of every row).
LARGE_OUTPUT_CASES = {
    "float32_aligned_rows": (torch.float32, (224, 224), 0, 28),
    "float32_odd_width": (torch.float32, (223, 225), 0, 28),
    "float32_bank": (torch.float32, (224, 224), 4, 8),
    "bfloat16_odd_width": (torch.bfloat16, (223, 225), 0, 56),
    "float64_odd_width": (torch.float64, (223, 225), 0, 14),
}


@pytest.mark.parametrize("bd", [p for p in FUSED if not INTERPRET])
@pytest.mark.parametrize("case", sorted(LARGE_OUTPUT_CASES))
def test_large_output_equals_small_calls(bd, case):
    """An output large enough for the CPU forward's streaming stores is bit-identical to the same samples
    (and programs) computed in calls whose outputs are small: every row, its unaligned ends included."""
    backend, device = bd
    dtype, (H, W), V, B = LARGE_OUTPUT_CASES[case]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 32, 31, generator=g).to(device, dtype)
    delta = torch.randn(*((V,) if V else ()), 3, H, W, generator=g).to(device, dtype)
    mask = (torch.rand(H, W, generator=g) > 0.3).to(device, dtype)
    kwargs = dict(activation="sigmoid", normalize="after", mean=IN_MEAN, std=IN_STD)
    out = masked_perturb(x, delta, mask, backend=backend, bank=V > 0, **kwargs)
    assert out.numel() * out.element_size() >= STREAMING_MIN_BYTES
    if V:
        small = torch.stack([masked_perturb(x, delta[v], mask, backend=backend, **kwargs) for v in range(V)])
    else:
        small = torch.cat([masked_perturb(x[b:b + 1], delta, mask, backend=backend, **kwargs) for b in range(B)])
    assert small[0].numel() * small.element_size() < STREAMING_MIN_BYTES
    assert out.dtype == dtype and torch.equal(out, small)
