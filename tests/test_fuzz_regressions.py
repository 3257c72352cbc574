"""Regression tests of the silent wrong answers of issue 15 (docs/errors.md), on every backend present:

- index and target value checks hold under torch.compile(fullgraph=True) too (in-graph asserts), and
  the Triton kernels never read out of bounds even when called directly with a bad index;
- double backward of label_map / mapped_cross_entropy: refused with the op named on the fused
  backends, correct (gradgradcheck) on the reference;
- every target ignore_index with reduction="mean": nan loss and zero gradients, as F.cross_entropy.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fuzz_cases import assert_ran, run_isolated
from label_map_cases import on

import reprogram_ext as rx
from backend_params import backend_device_params
from reprogram_ext.reference import label_map_reference, mapped_cross_entropy_reference

BACKENDS = backend_device_params()
KERNEL_BACKENDS = backend_device_params(include_reference=False)
S, T = 9, 3
GOOD_INDEX = torch.tensor([[0, 4, -1], [2, 2, 8], [5, -1, -1]])
BAD_INDEXES = {  # what each must be refused for
    "source S": (torch.tensor([[0, 4, -1], [2, 2, S], [5, -1, -1]]), "index"),
    "source far beyond S": (torch.tensor([[0, 4, -1], [2, 2, 1 << 40], [5, -1, -1]]), "index"),
    "source below -1": (torch.tensor([[0, 4, -1], [2, -7, 8], [5, -1, -1]]), "index"),
    "an empty group": (torch.tensor([[0, 4, -1], [-1, -1, -1], [5, -1, -1]]), "empty target group"),
}


def _compiled(fn, compile_backend="aot_eager"):
    return torch.compile(fn, fullgraph=True, backend=compile_backend)


# ------------------------------------------------------------------ value checks under torch.compile


def check_compiled_refusal(kind: str, backend: str, device: str, bad) -> None:
    """Compile a call of ``kind`` (label_map / loss_index / loss_target), run it right, then with a
    bad index (a BAD_INDEXES key) or target value (an int) in the same graph: it must refuse. On
    CUDA the in-graph check is a device-side assert, reported at the next synchronisation."""
    x, index = torch.randn(4, S, device=device), GOOD_INDEX.to(device)
    y = torch.tensor([0, 2, -100, 1], device=device)
    if kind == "label_map":
        step = _compiled(lambda x, y, i: rx.label_map(x, i, backend=backend).sum())
        want = label_map_reference(x, index).sum()
    else:
        pre = "softmax" if kind == "loss_index" else "none"
        step = _compiled(lambda x, y, i: rx.mapped_cross_entropy(x, y, i, pre=pre, backend=backend))
        want = mapped_cross_entropy_reference(x, y, index, pre=pre)
    torch.testing.assert_close(step(x, y, index), want)
    if kind == "loss_target":
        y, words = y.clone(), "target"
        y[1] = bad
    else:
        index, words = BAD_INDEXES[bad][0].to(device), BAD_INDEXES[bad][1]
    with pytest.raises((ValueError, RuntimeError), match=words if device != "cuda" else f"{words}|device-side assert"):
        step(x, y, index)  # the same graph, now with a bad value
        if device == "cuda":
            torch.cuda.synchronize()


def _run_compiled_refusal(kind, bd, bad):
    backend, device = bd
    if device == "cuda":  # a device-side assert ends the process's CUDA context: in a child process
        assert_ran(run_isolated(f"from test_fuzz_regressions import check_compiled_refusal\n"
                                f"check_compiled_refusal({kind!r}, {backend!r}, 'cuda', {bad!r})"))
    else:
        check_compiled_refusal(kind, backend, device, bad)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_compiled_label_map_refuses_a_bad_index(bd, case):
    _run_compiled_refusal("label_map", bd, case)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_compiled_mapped_cross_entropy_refuses_a_bad_index(bd, case):
    _run_compiled_refusal("loss_index", bd, case)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("bad_target", [T, -1, 1 << 40])
def test_compiled_mapped_cross_entropy_refuses_a_bad_target(bd, bad_target):
    _run_compiled_refusal("loss_target", bd, bad_target)


def test_compiled_checks_hold_under_inductor():
    """The default compiler too (inductor turns the assert into generated C++ code). Inductor may
    schedule its own bounds check of the reference's gather first: either way a refusal."""
    step = _compiled(lambda x, y, i: rx.mapped_cross_entropy(x, y, i, backend="reference"), "inductor")
    x, y = torch.randn(4, S), torch.tensor([0, 2, 1, 1])
    step(x, y, GOOD_INDEX)
    with pytest.raises(RuntimeError, match="index"):
        step(x, y, BAD_INDEXES["source S"][0])
    with pytest.raises(RuntimeError, match="target|index out of bounds"):
        step(x, torch.tensor([0, 2, 3, 1]), GOOD_INDEX)


TRITON_BACKENDS = [p for p in KERNEL_BACKENDS if p.values[0][0] == "triton"]


MASKED_LOADS_CASE = """
import torch
from label_map_cases import forward_ops
from reprogram_ext.reference import label_map_reference, mapped_cross_entropy_reference
device, S = {device!r}, {S}
label_map_forward, ce_forward = forward_ops("triton")
x = torch.randn(4, S, device=device, dtype=torch.float64)
bad = torch.tensor([[0, 4, 1 << 40], [2, 2, S], [5, -1, -(1 << 40)]], device=device)
as_padding = torch.where((bad >= 0) & (bad < S), bad, -1)
out, _ = label_map_forward(x, bad, None, "mean", "softmax")
torch.testing.assert_close(out, label_map_reference(x, as_padding, pre="softmax"), rtol=1e-12, atol=0)
y = torch.tensor([0, 2, 1, 1], device=device)
loss, unit, dense = ce_forward(x, y, bad, None, "sum", "none", 0.0, -100)
want = mapped_cross_entropy_reference(x, y, as_padding, reduce="sum", reduction="none")
torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
grad, _ = torch.ops.reprogram_ext.mapped_cross_entropy_backward_triton(
    torch.ones(4, dtype=torch.float64, device=device), x, y, bad, None, unit, dense, "sum", "none", 0.0, -100, False)
xr = x.clone().requires_grad_(True)
(want_grad,) = torch.autograd.grad(mapped_cross_entropy_reference(xr, y, as_padding, reduce="sum", reduction="sum"), xr)
torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-15)
"""


def _check_triton_kernels_mask_out_of_range_sources(bd):
    """Called directly (no front end), the Triton ops read and write nothing outside the logits row:
    a source outside [0, S) counts as padding (the front end refuses such an index before any
    launch). In a child process: an out-of-bounds read segfaulted the interpreter."""
    _, device = bd
    assert_ran(run_isolated(MASKED_LOADS_CASE.format(device=device, S=S)))


if TRITON_BACKENDS:  # generated only where Triton runs (never an empty parameter set skipped into green)
    test_triton_kernels_mask_out_of_range_sources = pytest.mark.parametrize("bd", TRITON_BACKENDS)(
        _check_triton_kernels_mask_out_of_range_sources)


# ------------------------------------------------------------------ higher-order gradients


def _double_backward_inputs(device):
    x = torch.randn(4, S, device=device, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(T, 3, device=device, dtype=torch.float64) + 0.5).requires_grad_(True)
    return x, GOOD_INDEX.to(device), w, torch.tensor([0, 2, -100, 1], device=device)


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("op", ["label_map", "mapped_cross_entropy"])
def test_fused_backends_refuse_double_backward(bd, op):
    backend, device = bd
    x, index, w, y = _double_backward_inputs(device)
    if op == "label_map":
        out = rx.label_map(x, index, w, pre="log_softmax", backend=backend).square().sum()
    else:
        out = rx.mapped_cross_entropy(x, y, index, w, pre="softmax", backend=backend)
    (g,) = torch.autograd.grad(out, x, retain_graph=True)  # first order works
    assert torch.isfinite(g).all()
    with pytest.raises(RuntimeError, match=f"{op}: higher-order gradients are not supported"):
        torch.autograd.grad(out, x, create_graph=True)


@pytest.mark.parametrize("pre", ["none", "softmax", "log_softmax"])
def test_reference_double_backward_is_correct(pre):
    x, index, w, y = _double_backward_inputs("cpu")

    def label_map(x, w):
        return rx.label_map(x, index, w, pre=pre, backend="reference")

    def loss(x, w):
        return rx.mapped_cross_entropy(x, y, index, w, pre=pre, label_smoothing=0.1, backend="reference")

    assert torch.autograd.gradgradcheck(label_map, (x, w))
    assert torch.autograd.gradgradcheck(loss, (x, w))


# ------------------------------------------------------------------ every target ignored


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", ["none", "softmax", "log_softmax"])
@pytest.mark.parametrize("compiled", [False, True])
def test_all_ignored_mean_is_nan_with_zero_gradients(bd, pre, compiled):
    """F.cross_entropy(..., reduction="mean") of a batch with every target ignored: nan loss, zero
    gradients (a fully padded batch must not turn the parameters into nan)."""
    backend, device = bd
    x, index, w, _ = _double_backward_inputs(device)
    y = torch.full((4,), -100, device=device)

    def step(x, w):
        return rx.mapped_cross_entropy(x, y, index, w, pre=pre, label_smoothing=0.2, backend=backend)

    loss = (_compiled(step) if compiled else step)(x, w)
    gx, gw = torch.autograd.grad(loss, (x, w))
    ref = mapped_cross_entropy_reference(x, y, index, w, pre=pre, label_smoothing=0.2)
    rgx, rgw = torch.autograd.grad(ref, (x, w))
    assert torch.isnan(loss) and torch.isnan(ref)
    torch.testing.assert_close(gx, rgx, rtol=0, atol=0)
    torch.testing.assert_close(gw, rgw, rtol=0, atol=0)
    assert not gx.any() and not gw.any()


def test_all_ignored_reference_matches_f_cross_entropy():
    """What F.cross_entropy gives, written down: nan loss, zero gradient."""
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = F.cross_entropy(x, torch.full((3,), -100))
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isnan(loss) and not g.any()


@pytest.mark.parametrize("bd", BACKENDS)
def test_huge_ignore_index_is_refused_by_name(bd):
    backend, device = bd
    x, index, _, y = _double_backward_inputs(device)
    with pytest.raises(ValueError, match="ignore_index must fit in int64"):
        rx.mapped_cross_entropy(x, y, index, ignore_index=1 << 70, backend=backend)
    out = rx.mapped_cross_entropy(*on(device, x, y.clamp(min=0), index), ignore_index=(1 << 63) - 1,
                                  backend=backend)
    torch.testing.assert_close(out, mapped_cross_entropy_reference(x, y.clamp(min=0), index,
                                                                   ignore_index=(1 << 63) - 1))


# ------------------------------------------------------------------ torch.func


def _func_cases(backend, device="cpu"):
    g = torch.Generator().manual_seed(3)  # the same inputs on every call
    x = torch.randn(4, S, dtype=torch.float64, generator=g).to(device)
    y, index = torch.tensor([0, 2, -100, 1], device=device), GOOD_INDEX.to(device)
    d = torch.randn(3, 8, 8, dtype=torch.float64, generator=g).to(device)
    xi = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=g).to(device)
    return {
        "label_map": (lambda x: rx.label_map(x, index, pre="softmax", backend=backend).square().sum(), x),
        "mapped_cross_entropy": (lambda x: rx.mapped_cross_entropy(x, y, index, backend=backend), x),
        "masked_perturb": (lambda d: rx.masked_perturb(xi, d, activation="tanh", backend=backend).square().sum(), d),
    }


@pytest.mark.parametrize("op", ["label_map", "mapped_cross_entropy", "masked_perturb"])
def test_torch_func_grad_runs_the_reference_under_auto(op):
    f, arg = _func_cases("auto")[op]
    g = torch.func.grad(f)(arg)
    ref, _ = _func_cases("reference")[op]
    torch.testing.assert_close(g, torch.func.grad(ref)(arg), rtol=1e-12, atol=0)
    a = arg.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(f(a), a)  # outside torch.func auto keeps its fused backend
    torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("op", ["label_map", "mapped_cross_entropy", "masked_perturb"])
def test_torch_func_grad_on_a_fused_backend_is_refused_by_name(bd, op):
    backend, device = bd
    f, arg = _func_cases(backend, device)[op]
    with pytest.raises(ValueError, match=f"{op}: torch.func's grad transform cannot differentiate backend"):
        torch.func.grad(f)(arg)
