"""label_map (docs/ops/label_map.md) on every backend: the papers' formulas written out, every pre x reduce x
layout against the reference, gradcheck, opcheck, torch.compile, property tests, bad inputs."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from label_map_cases import (COMBINATIONS, LOW_ATOL, PRES, REDUCES, assert_close_relative,
                             assert_compiled_matches_eager, assert_low_precision_close, forward_ops, gen,
                             gradcheck_inputs, grads, make_index, on, topk_mean_oracle)

import reprogram_ext as rx
from backend_params import INTERPRET, backend_device_params, interpreter_dtypes
from reprogram_ext.reference import label_map_reference

BACKENDS = backend_device_params()
KERNEL_BACKENDS = backend_device_params(include_reference=False)
# The Triton interpreter runs each program in Python: fewer examples, fast-mode gradcheck there.
PROPERTY_EXAMPLES = 12 if INTERPRET else 30


# ------------------------------------------------------------------ the papers' formulas, written out


@pytest.mark.parametrize("bd", BACKENDS)
def test_autovp_mean_of_logits(bd):
    """AutoVP / ILM-VP: out[n, t] = (1/k) sum_j logits[n, index[t, j]]."""
    backend, device = bd
    g = gen(1)
    logits = torch.randn(6, 50, generator=g)
    index = torch.randperm(50, generator=g)[:12].reshape(4, 3)
    expected = torch.empty(6, 4)
    for n in range(6):
        for t in range(4):
            expected[n, t] = sum(logits[n, int(s)] for s in index[t]) / 3
    out = rx.label_map(*on(device, logits, index), backend=backend)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bd", BACKENDS)
def test_v2s_bar_mean_of_probabilities(bd):
    """Voice2Series / BAR: out[n, t] = (1/k) sum_j softmax(logits[n])[index[t, j]]."""
    backend, device = bd
    g = gen(2)
    logits = torch.randn(5, 30, generator=g) * 3
    index = torch.randperm(30, generator=g)[:8].reshape(4, 2)
    expected = torch.empty(5, 4)
    for n in range(5):
        z = torch.exp(logits[n] - logits[n].max())
        p = z / z.sum()
        for t in range(4):
            expected[n, t] = (p[index[t, 0]] + p[index[t, 1]]) / 2
    out = rx.label_map(*on(device, logits, index), pre="softmax", backend=backend)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bd", BACKENDS)
def test_blm_dense_omega(bd):
    """BLM: out[n, t] = sum_s softmax(logits[n])_s * omega[s, t]."""
    backend, device = bd
    g = gen(3)
    logits = torch.randn(4, 20, generator=g)
    omega = torch.rand(20, 5, generator=g)
    omega = omega / omega.sum(0, keepdim=True)
    p = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    expected = torch.stack([torch.stack([(p[n] * omega[:, t]).sum() for t in range(5)]) for n in range(4)])
    out = rx.label_map(*on(device, logits), weight=omega.to(device), pre="softmax", backend=backend)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_one_to_one_is_plain_indexing(bd, reduce):
    """K = 1 (index [T] or [T, 1]) is logits[..., index] for every reduce."""
    backend, device = bd
    g = gen(4)
    logits = torch.randn(3, 7, 40, generator=g)
    index = torch.randperm(40, generator=g)[:9]
    for idx in (index, index[:, None]):
        out = rx.label_map(*on(device, logits, idx), reduce=reduce, backend=backend)
        torch.testing.assert_close(out.cpu(), logits[..., index], rtol=0, atol=0)


@pytest.mark.parametrize("bd", BACKENDS)
def test_weighted_reductions_written_out(bd):
    """sum = sum_k w v, mean = sum_k w v / sum_k w, max = max_k w v over valid entries."""
    backend, device = bd
    logits = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    index = torch.tensor([[0, 2, -1], [3, 3, 1]])
    weight = torch.tensor([[0.5, 2.0, 9.0], [1.0, 3.0, -1.0]])
    expected = {
        "sum": [[0.5 * 1 + 2 * 3, 1 * 0.5 + 3 * 0.5 + -1 * -2.0]],
        "mean": [[(0.5 * 1 + 2 * 3) / 2.5, (0.5 + 1.5 + 2.0) / 3.0]],
        "max": [[6.0, 2.0]],
    }
    for reduce, exp in expected.items():
        out = rx.label_map(*on(device, logits, index, weight), reduce=reduce, backend=backend)
        torch.testing.assert_close(out.cpu(), torch.tensor(exp), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bd", BACKENDS)
def test_max_sends_gradient_to_first_maximal_entry(bd):
    backend, device = bd
    logits = torch.tensor([[2.0, 5.0, 5.0, 1.0]], requires_grad=True)
    index = torch.tensor([[0, 2, 1, 2]])  # maximum 5 at sources 2 (k=1) and 1 (k=2), and 2 again (k=3)
    x = logits.to(device)
    out = rx.label_map(x, index.to(device), reduce="max", backend=backend)
    (g,) = torch.autograd.grad(out.sum(), logits)
    torch.testing.assert_close(g, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


# --------------------------------------------------------- every combination against the reference


def _case(layout, weighted, dtype=torch.float32, seed=0, S=37, T=5, K=4, lead=(3, 2)):
    g = gen(seed)
    logits = torch.randn(*lead, S, generator=g, dtype=torch.float64).to(dtype) * 2
    if layout == "dense":
        return logits, None, torch.rand(S, T, generator=g, dtype=torch.float64).to(dtype)
    index = make_index(layout, S, T, K, g)
    weight = torch.rand(T, K, generator=g, dtype=torch.float64).to(dtype) + 0.25 if weighted else None
    return logits, index, weight


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre,reduce,layout,weighted", COMBINATIONS)
def test_matches_reference_fp32(bd, pre, reduce, layout, weighted):
    """Forward and gradients (logits, weight) at 1e-5 relative against the float64 reference."""
    backend, device = bd
    logits, index, weight = _case(layout, weighted)
    x = logits.to(device).requires_grad_(True)
    w = None if weight is None else weight.to(device).requires_grad_(True)
    out = rx.label_map(x, None if index is None else index.to(device), w, reduce=reduce, pre=pre, backend=backend)
    up = torch.randn(out.shape, generator=gen(9)).to(device)
    got = (out, *grads(out, (x, w), up))

    x64 = logits.double().requires_grad_(True)
    w64 = None if weight is None else weight.double().requires_grad_(True)
    ref = label_map_reference(x64, index, w64, reduce=reduce, pre=pre)
    want = (ref, *grads(ref, (x64, w64), up.double().cpu()))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == torch.float32
        assert_close_relative(a.cpu(), b)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
@pytest.mark.parametrize("reduce", REDUCES)
def test_gradcheck_float64(bd, pre, reduce):
    backend, device = bd
    x, index, w = gradcheck_inputs(3, reduce, device)
    fn = lambda x, w: rx.label_map(x, index, w, reduce=reduce, pre=pre, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=INTERPRET)
    fn_unweighted = lambda x: rx.label_map(x, index, reduce=reduce, pre=pre, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn_unweighted, (x,), fast_mode=INTERPRET)


# opcheck tests the registration (schema, fake kernel, autograd), which is the same for every
# option value: each pre and each reduce once.
@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("pre,reduce", list(zip(PRES, REDUCES)))
def test_opcheck(bd, pre, reduce):
    backend, device = bd
    forward, _ = forward_ops(backend)
    logits, index, weight = _case("duplicate", True, lead=(4,))
    args_w = (logits.to(device).requires_grad_(True), index.to(device), weight.to(device).requires_grad_(True))
    args = (logits.to(device).requires_grad_(True), index.to(device), None)
    for a in (args_w, args):
        torch.library.opcheck(forward, (*a, reduce, pre))


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", ["none", "softmax"])
def test_torch_compile_fullgraph(bd, pre):
    backend, device = bd
    logits, index, weight = _case("ragged", True)
    x = logits.to(device).requires_grad_(True)
    w = weight.to(device).requires_grad_(True)
    idx = index.to(device)

    def step(x, w):
        return rx.label_map(x, idx, w, reduce="mean", pre=pre, backend=backend).square().sum()

    assert_compiled_matches_eager(step, (x, w))


@st.composite
def mapping_cases(draw):
    S = draw(st.integers(1, 40))
    T = draw(st.integers(1, 6))
    K = draw(st.integers(1, 5))
    lead = tuple(draw(st.lists(st.integers(0, 3), min_size=0, max_size=2)))
    seed = draw(st.integers(0, 2**16))
    g = gen(seed)
    index = torch.randint(0, S, (T, K), generator=g)  # duplicates arise naturally
    pad = torch.rand(T, K, generator=g) < draw(st.floats(0, 0.6))
    pad[torch.arange(T), torch.randint(0, K, (T,), generator=g)] = False  # no empty group
    index[pad] = -1
    weighted = draw(st.booleans())
    weight = torch.rand(T, K, generator=g) + 0.5 if weighted else None
    logits = torch.randn(*lead, S, generator=g) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    return logits, index, weight, draw(st.sampled_from(REDUCES)), draw(st.sampled_from(PRES))


@pytest.mark.parametrize("bd", BACKENDS)
@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(case=mapping_cases())
def test_property_random_mappings(bd, case):
    backend, device = bd
    logits, index, weight, reduce, pre = case
    x = logits.to(device).requires_grad_(True)
    w = None if weight is None else weight.to(device).requires_grad_(True)
    out = rx.label_map(x, index.to(device), w, reduce=reduce, pre=pre, backend=backend)
    assert out.shape == (*logits.shape[:-1], index.shape[0])
    got = (out, *grads(out, (x, w)))
    x64 = logits.double().requires_grad_(True)
    w64 = None if weight is None else weight.double().requires_grad_(True)
    ref = label_map_reference(x64, index, w64, reduce=reduce, pre=pre)
    want = (ref, *grads(ref, (x64, w64)))
    for a, b in zip(got, want):  # random groups of up to 5 duplicates: cancellation of ~5x larger terms
        assert_close_relative(a.cpu(), b, floor=1e-5)


# ---------------------------------------------------------------------------------- dtypes, shapes


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("dtype", interpreter_dtypes([torch.float16, torch.bfloat16]))
@pytest.mark.parametrize("pre", PRES)
@pytest.mark.parametrize("reduce", REDUCES)
def test_low_precision_tolerance_rule(bd, dtype, pre, reduce):
    backend, device = bd
    logits, index, weight = _case("duplicate", True, dtype=torch.float32, S=64, T=6, K=5)
    lp = logits.to(dtype)
    x = lp.to(device).requires_grad_(True)
    out = rx.label_map(x, index.to(device), weight.to(device), reduce=reduce, pre=pre, backend=backend)
    assert out.dtype == dtype
    up = torch.randn(out.shape, generator=gen(3))
    (gx,) = grads(out, (x,), up.to(device=device, dtype=dtype))
    x32 = lp.float().requires_grad_(True)
    ref32 = label_map_reference(x32, index, weight, reduce=reduce, pre=pre)
    (g32,) = grads(ref32, (x32,), up)
    xpt = lp.clone().requires_grad_(True)
    pt = label_map_reference(xpt, index, weight, reduce=reduce, pre=pre, compute_dtype=dtype)
    (gpt,) = grads(pt, (xpt,), up.to(dtype))
    assert_low_precision_close(out.cpu(), pt, ref32, LOW_ATOL[dtype])
    assert_low_precision_close(gx.cpu(), gpt, g32, LOW_ATOL[dtype])


@pytest.mark.parametrize("bd", BACKENDS)
def test_leading_dims_and_empty_batch(bd):
    backend, device = bd
    logits, index, weight = _case("ragged", True, lead=(2, 3, 4))
    out = rx.label_map(*on(device, logits, index, weight), pre="softmax", backend=backend)
    flat = rx.label_map(*on(device, logits.reshape(-1, logits.shape[-1]), index, weight), pre="softmax",
                        backend=backend)
    assert out.shape == (2, 3, 4, index.shape[0])
    torch.testing.assert_close(out.reshape(-1, index.shape[0]), flat)
    empty = torch.randn(0, 5, logits.shape[-1], device=device, requires_grad=True)
    out = rx.label_map(empty, index.to(device), weight.to(device), pre="softmax", backend=backend)
    assert out.shape == (0, 5, index.shape[0])
    out.sum().backward()
    assert empty.grad.shape == empty.shape
    vec = rx.label_map(logits[0, 0, 0].to(device), index.to(device), backend=backend)  # no leading dims
    assert vec.shape == (index.shape[0],)


@pytest.mark.parametrize("bd", BACKENDS)
def test_inputs_not_modified(bd):
    backend, device = bd
    logits, index, weight = _case("duplicate", True)
    x, i, w = on(device, logits, index, weight)
    x.requires_grad_(True)
    w.requires_grad_(True)
    before = [t.detach().clone() for t in (x, i, w)]
    for pre in PRES:
        out = rx.label_map(x, i, w, reduce="max", pre=pre, backend=backend)
        out.sum().backward()
    for t, b in zip((x, i, w), before):
        assert torch.equal(t.detach(), b)


@pytest.mark.parametrize("bd", BACKENDS)
def test_extreme_logits_stay_finite(bd):
    """Softmax over very large / very negative logits: no overflow, probabilities sum as expected."""
    backend, device = bd
    logits = torch.tensor([[1000.0, -1000.0, 0.0, 999.0], [-1e4, -1e4 + 1, -1e4 + 2, -1e4 + 3]])
    index = torch.tensor([[0, 3], [1, 2]])
    out = rx.label_map(*on(device, logits, index), reduce="sum", pre="softmax", backend=backend).cpu()
    ref = label_map_reference(logits.double(), index, reduce="sum", pre="softmax")
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bd", BACKENDS)
def test_bad_inputs_name_the_argument(bd):
    backend, device = bd
    x = torch.randn(2, 10, device=device)
    idx = torch.tensor([[0, 1], [2, -1]], device=device)
    cases = [
        (dict(index=torch.tensor([[0, 10]], device=device)), ValueError, "index"),
        (dict(index=torch.tensor([[0, -2]], device=device)), ValueError, "index"),
        (dict(index=torch.tensor([[0.0, 1.0]], device=device)), TypeError, "index"),
        (dict(index=torch.tensor([[0, 1], [-1, -1]], device=device)), ValueError, "empty target group"),
        (dict(index=idx, weight=torch.ones(2, 3, device=device)), ValueError, "weight"),
        (dict(index=None, weight=torch.ones(9, 3, device=device)), ValueError, "weight"),
        (dict(index=idx, reduce="median"), ValueError, "reduce"),
        (dict(index=idx, pre="sigmoid"), ValueError, "pre"),
        (dict(index=None), ValueError, "index"),
        (dict(index=idx, weight=torch.ones(2, 2, dtype=torch.int64, device=device)), TypeError, "weight"),
    ]
    for kwargs, exc, word in cases:
        index = kwargs.pop("index")
        with pytest.raises(exc, match=word):
            rx.label_map(x, index, backend=backend, **kwargs)
    with pytest.raises(TypeError, match="logits"):
        rx.label_map(torch.ones(2, 10, dtype=torch.int64, device=device), idx, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        rx.label_map(x, idx, backend="fpga")


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
def test_ops_take_option_names(bd):
    """The ops take reduce / pre as their names; a bad name is refused, naming the argument, the
    allowed names and what was given (no silent fallback to another reduction)."""
    backend, device = bd
    forward, _ = forward_ops(backend)
    x = torch.randn(3, 10, device=device)
    idx = torch.tensor([[0, 1], [2, -1]], device=device)
    for reduce in REDUCES:
        out, _ = forward(x, idx, None, reduce, "none")
        torch.testing.assert_close(out.cpu(), label_map_reference(x.cpu(), idx.cpu(), reduce=reduce))
    with pytest.raises(ValueError, match=r"reduce must be one of .*'sum'.*'mean'.*'max'.*got 'median'"):
        forward(x, idx, None, "median", "none")
    with pytest.raises(ValueError, match=r"pre must be one of .*'none'.*'softmax'.*'log_softmax'.*got 'sigmoid'"):
        forward(x, idx, None, "sum", "sigmoid")


# ------------------------------------------------------------------------------------ backend limits


def _meta_map(S: int, T: int, K: int, topk=None):
    """The canonical form of logits [2, S] with an index [T, K], on the meta device (no memory)."""
    from reprogram_ext.ops.label_map.args import canonicalize

    index = torch.zeros(T, K, dtype=torch.int64, device="meta")
    reduce = "topk_mean" if topk else "mean"
    return canonicalize("label_map", torch.empty(2, S, device="meta"), index, None, reduce, "none", topk)


def test_triton_limits_name_their_reason():
    """backends.py triton_limit: the real bounds of the Triton kernels, each at its edge; T*K = 40000 (past
    the first version's one-block limit of 16384) is taken."""
    from reprogram_ext.ops.label_map.backends import triton_limit

    assert triton_limit(400, 10000, 4) is None
    assert triton_limit(400, 2**15, 2**16 - 1) is None
    assert "32 bits" in triton_limit(400, 2**15, 2**16) and "T*K = 2147483648" in triton_limit(400, 2**15, 2**16)
    assert triton_limit(65535 * 1024, 10, 1) is None
    wide = triton_limit(65535 * 1024 + 1, 10, 1)
    assert "65535" in wide and "65536 row blocks" in wide
    assert triton_limit(400, 2, 1024, topk=3) is None
    assert "[K, K]" in triton_limit(400, 2, 1025, topk=3) and "K = 1025" in triton_limit(400, 2, 1025, topk=3)
    assert triton_limit(400, 1, 2**20) is None
    assert "2^20" in triton_limit(400, 1, 2**20 + 1)


def test_auto_never_picks_triton_past_its_limits():
    """resolve_backend asks backends.py's refusal, which names the limit; the CUDA-device branch is
    resolved without a GPU: no tensor is made on the device."""
    from reprogram_ext import _extension
    from reprogram_ext.backend_registry import resolve_backend
    from reprogram_ext.ops.label_map.backends import refusal

    big, fits = refusal(_meta_map(65535 * 1024 + 1, 10, 2)), refusal(_meta_map(400, 10000, 4))
    assert "grid axis" in big("triton") and fits("triton") is None
    wide = refusal(_meta_map(400, 2, 1025, topk=3))
    assert "topk_mean" in wide("triton")
    assert all(r(name) is None for r in (big, wide) for name in ("cuda", "cpu", "reference"))
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda, "label_map_forward", big) != "triton"
    if _extension.triton_available() and not _extension.has_kernel("label_map_forward", "CUDA"):
        assert resolve_backend("auto", cuda, "label_map_forward", fits) == "triton"
        assert resolve_backend("auto", cuda, "label_map_forward", big) == "reference"
        with pytest.raises(ValueError, match="backend='triton' cannot take these inputs.*grid axis"):
            resolve_backend("triton", cuda, "label_map_forward", big)


def _large_index(seed: int, S: int = 400, T: int = 10000, K: int = 4) -> torch.Tensor:
    """T*K = 40000 entries over S = 400 sources (~100 entries per source: long entry loops), padding
    in some groups."""
    index = torch.randint(0, S, (T, K), generator=gen(seed))
    index[::7, 3] = -1
    return index


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", ["none", "softmax"])
def test_large_index_matches_the_reference(bd, pre):
    """T*K = 40000 (the Triton backend refused more than 16384 before its source map): forward and the
    logits gradient against the float64 reference on every backend; backend="auto" takes it too."""
    backend, device = bd
    index = _large_index(11)
    logits = torch.randn(2, 400, generator=gen(12))
    up = torch.randn(2, index.shape[0], generator=gen(13))
    x64 = logits.double().requires_grad_(True)
    want = label_map_reference(x64, index, pre=pre)
    (want_grad,) = grads(want, (x64,), up.double())
    x = logits.to(device).requires_grad_(True)
    out = rx.label_map(x, index.to(device), pre=pre, backend=backend)
    assert_close_relative(out.detach().cpu(), want.detach())
    assert_close_relative(grads(out, (x,), up.to(device))[0].cpu(), want_grad)
    out = rx.label_map(*on(device, logits, index), pre=pre, backend="auto")
    assert_close_relative(out.cpu(), want.detach())


# -------------------------------------------------------------------------------------------- topk_mean


def _topk_case(dtype=torch.float64, seed=21, S=40, T=6, K=5, lead=(3, 2)):
    """Logits and a ragged index with >= 3 valid entries per group, duplicates included."""
    g = gen(seed)
    logits = (torch.randn(*lead, S, generator=g, dtype=torch.float64) * 2).to(dtype)
    index = torch.randint(0, S, (T, K), generator=g)
    index[0, 1] = index[0, 0]  # a source twice in one group: two entries with equal logits
    index[1, 4] = -1
    index[2, 0] = -1
    index[2, 3] = -1
    return logits, index


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
@pytest.mark.parametrize("topk", [1, 2, 3])
def test_topk_mean_written_out(bd, pre, topk):
    """AttrVR's score: out[n, t] = (1/k) sum of pre(x) over the k valid entries with the largest
    logits, against float64 loops; float64 to 1e-12 relative, float32 to float32 round-off."""
    backend, device = bd
    logits, index = _topk_case()
    want = topk_mean_oracle(logits, index, topk, pre)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        out = rx.label_map(*on(device, logits.to(dtype), index), reduce="topk_mean", topk=topk, pre=pre,
                           backend=backend)
        assert out.dtype == dtype
        assert_close_relative(out.cpu(), want, rtol=rtol, floor=rtol * 1e-1)


@pytest.mark.parametrize("bd", BACKENDS)
def test_topk_mean_ties_go_to_the_lower_position(bd):
    """Equal logits: the gradient goes to the lower positions k first (a source listed twice is two
    entries); a valid -inf entry is chosen before the padding; a nan logit counts as the largest."""
    backend, device = bd
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0, -float("inf")]], dtype=torch.float64)
    index = torch.tensor([[3, 1, 2, 1], [2, 1, 1, -1], [0, -1, 4, -1]])
    cases = {  # topk -> (out, d out[0, t] / d x for t = 0, 1)
        1: ([3.0, 3.0, 1.0], [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]),
        2: ([3.0, 3.0, -float("inf")], [[0, 0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0, 0]]),
    }
    for topk, (out_want, grad_want) in cases.items():
        xd = x.to(device).requires_grad_(True)
        out = rx.label_map(xd, index.to(device), reduce="topk_mean", topk=topk, backend=backend)
        torch.testing.assert_close(out.cpu(), torch.tensor([out_want], dtype=torch.float64), rtol=0, atol=0)
        for t in (0, 1):
            (g,) = torch.autograd.grad(out[0, t], xd, retain_graph=True)
            torch.testing.assert_close(g.cpu(), torch.tensor([grad_want[t]], dtype=torch.float64), rtol=0, atol=0)
    nan = torch.tensor([[1.0, float("nan"), 3.0, 0.0, 2.0]], dtype=torch.float64)
    out = rx.label_map(*on(device, nan, torch.tensor([[0, 2, 3], [0, 3, 4]])), reduce="topk_mean", topk=2,
                       backend=backend).cpu()
    assert out[0, 1].item() == 1.5  # no nan in the group
    assert out[0, 0].item() == 2.0  # 3 and 1 (the largest two)
    out = rx.label_map(*on(device, nan, torch.tensor([[0, 1, 2]])), reduce="topk_mean", topk=1, backend=backend)
    assert out.isnan().all()  # the nan entry is the largest


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
def test_topk_mean_gradcheck_float64(bd, pre):
    """Distinct logits (away from ties, where topk_mean is differentiable): gradcheck in float64 at
    atol 1e-10, the fused backends included."""
    backend, device = bd
    logits, _ = _topk_case(lead=(2,), S=12)
    index = torch.tensor([[0, 3, -1, 7], [1, 2, 5, 11], [10, 4, 6, -1]])  # distinct sources: no ties
    x = logits.to(device).requires_grad_(True)
    fn = lambda x: rx.label_map(x, index.to(device), reduce="topk_mean", topk=2, pre=pre,  # noqa: E731
                                backend=backend)
    assert torch.autograd.gradcheck(fn, (x,), atol=1e-10, rtol=1e-7, fast_mode=INTERPRET)


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("pre", PRES)
def test_topk_mean_opcheck(bd, pre):
    backend, device = bd
    forward, _ = forward_ops(backend)
    logits, index = _topk_case(dtype=torch.float32, lead=(4,))
    torch.library.opcheck(forward, (logits.to(device).requires_grad_(True), index.to(device), None, "topk_mean",
                                    pre, 3))


@pytest.mark.parametrize("bd", BACKENDS)
def test_topk_mean_torch_compile_fullgraph(bd):
    backend, device = bd
    logits, index = _topk_case(dtype=torch.float32)
    x = logits.to(device).requires_grad_(True)
    idx = index.to(device)

    def step(x):
        return rx.label_map(x, idx, reduce="topk_mean", topk=2, pre="log_softmax", backend=backend).square().sum()

    assert_compiled_matches_eager(step, (x,))


@pytest.mark.parametrize("bd", BACKENDS)
def test_topk_mean_bad_inputs_name_the_argument(bd):
    backend, device = bd
    x = torch.randn(2, 10, device=device)
    idx = torch.tensor([[0, 1, 2], [3, 4, -1]], device=device)
    cases = [
        (dict(reduce="topk_mean"), ValueError, "needs topk=k.*got topk=None"),
        (dict(reduce="topk_mean", topk=0), ValueError, "topk must be >= 1"),
        (dict(reduce="topk_mean", topk=-2), ValueError, "topk must be >= 1"),
        (dict(reduce="topk_mean", topk=1.5), TypeError, "topk must be an int"),
        (dict(reduce="topk_mean", topk=True), TypeError, "topk must be an int"),
        (dict(reduce="topk_mean", topk=torch.tensor(2)), TypeError, "topk must be an int"),
        (dict(reduce="topk_mean", topk=4), ValueError, "topk=4 exceeds the index's K=3"),
        (dict(reduce="topk_mean", topk=3), ValueError, "at least 3 valid.*index row 1 has 2"),
        (dict(reduce="mean", topk=2), ValueError, "topk is the k of reduce='topk_mean'.*reduce='mean'"),
        (dict(reduce="topk_mean", topk=2, weight=torch.ones(2, 3, device=device)), ValueError, "takes no weight"),
    ]
    for kwargs, exc, words in cases:
        weight = kwargs.pop("weight", None)
        with pytest.raises(exc, match=words):
            rx.label_map(x, idx, weight, backend=backend, **kwargs)
    with pytest.raises(ValueError, match="needs the sparse form"):
        rx.label_map(x, None, torch.ones(10, 3, device=device), reduce="topk_mean", topk=1, backend=backend)


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
def test_topk_mean_ops_check_topk(bd):
    """Direct callers of the ops: topk outside [1, K] with topk_mean, or topk with another reduce, is
    refused by the op itself."""
    backend, device = bd
    forward, _ = forward_ops(backend)
    x = torch.randn(3, 10, device=device)
    idx = torch.tensor([[0, 1], [2, 3]], device=device)
    out, _ = forward(x, idx, None, "topk_mean", "none", 1)
    torch.testing.assert_close(out.cpu(), torch.maximum(x[:, idx[:, 0]], x[:, idx[:, 1]]).cpu())
    for reduce, topk in (("topk_mean", 0), ("topk_mean", 3), ("mean", 1)):
        with pytest.raises((ValueError, RuntimeError), match="topk"):
            forward(x, idx, None, reduce, "none", topk)


# ---------------------------------------------------------------------------- float64 is float64


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("pre", PRES)
@pytest.mark.parametrize("reduce", REDUCES)
def test_float64_computed_in_float64(bd, pre, reduce):
    """float64 logits are computed and accumulated in float64 on every backend: forward and both
    gradients within 1e-12 relative of the float64 reference, and gradcheck at atol 1e-10."""
    backend, device = bd
    x, index, w = gradcheck_inputs(4, reduce, device)
    x64, w64 = x.detach().cpu().requires_grad_(True), w.detach().cpu().requires_grad_(True)
    out = rx.label_map(x, index, w, reduce=reduce, pre=pre, backend=backend)
    ref = label_map_reference(x64, index.cpu(), w64, reduce=reduce, pre=pre)
    up = torch.rand(out.shape, generator=gen(8), dtype=torch.float64)
    assert out.dtype == torch.float64
    for got, want in zip((out, *grads(out, (x, w), up.to(device))), (ref, *grads(ref, (x64, w64), up))):
        assert_close_relative(got.cpu(), want, rtol=1e-12, floor=1e-14)
    fn = lambda x, w: rx.label_map(x, index, w, reduce=reduce, pre=pre, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w), atol=1e-10, rtol=1e-7, fast_mode=INTERPRET)


# The compiled backends (C++ CPU, CUDA): their backward op's optional forward_out.
COMPILED = [p for p in KERNEL_BACKENDS if p.values[0][0] in ("cpu", "cuda")]


@pytest.mark.parametrize("bd", COMPILED)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_backward_from_the_forward_output(bd, reduce, weighted):
    """label_map_backward's forward_out (the forward's output; the CUDA kernel of pre softmax with
    sum / mean reads it instead of the mapped logits, D = sum_t g_t out_t): the gradient it gives is
    the one without it (CPU: the same bits, it only checks it; CUDA: the dense coefficient rounded
    differently), through autograd too; a tensor of another shape is refused, naming the argument."""
    backend, device = bd
    logits, index, weight = _case("duplicate", weighted, S=53, T=7, K=3, lead=(6,))
    logits, index = logits.to(device), index.to(device)
    weight = weight.to(device) if weighted else None
    forward, _ = forward_ops(backend)
    backward = torch.ops.reprogram_ext.label_map_backward
    out, row_lse = forward(logits, index, weight, reduce, "softmax")
    grad_out = torch.randn(out.shape, generator=gen(3)).to(device)
    plain, _ = backward(grad_out, logits, index, weight, row_lse, reduce, "softmax", False)
    with_out, _ = backward(grad_out, logits, index, weight, row_lse, reduce, "softmax", False, 0, out)
    if device == "cpu":
        assert torch.equal(with_out, plain)
    else:
        assert_close_relative(with_out, plain, 1e-5)
    x = logits.clone().requires_grad_(True)
    rx.label_map(x, index, weight, reduce=reduce, pre="softmax", backend=backend).backward(grad_out)
    assert_close_relative(x.grad, plain, 1e-5)
    with pytest.raises(RuntimeError, match=r"forward_out must be the forward's contiguous \[6, 7\]"):
        backward(grad_out, logits, index, weight, row_lse, reduce, "softmax", False, 0, out[:, :3])


@pytest.mark.parametrize("bd", COMPILED)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_in_place_change_of_the_output_keeps_the_backward(bd, reduce):
    """The compiled autograd keeps the output for the CUDA backward that reads it (forward_out). Changing
    the output in place afterwards (out /= t, a common temperature step) must neither fail the backward
    nor let it read the changed values: the gradient is the reference's through the same in-place step."""
    backend, device = bd
    logits, index, _ = _case("duplicate", False, S=53, T=7, K=3, lead=(6,))
    logits, index = logits.to(device), index.to(device)
    grad_out = torch.randn((6, 7), generator=gen(5)).to(device)
    grads = []
    for b in (backend, "reference"):
        x = logits.clone().requires_grad_(True)
        out = rx.label_map(x, index, reduce=reduce, pre="softmax", backend=b)
        out.div_(0.37)
        out.add_(1.0)
        out.backward(grad_out)
        grads.append(x.grad)
    assert_close_relative(grads[0], grads[1], 1e-5)
