"""mapped_cross_entropy (docs/ops/label_map.md) on every backend: equal to F.cross_entropy on the mapped logits
(log of averaged probabilities for pre="softmax"), its options, gradients, stability, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from label_map_cases import (COMBINATIONS, LOW_ATOL, PRES, REDUCES, assert_close_relative,
                             assert_compiled_matches_eager, assert_low_precision_close, forward_ops, gen,
                             gradcheck_inputs, grads, make_index, on, topk_mean_oracle)

import reprogram_ext as rx
from backend_params import INTERPRET, backend_device_params, interpreter_dtypes
from reprogram_ext.reference import label_map_reference, mapped_cross_entropy_reference

BACKENDS = backend_device_params()
KERNEL_BACKENDS = backend_device_params(include_reference=False)
# The Triton interpreter runs each program in Python: fewer examples, fast-mode gradcheck there.
PROPERTY_EXAMPLES = 12 if INTERPRET else 30
REDUCTIONS = ("mean", "sum", "none")


def _case(layout, weighted, seed=0, S=41, T=5, K=4, lead=(3, 4), ignore_some=True):
    g = gen(seed)
    logits = torch.randn(*lead, S, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, T, lead, generator=g)
    if ignore_some:
        target.view(-1)[1] = -100
    if layout == "dense":
        return logits, target, None, torch.rand(S, T, generator=g, dtype=torch.float64) + 0.1
    index = make_index(layout, S, T, K, g)
    weight = torch.rand(T, K, generator=g, dtype=torch.float64) + 0.25 if weighted else None
    return logits, target, index, weight


# ------------------------------------------------------------------ the papers' losses, written out


@pytest.mark.parametrize("bd", BACKENDS)
def test_voice2series_loss_on_averaged_probabilities(bd):
    """V2S / BAR: loss_n = -log softmax_t(log((1/k) sum_j p[index[t, j]]))[y_n], averaged."""
    backend, device = bd
    g = gen(1)
    logits = torch.randn(6, 30, generator=g) * 2
    index = torch.randperm(30, generator=g)[:12].reshape(4, 3)
    target = torch.tensor([0, 3, 2, 1, 1, 0])
    total = 0.0
    for n in range(6):
        p = torch.exp(logits[n].double()) / torch.exp(logits[n].double()).sum()
        h = torch.stack([p[index[t]].mean() for t in range(4)])
        q = h / h.sum()  # softmax of log h
        total += -torch.log(q[target[n]])
    loss = rx.mapped_cross_entropy(*on(device, logits, target, index), pre="softmax", backend=backend)
    torch.testing.assert_close(loss.cpu().double(), total / 6, rtol=1e-5, atol=0)


@pytest.mark.parametrize("bd", BACKENDS)
def test_autovp_loss_on_averaged_logits(bd):
    """AutoVP: loss = F.cross_entropy(mean_k logits[..., index[t, k]], y)."""
    backend, device = bd
    g = gen(2)
    logits = torch.randn(5, 40, generator=g)
    index = torch.randperm(40, generator=g)[:10].reshape(5, 2)
    target = torch.tensor([4, 0, 1, 1, 3])
    L = (logits[:, index[:, 0]] + logits[:, index[:, 1]]) / 2
    expected = F.cross_entropy(L, target)
    loss = rx.mapped_cross_entropy(*on(device, logits, target, index), backend=backend)
    torch.testing.assert_close(loss.cpu(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("bd", BACKENDS)
def test_blm_dense_loss(bd):
    backend, device = bd
    g = gen(3)
    logits = torch.randn(4, 20, generator=g)
    omega = torch.rand(20, 3, generator=g)
    target = torch.tensor([2, 0, 1, 1])
    expected = F.nll_loss(torch.log_softmax(torch.log(torch.softmax(logits, -1) @ omega), -1), target)
    loss = rx.mapped_cross_entropy(*on(device, logits, target), weight=omega.to(device), pre="softmax",
                                   backend=backend)
    torch.testing.assert_close(loss.cpu(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("bd", BACKENDS)
def test_one_to_one_is_cross_entropy_of_selected_logits(bd):
    backend, device = bd
    g = gen(4)
    logits = torch.randn(7, 50, generator=g)
    index = torch.randperm(50, generator=g)[:6]
    target = torch.randint(0, 6, (7,), generator=g)
    loss = rx.mapped_cross_entropy(*on(device, logits, target, index), reduction="none", backend=backend)
    torch.testing.assert_close(loss.cpu(), F.cross_entropy(logits[:, index], target, reduction="none"),
                               rtol=1e-5, atol=1e-7)


# --------------------------------------------------------- every combination against the reference

@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre,reduce,layout,weighted", COMBINATIONS)
def test_matches_reference_fp32(bd, pre, reduce, layout, weighted):
    """Loss (all reductions, label smoothing, ignore_index) and gradients at 1e-5 relative."""
    backend, device = bd
    logits, target, index, weight = _case(layout, weighted)
    for reduction, eps in (("mean", 0.0), ("none", 0.1), ("sum", 0.3)):
        x = logits.float().to(device).requires_grad_(True)
        w = None if weight is None else weight.float().to(device).requires_grad_(True)
        loss = rx.mapped_cross_entropy(x, target.to(device), None if index is None else index.to(device), w,
                                       reduce=reduce, pre=pre, reduction=reduction, label_smoothing=eps,
                                       backend=backend)
        up = torch.rand(loss.shape, generator=gen(9)).to(device)
        got = (loss, *grads(loss, (x, w), up))
        x64 = logits.clone().requires_grad_(True)
        w64 = None if weight is None else weight.clone().requires_grad_(True)
        ref = mapped_cross_entropy_reference(x64, target, index, w64, reduce=reduce, pre=pre, reduction=reduction,
                                             label_smoothing=eps)
        want = (ref, *grads(ref, (x64, w64), up.double().cpu()))
        assert loss.shape == ref.shape and loss.dtype == torch.float32
        for a, b in zip(got, want):
            assert_close_relative(a.cpu(), b)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
@pytest.mark.parametrize("reduce", REDUCES)
def test_gradcheck_float64(bd, pre, reduce):
    backend, device = bd
    x, index, w = gradcheck_inputs(4, reduce, device)
    target = torch.tensor([2, -100, 0, 1], device=device)

    def fn(x, w):
        return rx.mapped_cross_entropy(x, target, index, w, reduce=reduce, pre=pre, label_smoothing=0.2,
                                       reduction="none", backend=backend)

    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=INTERPRET)


# opcheck tests the registration (schema, fake kernel, autograd), which is the same for every
# option value: each pre and each reduce once.
@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("pre,reduce", list(zip(PRES, REDUCES)))
def test_opcheck(bd, pre, reduce):
    backend, device = bd
    _, forward = forward_ops(backend)
    logits, target, index, weight = _case("duplicate", True, lead=(6,))
    for w in (weight, None):
        args = (logits.float().to(device).requires_grad_(True), target.to(device), index.to(device),
                None if w is None else w.float().to(device).requires_grad_(True))
        torch.library.opcheck(forward, (*args, reduce, pre, 0.1, -100))


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", ["softmax", "log_softmax"])
def test_torch_compile_fullgraph(bd, pre):
    backend, device = bd
    logits, target, index, weight = _case("ragged", True)
    x = logits.float().to(device).requires_grad_(True)
    w = weight.float().to(device).requires_grad_(True)
    y, idx = target.to(device), index.to(device)

    def step(x, w):
        return rx.mapped_cross_entropy(x, y, idx, w, reduce="sum", pre=pre, label_smoothing=0.1, backend=backend)

    assert_compiled_matches_eager(step, (x, w))


@st.composite
def loss_cases(draw):
    S = draw(st.integers(1, 40))
    T = draw(st.integers(1, 6))
    K = draw(st.integers(1, 5))
    N = draw(st.integers(0, 6))
    g = gen(draw(st.integers(0, 2**16)))
    index = torch.randint(0, S, (T, K), generator=g)
    pad = torch.rand(T, K, generator=g) < draw(st.floats(0, 0.6))
    pad[torch.arange(T), torch.randint(0, K, (T,), generator=g)] = False
    index[pad] = -1
    weight = torch.rand(T, K, generator=g) + 0.5 if draw(st.booleans()) else None
    target = torch.randint(0, T, (N,), generator=g)
    target[torch.rand(N, generator=g) < 0.2] = -100
    logits = torch.randn(N, S, generator=g) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    return (logits, target, index, weight, draw(st.sampled_from(REDUCES)), draw(st.sampled_from(PRES)),
            draw(st.sampled_from(REDUCTIONS)), draw(st.sampled_from([0.0, 0.25])))


@pytest.mark.parametrize("bd", BACKENDS)
@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(case=loss_cases())
def test_property_random_mappings(bd, case):
    backend, device = bd
    logits, target, index, weight, reduce, pre, reduction, eps = case
    x = logits.to(device).requires_grad_(True)
    w = None if weight is None else weight.to(device).requires_grad_(True)
    kw = dict(reduce=reduce, pre=pre, reduction=reduction, label_smoothing=eps)
    loss = rx.mapped_cross_entropy(x, target.to(device), index.to(device), w, backend=backend, **kw)
    x64 = logits.double().requires_grad_(True)
    w64 = None if weight is None else weight.double().requires_grad_(True)
    ref = mapped_cross_entropy_reference(x64, target, index, w64, **kw)
    assert loss.shape == ref.shape
    assert_close_relative(loss.detach().cpu(), ref.detach(), floor=1e-5)
    if loss.numel() and bool(torch.isfinite(ref).all()):
        for a, b in zip(grads(loss, (x, w)), grads(ref, (x64, w64))):
            assert_close_relative(a.cpu(), b, floor=1e-5)


# -------------------------------------------------------------------------- stability, dtypes, shapes


@pytest.mark.parametrize("bd", BACKENDS)
def test_softmax_loss_is_stable_in_log_space(bd):
    """Probabilities that underflow float32 (logits 200 apart) still give the exact finite loss:
    log mean_k p_k = m + log mean_k exp(x_k - m) - lse, computed without forming p."""
    backend, device = bd
    if backend == "reference":  # the eager reference forms p and is expected to overflow to inf here
        logits = torch.tensor([[0.0, -200.0, -201.0, -202.0]])
        assert torch.isinf(mapped_cross_entropy_reference(logits, torch.tensor([1]), torch.tensor([[0], [1]]),
                                                          pre="softmax"))
        return
    logits = torch.tensor([[0.0, -200.0, -201.0, -202.0]], requires_grad=True)
    index = torch.tensor([[1, 2], [3, -1]])  # the dominant class 0 is not mapped
    target = torch.tensor([0])
    loss = rx.mapped_cross_entropy(logits.to(device), target.to(device), index.to(device), pre="softmax",
                                   backend=backend)
    x = logits.detach().double()
    L = torch.stack([torch.logsumexp(x[0, [1, 2]], 0) - torch.log(torch.tensor(2.0, dtype=torch.float64)),
                     x[0, 3]])
    expected = -(L[0] - torch.logsumexp(L, 0))
    torch.testing.assert_close(loss.cpu().double(), expected, rtol=1e-5, atol=0)
    (g,) = torch.autograd.grad(loss, logits)
    assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("weighted", (False, True))
def test_softmax_groups_far_below_the_largest_mapped_logit(bd, reduce, weighted):
    """Groups 60-150 below the row's largest mapped logit (their exp against it underflows float32)
    and a group spread 150 wide: the loss and every gradient entry match float64 to 1e-5 relative.
    (The CPU kernel exponentiates against the row's largest mapped logit and falls back to the
    group's own max where that underflows.)"""
    backend, device = bd
    x = torch.randn(4, 12, generator=gen(3), dtype=torch.float64)
    x[:, 0:2] += 5.0      # group 0: the largest mapped logits
    x[:, 2:4] -= 60.0     # group 1: exp(-60) ~ 1e-26, normal in float32
    x[:, 4:6] -= 150.0    # group 2: exp(-150) underflows float32
    x[:, 7] -= 150.0      # group 3: spread 150 wide (x[:, 6] near 0)
    index = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    weight = torch.tensor([[0.5, 2.0], [1.0, 3.0], [0.25, 1.0], [2.0, 0.5]], dtype=torch.float64) if weighted else None
    target = torch.tensor([1, 2, 3, 0])
    want_x = x.clone().requires_grad_(True)
    want = mapped_cross_entropy_reference(want_x, target, index, weight, reduce=reduce, pre="softmax")
    (want_g,) = torch.autograd.grad(want, want_x)
    got_x = x.float().to(device).requires_grad_(True)
    got = rx.mapped_cross_entropy(got_x, target.to(device), index.to(device), on(device, weight)[0],
                                  reduce=reduce, pre="softmax", backend=backend)
    (got_g,) = torch.autograd.grad(got, got_x)
    torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-5, atol=0)
    assert_close_relative(got_g.cpu(), want_g, floor=0)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("dtype", interpreter_dtypes([torch.float16, torch.bfloat16]))
@pytest.mark.parametrize("pre", PRES)
def test_low_precision_tolerance_rule(bd, dtype, pre):
    backend, device = bd
    logits, target, index, weight = _case("duplicate", True, S=64, T=6, K=5)
    lp = logits.to(dtype)
    x = lp.to(device).requires_grad_(True)
    loss = rx.mapped_cross_entropy(x, target.to(device), index.to(device), weight.to(device), pre=pre,
                                   reduction="none", label_smoothing=0.1, backend=backend)
    assert loss.dtype == dtype
    (gx,) = grads(loss, (x,))
    x32 = lp.float().requires_grad_(True)
    kw = dict(pre=pre, reduction="none", label_smoothing=0.1)
    ref32 = mapped_cross_entropy_reference(x32, target, index, weight, **kw)
    (g32,) = grads(ref32, (x32,))
    xpt = lp.clone().requires_grad_(True)
    pt = mapped_cross_entropy_reference(xpt, target, index, weight, compute_dtype=dtype, **kw)
    (gpt,) = grads(pt, (xpt,))
    assert_low_precision_close(loss.cpu(), pt, ref32, LOW_ATOL[dtype])
    assert_low_precision_close(gx.cpu(), gpt, g32, LOW_ATOL[dtype])


@pytest.mark.parametrize("bd", BACKENDS)
def test_leading_dims_empty_batch_and_all_ignored(bd):
    backend, device = bd
    logits, target, index, _ = _case("sparse", False, lead=(2, 3, 4))
    x, y, i = on(device, logits.float(), target, index)
    per = rx.mapped_cross_entropy(x, y, i, reduction="none", backend=backend)
    assert per.shape == (2, 3, 4)
    flat = rx.mapped_cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1), i, reduction="none", backend=backend)
    torch.testing.assert_close(per.reshape(-1), flat)
    assert float(per.reshape(-1)[1]) == 0.0  # the ignored position
    empty = torch.randn(0, logits.shape[-1], device=device, requires_grad=True)
    y0 = torch.zeros(0, dtype=torch.int64, device=device)
    assert rx.mapped_cross_entropy(empty, y0, i, reduction="none", backend=backend).shape == (0,)
    s = rx.mapped_cross_entropy(empty, y0, i, reduction="sum", backend=backend)
    s.backward()
    assert float(s.detach()) == 0.0 and empty.grad.shape == empty.shape
    assert torch.isnan(rx.mapped_cross_entropy(empty, y0, i, backend=backend))  # mean of nothing, as F.cross_entropy
    ignored = torch.full((3,), -100, device=device)
    assert torch.isnan(rx.mapped_cross_entropy(x[0, 0, :3], ignored, i, backend=backend))


@pytest.mark.parametrize("bd", BACKENDS)
def test_inputs_not_modified(bd):
    backend, device = bd
    logits, target, index, weight = _case("duplicate", True)
    x, y, i, w = on(device, logits.float(), target, index, weight.float())
    x.requires_grad_(True)
    w.requires_grad_(True)
    before = [t.detach().clone() for t in (x, y, i, w)]
    for pre in PRES:
        rx.mapped_cross_entropy(x, y, i, w, pre=pre, label_smoothing=0.1, backend=backend).backward()
    for t, b in zip((x, y, i, w), before):
        assert torch.equal(t.detach(), b)


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bd", BACKENDS)
def test_bad_inputs_name_the_argument(bd):
    backend, device = bd
    x = torch.randn(3, 10, device=device)
    y = torch.tensor([0, 1, 1], device=device)
    idx = torch.tensor([[0, 1], [2, -1]], device=device)
    cases = [
        (dict(target=torch.tensor([0, 2, 1], device=device)), ValueError, "target"),
        (dict(target=torch.tensor([0, -1, 1], device=device)), ValueError, "target"),
        (dict(target=torch.tensor([0.0, 1.0, 1.0], device=device)), TypeError, "target"),
        (dict(target=torch.tensor([0, 1], device=device)), ValueError, "target"),
        (dict(index=torch.tensor([[0, 11]], device=device)), ValueError, "index"),
        (dict(index=torch.tensor([[0.0, 1.0]], device=device)), TypeError, "index"),
        (dict(index=torch.tensor([[-1, -1], [0, 1]], device=device)), ValueError, "empty target group"),
        (dict(weight=torch.ones(3, 2, device=device)), ValueError, "weight"),
        (dict(reduce="min"), ValueError, "reduce"),
        (dict(pre="exp"), ValueError, "pre"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    ]
    for kwargs, exc, word in cases:
        args = dict(target=y, index=idx)
        args.update(kwargs)
        with pytest.raises(exc, match=word):
            rx.mapped_cross_entropy(x, args.pop("target"), args.pop("index"), backend=backend, **args)
    # ignore_index may lie outside [0, T)
    out = rx.mapped_cross_entropy(x, torch.tensor([0, 7, 1], device=device), idx, ignore_index=7, backend=backend)
    assert torch.isfinite(out)


def test_reference_backend_matches_label_map_reference():
    """The oracle itself: reference CE equals F.cross_entropy on label_map_reference's output."""
    logits, target, index, weight = _case("ragged", True)
    L = torch.log(label_map_reference(logits, index, weight, pre="softmax"))
    expected = F.cross_entropy(L.reshape(-1, L.shape[-1]), target.reshape(-1))
    got = mapped_cross_entropy_reference(logits, target, index, weight, pre="softmax")
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("bd", BACKENDS)
def test_large_index_matches_the_reference(bd):
    """T*K = 40000 (the Triton backend refused more than 16384 before its source map): the loss and the
    logits gradient against the float64 reference on every backend."""
    backend, device = bd
    g = gen(12)
    index = torch.randint(0, 400, (10000, 4), generator=g)
    index[::7, 3] = -1
    x = torch.randn(3, 400, generator=g)
    target = torch.tensor([0, 5000, 9999])
    x64 = x.double().requires_grad_(True)
    want = mapped_cross_entropy_reference(x64, target, index, pre="softmax")
    (want_grad,) = grads(want, (x64,))
    xd = x.to(device).requires_grad_(True)
    got = rx.mapped_cross_entropy(xd, *on(device, target, index), pre="softmax", backend=backend)
    assert_close_relative(got.detach().cpu(), want.detach())
    assert_close_relative(grads(got, (xd,))[0].cpu(), want_grad)


# -------------------------------------------------------------------------------------------- topk_mean


def _topk_loss_case(seed=23, S=30, T=5, K=4, lead=(3, 4)):
    g = gen(seed)
    logits = torch.randn(*lead, S, generator=g, dtype=torch.float64) * 2
    index = torch.randint(0, S, (T, K), generator=g)
    index[0, 3] = index[0, 0]  # a source twice in one group
    index[1, 2] = -1
    target = torch.randint(0, T, lead, generator=g)
    target.view(-1)[1] = -100
    return logits, index, target


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_topk_mean_loss_written_out(bd, pre, reduction):
    """F.cross_entropy on L = topk_mean (log of it for pre softmax), written out in float64 loops:
    float64 to 1e-12 relative, float32 to round-off; gradients against the float64 reference."""
    backend, device = bd
    logits, index, target = _topk_loss_case()
    L = topk_mean_oracle(logits, index, 2, pre)
    if pre == "softmax":
        L = L.log()
    want = F.cross_entropy(L.reshape(-1, index.shape[0]), target.reshape(-1), reduction=reduction,
                           label_smoothing=0.1)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = logits.to(dtype).to(device).requires_grad_(True)
        loss = rx.mapped_cross_entropy(x, target.to(device), index.to(device), reduce="topk_mean", topk=2, pre=pre,
                                       reduction=reduction, label_smoothing=0.1, backend=backend)
        assert loss.dtype == dtype
        assert_close_relative(loss.cpu().reshape(-1), want.reshape(-1), rtol=rtol, floor=rtol * 1e-1)
        x64 = logits.clone().requires_grad_(True)
        ref = mapped_cross_entropy_reference(x64, target, index, reduce="topk_mean", topk=2, pre=pre,
                                             reduction=reduction, label_smoothing=0.1)
        up = torch.rand(ref.shape, generator=gen(3), dtype=torch.float64)
        (g,) = torch.autograd.grad(loss, x, up.to(dtype).to(device))
        (g_ref,) = torch.autograd.grad(ref, x64, up)
        assert_close_relative(g.cpu(), g_ref, rtol=rtol, floor=rtol * 1e-1)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
def test_topk_mean_loss_gradcheck_float64(bd, pre):
    backend, device = bd
    logits, _, target = _topk_loss_case(S=20, lead=(3,))
    index = torch.randperm(20, generator=gen(4))[:20].reshape(5, 4)  # distinct sources: no ties
    index[1, 2] = -1
    x = logits.to(device).requires_grad_(True)
    fn = lambda x: rx.mapped_cross_entropy(x, target.to(device), index.to(device), reduce="topk_mean",  # noqa: E731
                                           topk=3, pre=pre, backend=backend)
    # eps 1e-5: the central difference of a loss of size ~1 has round-off ~1e-16 / eps, 1e-10 at the
    # default eps 1e-6, which is the tolerance itself; its truncation error ~eps^2 stays ~1e-11.
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-5, atol=1e-10, rtol=1e-7, fast_mode=INTERPRET)


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("pre", PRES)
def test_topk_mean_loss_opcheck(bd, pre):
    backend, device = bd
    _, forward = forward_ops(backend)
    logits, index, target = _topk_loss_case(lead=(6,))
    torch.library.opcheck(forward, (logits.float().to(device).requires_grad_(True), target.to(device),
                                    index.to(device), None, "topk_mean", pre, 0.0, -100, 2))


@pytest.mark.parametrize("bd", BACKENDS)
def test_topk_mean_loss_ties_and_bad_topk(bd):
    """Equal logits: the loss's gradient goes to the lower positions first; a missing or unused topk
    and a group with fewer than topk valid entries are refused, naming the argument."""
    backend, device = bd
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[3, 1, 2, 1], [0, 3, -1, -1]])
    y = torch.tensor([0])
    loss = rx.mapped_cross_entropy(x.to(device), y.to(device), index.to(device), reduce="topk_mean", topk=2,
                                   backend=backend)
    (g,) = torch.autograd.grad(loss, x)
    q0 = torch.softmax(torch.tensor([3.0, 0.5], dtype=torch.float64), 0)[0]
    # d loss / d L_0 = q_0 - 1 spread over entries k=1, 2 (sources 1 and 2), d loss / d L_1 = 1 - q_0 over 0 and 3
    want = torch.tensor([[(1 - q0) / 2, (q0 - 1) / 2, (q0 - 1) / 2, (1 - q0) / 2]], dtype=torch.float64)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-14)
    for kwargs, words in ((dict(reduce="topk_mean"), "needs topk"), (dict(reduce="sum", topk=1), "topk is the k"),
                          (dict(reduce="topk_mean", topk=3), "index row 1 has 2")):
        with pytest.raises(ValueError, match=words):
            rx.mapped_cross_entropy(x.to(device), y.to(device), index.to(device), backend=backend, **kwargs)


# ---------------------------------------------------------------------------- float64 is float64


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
@pytest.mark.parametrize("reduce", REDUCES)
def test_float64_computed_in_float64(bd, pre, reduce):
    """float64 logits: the loss and its gradients within 1e-12 relative of the float64 reference on
    every backend (label smoothing and an ignored target included), gradcheck at atol 1e-10."""
    backend, device = bd
    x, index, w = gradcheck_inputs(4, reduce, device)
    target = torch.tensor([0, 2, -100, 1], device=device)
    x64, w64 = x.detach().cpu().requires_grad_(True), w.detach().cpu().requires_grad_(True)
    kw = dict(reduce=reduce, pre=pre, label_smoothing=0.1)
    loss = rx.mapped_cross_entropy(x, target, index, w, backend=backend, **kw)
    ref = mapped_cross_entropy_reference(x64, target.cpu(), index.cpu(), w64, **kw)
    assert loss.dtype == torch.float64
    for got, want in zip((loss, *grads(loss, (x, w))), (ref, *grads(ref, (x64, w64)))):
        assert_close_relative(got.cpu(), want, rtol=1e-12, floor=1e-14)
    fn = lambda x, w: rx.mapped_cross_entropy(x, target, index, w, backend=backend, **kw)  # noqa: E731
    # eps 1e-5: see test_topk_mean_loss_gradcheck_float64 (the loss is ~1; 1e-16 / eps round-off)
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-5, atol=1e-10, rtol=1e-7, fast_mode=INTERPRET)
