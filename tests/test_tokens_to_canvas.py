"""tokens_to_canvas (SPEC §7) on every backend: forward and every gradient against a float64 oracle
written as a loop over the cells, determinism of the table gradient, registration (opcheck,
torch.compile fullgraph) and errors.

The same test bodies run on each (backend, device) from tests/backend_params.py."""
from __future__ import annotations

import pytest
import torch

import reprogram_ext
from reprogram_ext import tokens_to_canvas
from backend_params import INTERPRET, backend_device_params, interpreter_dtypes

IN_MEAN = (0.485, 0.456, 0.406)
IN_STD = (0.229, 0.224, 0.225)
BACKENDS = backend_device_params()
FUSED = backend_device_params(include_reference=False)
NON_TRITON = [p for p in BACKENDS if p.values[0][0] != "triton"]
FUSED_NON_TRITON = [p for p in FUSED if p.values[0][0] != "triton"]
ACT = {"none": lambda t: t, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


def oracle(tokens, table, *, grid, out_size=None, offset=None, activation="tanh", pad="repeat_last", program=None,
           program_mask=None, base=None, base_weight=1.0, patch_weight=1.0, clamp=None, mean=None, std=None):
    """The formula as a loop over the cells (as Neekhara et al. 2022 fill their canvas), in float64."""
    f = ACT[activation]
    one_d = table.dim() == 3
    if one_d:  # 1-D: the same loop on a canvas of height 1
        table = table.unsqueeze(-2)
        grid, out_size = (1, grid), None if out_size is None else (1, out_size)
        offset = None if offset is None else (0, offset)
        program, program_mask, base = (None if t is None else t.unsqueeze(-2) for t in (program, program_mask, base))
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    V, C, ph, pw = table.shape
    B, L = tokens.shape
    H, W = out_size if out_size is not None else (gh * ph, gw * pw)
    oy, ox = offset if offset is not None else ((H - gh * ph + 1) // 2, (W - gw * pw + 1) // 2)
    chan = lambda v: torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1, 1).expand(C, 1, 1)
    patches = f(table.double()) * chan(patch_weight)
    rows = []
    for b in range(B):
        img = torch.zeros(C, H, W, dtype=torch.float64)
        for g in range(gh * gw):
            t = int(tokens[b, g]) if g < L else (int(tokens[b, L - 1]) if pad == "repeat_last" else pad)
            y, x = oy + (g // gw) * ph, ox + (g % gw) * pw
            img = img.index_put((torch.arange(C).view(C, 1, 1), torch.arange(y, y + ph).view(1, ph, 1),
                                 torch.arange(x, x + pw).view(1, 1, pw)), patches[t])
        rows.append(img)
    v = torch.stack(rows)
    if base is not None:
        v = chan(base_weight) * base.double() + v
    if program is not None:
        a = f(program.double())
        v = v + (a if program_mask is None else program_mask.double() * a)
    if clamp is not None:
        v = torch.clamp(v, *clamp)
    if mean is not None:
        v = (v - chan(mean)) / chan(std)
    return v.squeeze(-2) if one_d else v


def _leaf(t, device, dtype=None, grad=True):
    t = t.detach().clone().to(device=device, dtype=dtype or t.dtype)
    return t.requires_grad_(grad and t.is_floating_point())


CASES = {
    "neekhara": dict(shape=(2, 3, 4, 4), grid=(3, 3), L=7, kw=dict(patch_weight=0.2, clamp=(0.0, 1.0), mean=IN_MEAN,
                                                                   std=IN_STD), base=(3, 12, 12)),
    "program_mask_pad_id": dict(shape=(3, 3, 2, 3), grid=(2, 4), L=5, out=(7, 15), offset=(2, 1),
                                kw=dict(pad=1, activation="sigmoid", clamp=(-0.3, 0.9)), program=(3, 7, 15),
                                mask=(1, 7, 15), base=(2, 1, 7, 15)),
    "per_sample_channel_weights": dict(shape=(5, 2, 3, 2), grid=(2, 3), L=6, out=(9, 8),
                                       kw=dict(activation="none", base_weight=(0.5, 2.0), patch_weight=(1.5, -1.0),
                                               mean=(0.1, 0.2), std=(0.5, 2.0)),
                                       program=(2, 1, 9, 8), base=(1, 9, 8)),
    "one_d": dict(shape=(4, 1, 5), grid=6, L=4, out=40, kw=dict(clamp=(-0.5, 0.5)), program=(1, 40), base=(2, 1, 40)),
    "relu_one_channel_program": dict(shape=(3, 3, 2, 2), grid=(2, 2), L=4, kw=dict(activation="relu"),
                                     program=(1, 4, 4), base=(3, 4, 4)),
}


def _case(name, dtype=torch.float32):
    c = CASES[name]
    V, *rest = c["shape"]
    B = 2
    inputs = dict(tokens=torch.randint(0, V, (B, c["L"])), table=torch.randn(*c["shape"], dtype=dtype))
    for key in ("program", "mask", "base"):
        if key in c:
            shape = c[key]
            if key == "program" and name == "per_sample_channel_weights":
                shape = (B,) + shape[1:]
            t = torch.rand(*shape, dtype=dtype) if key == "mask" else torch.randn(*shape, dtype=dtype) * 0.5
            inputs["program_mask" if key == "mask" else key] = t
    kw = dict(c["kw"], grid=c["grid"])
    if "out" in c:
        kw["out_size"] = c["out"]
    if "offset" in c:
        kw["offset"] = c["offset"]
    return inputs, kw


def _run(bd, inputs, kw, dtype=None, grads=("table", "program", "base")):
    backend, device = bd
    ours = {k: _leaf(v, device, dtype if v.is_floating_point() else None, grad=k in grads) for k, v in inputs.items()}
    args = dict(ours)
    out = tokens_to_canvas(args.pop("tokens"), args.pop("table"), backend=backend, **args, **kw)
    return out, ours


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_equal_the_oracle(bd, name):
    inputs, kw = _case(name)
    out, ours = _run(bd, inputs, kw)
    theirs = {k: _leaf(v, "cpu", torch.float64 if v.is_floating_point() else None, grad=k in ("table", "program", "base"))
              for k, v in inputs.items()}
    expected = oracle(**theirs, **kw)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    torch.testing.assert_close(out.cpu().double(), expected.detach(), rtol=1e-5, atol=1e-5)
    g = torch.randn_like(expected)
    out.backward(g.to(out.device, out.dtype))
    expected.backward(g)
    for key in ("table", "program", "base"):
        if key in ours:
            assert ours[key].grad is not None, key
            torch.testing.assert_close(ours[key].grad.cpu().double(), theirs[key].grad, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"grad of {key}: {m}")


@pytest.mark.parametrize("bd", NON_TRITON)
@pytest.mark.parametrize("name", list(CASES))
def test_float64_is_computed_in_float64(bd, name):
    inputs, kw = _case(name, torch.float64)
    out, ours = _run(bd, inputs, kw)
    theirs = {k: _leaf(v, "cpu", grad=k in ("table", "program", "base")) for k, v in inputs.items()}
    expected = oracle(**theirs, **kw)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.cpu(), expected.detach(), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    out.backward(g.to(out.device))
    expected.backward(g)
    for key in ("table", "program", "base"):
        if key in ours:
            torch.testing.assert_close(ours[key].grad.cpu(), theirs[key].grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bd", NON_TRITON)
def test_gradcheck(bd):
    backend, device = bd
    tokens = torch.tensor([[0, 2, 1], [3, 3, 0]], device=device)
    table = torch.randn(4, 2, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    program = torch.randn(2, 6, 8, dtype=torch.float64, device=device, requires_grad=True)
    base = torch.randn(1, 6, 8, dtype=torch.float64, device=device, requires_grad=True)
    mask = torch.rand(6, 8, dtype=torch.float64, device=device)

    def f(t, p, b):
        return tokens_to_canvas(tokens, t, grid=(2, 2), out_size=(6, 8), offset=(1, 1), program=p, program_mask=mask,
                                base=b, base_weight=0.7, patch_weight=0.3, mean=(0.1, 0.2), std=(0.3, 0.4),
                                backend=backend)

    assert torch.autograd.gradcheck(f, (table, program, base), eps=1e-6, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("dtype", interpreter_dtypes([torch.float16, torch.bfloat16]))
def test_low_precision_within_twice_the_torch_error(bd, dtype):
    inputs, kw = _case("neekhara")
    out, _ = _run(bd, inputs, kw, dtype=dtype, grads=())
    exact = oracle(**inputs, **kw)
    torch_low = oracle(**{k: v.to(dtype).double() if v.is_floating_point() else v for k, v in inputs.items()}, **kw)
    assert out.dtype == dtype
    err_pt = (torch_low.to(dtype).double() - exact).abs().max()
    assert (out.cpu().double() - exact).abs().max() <= 2 * err_pt + 1e-3


def _table_grad(tokens, table, base, g, grid, backend, threads):
    """table's gradient of tokens_to_canvas(...).backward(g) with torch's thread count set to ``threads``."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        table.grad = None
        tokens_to_canvas(tokens, table, grid=grid, base=base, patch_weight=0.2, clamp=(0, 1), mean=IN_MEAN,
                         std=IN_STD, backend=backend).backward(g)
        return table.grad.clone()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bd", FUSED)
def test_table_gradient_is_deterministic_across_runs_and_threads(bd):
    """Each table row is a fixed-order sum over its cells: bitwise equal across runs and thread counts."""
    backend, device = bd
    tokens = torch.randint(0, 3, (16, 20), device=device)  # 3 tokens: long groups of cells
    table = torch.randn(3, 3, 8, 8, device=device, requires_grad=True)
    base = torch.rand(3, 40, 32, device=device)
    g = torch.randn(16, 3, 40, 32, device=device)
    first = _table_grad(tokens, table, base, g, (5, 4), backend, 2)
    assert torch.equal(first, _table_grad(tokens, table, base, g, (5, 4), backend, 2))
    assert torch.equal(first, _table_grad(tokens, table, base, g, (5, 4), backend, 1))


@pytest.mark.parametrize("bd", FUSED_NON_TRITON)  # the interpreter takes minutes at this size
def test_large_table_gradient_is_deterministic_and_equals_the_reference(bd):
    """A table over 4 MB (the C++ CPU kernel then splits its tasks by token range, not by patch row):
    the gradient is bitwise equal across runs and thread counts and equals the reference's."""
    backend, device = bd
    gen = torch.Generator().manual_seed(3)
    V = 1500  # 1500 x 3 x 16 x 16 float32 = 4.6 MB
    tokens = (torch.randint(0, 12, (4, 16), generator=gen) * 125).to(device)  # 12 ids spread over V, repeated
    table = torch.randn(V, 3, 16, 16, generator=gen).to(device).requires_grad_(True)
    base = torch.rand(3, 64, 64, generator=gen).to(device)
    g = torch.randn(4, 3, 64, 64, generator=gen).to(device)
    first = _table_grad(tokens, table, base, g, 4, backend, 2)
    assert torch.equal(first, _table_grad(tokens, table, base, g, 4, backend, 2))
    assert torch.equal(first, _table_grad(tokens, table, base, g, 4, backend, 1))
    torch.testing.assert_close(first, _table_grad(tokens, table, base, g, 4, "reference", 1), rtol=1e-5, atol=1e-6)
    assert first[1:125].abs().sum() == 0  # unused ids


@pytest.mark.parametrize("bd", BACKENDS)
def test_unused_tokens_get_zero_gradient_and_cells_beyond_L_take_the_pad(bd):
    backend, device = bd
    table = torch.randn(6, 1, 2, 2, device=device, requires_grad=True)
    tokens = torch.tensor([[4, 1]], device=device)
    out = tokens_to_canvas(tokens, table, grid=(2, 2), activation="none", backend=backend)
    torch.testing.assert_close(out[0, 0, 2:, :2], table[1, 0].detach())  # cell 2 repeats the last token
    out_pad = tokens_to_canvas(tokens, table, grid=(2, 2), activation="none", pad=5, backend=backend)
    torch.testing.assert_close(out_pad[0, 0, 2:, 2:], table[5, 0].detach())
    out_pad.sum().backward()
    assert table.grad[[0, 2, 3]].abs().sum() == 0
    torch.testing.assert_close(table.grad[5], torch.full((1, 2, 2), 2.0, device=device))  # two cells of pad 5


@pytest.mark.parametrize("bd", BACKENDS)
def test_empty_batch(bd):
    backend, device = bd
    table = torch.randn(4, 3, 2, 2, device=device, requires_grad=True)
    out = tokens_to_canvas(torch.zeros(0, 3, dtype=torch.long, device=device), table, grid=2, backend=backend)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert torch.equal(table.grad, torch.zeros_like(table))


# ---------------------------------------------------------------- registration

@pytest.mark.parametrize("bd", FUSED)
def test_opcheck(bd):
    from reprogram_ext.ops.tokens_to_canvas.args import canonicalize

    backend, device = bd
    tokens = torch.randint(0, 5, (2, 3), device=device)
    table = torch.randn(5, 3, 2, 3, device=device, requires_grad=True)
    program = torch.randn(3, 6, 8, device=device, requires_grad=True)
    base = torch.rand(3, 6, 8, device=device, requires_grad=True)
    cp = canonicalize(tokens, table, grid=(2, 2), out_size=(6, 8), offset=None, activation="tanh", pad="repeat_last",
                      program=program, program_mask=torch.rand(6, 8, device=device), base=base, base_weight=1.0,
                      patch_weight=0.5, clamp=(0.0, 1.0), mean=IN_MEAN, std=IN_STD, normalize="after")
    if backend == "triton":
        from reprogram_ext.ops.tokens_to_canvas import triton_op
        op = triton_op.forward_op()
    else:
        op = torch.ops.reprogram_ext.tokens_to_canvas_forward
    torch.library.opcheck(op, (cp.cells, cp.table, cp.program, cp.program_mask, cp.base, *cp.op_args()))


@pytest.mark.skipif(INTERPRET or not reprogram_ext.backends()["cpp"], reason="the compiled library's schemas")
def test_compiled_schemas_are_the_python_options_schemas():
    from reprogram_ext.ops.tokens_to_canvas import options

    for name, schema in (("tokens_to_canvas_forward", options.FORWARD_SCHEMA),
                         ("tokens_to_canvas_backward", options.BACKWARD_SCHEMA)):
        compiled = getattr(torch.ops.reprogram_ext, name).default._schema
        assert compiled == torch._C.parse_schema(f"reprogram_ext::{name}{schema}")


@pytest.mark.parametrize("bd", BACKENDS)
def test_torch_compile_fullgraph(bd):
    backend, device = bd
    tokens = torch.randint(0, 4, (3, 5), device=device)
    base = torch.rand(3, 9, 9, device=device)

    def step(t):
        return tokens_to_canvas(tokens, t, grid=3, base=base, patch_weight=0.2, clamp=(0.0, 1.0), mean=IN_MEAN,
                                std=IN_STD, backend=backend).square().mean()

    t1 = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    t2 = t1.detach().clone().requires_grad_()
    loss_c = torch.compile(step, fullgraph=True)(t1)
    loss_c.backward()
    loss_e = step(t2)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e)
    torch.testing.assert_close(t1.grad, t2.grad)


@pytest.mark.parametrize("bd", BACKENDS)
def test_out_of_range_tokens_are_refused_under_compile(bd):
    backend, device = bd
    table = torch.randn(4, 1, 2, 2, device=device)

    def f(tok):
        return tokens_to_canvas(tok, table, grid=2, backend=backend)

    compiled = torch.compile(f, fullgraph=True)
    compiled(torch.tensor([[0, 1, 2, 3]], device=device))
    for bad in (4, -1):
        with pytest.raises((RuntimeError, ValueError), match="tokens must hold ids in"):
            compiled(torch.tensor([[0, bad, 2, 3]], device=device))
            if device == "cuda":
                torch.cuda.synchronize()


@pytest.mark.parametrize("bd", FUSED)
def test_double_backward_is_refused(bd):
    backend, device = bd
    table = torch.randn(3, 1, 2, 2, device=device, requires_grad=True)
    out = tokens_to_canvas(torch.tensor([[0, 2]], device=device), table, grid=(1, 2), backend=backend)
    (g,) = torch.autograd.grad(out.sum(), table, create_graph=False)
    with pytest.raises(RuntimeError, match="higher-order gradients"):
        torch.autograd.grad(out.square().sum(), table, create_graph=True)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("bad", [4, -1, 1000])
def test_out_of_range_tokens_name_the_argument(bd, bad):
    backend, device = bd
    table = torch.randn(4, 1, 2, 2, device=device)
    with pytest.raises(ValueError, match=r"tokens must hold ids in \[0, V=4\)"):
        tokens_to_canvas(torch.tensor([[0, bad]], device=device), table, grid=(1, 2), backend=backend)


def _bad(match, exc=ValueError, **kw):
    args = dict(tokens=torch.tensor([[0, 1, 2]]), table=torch.randn(4, 3, 2, 2), grid=2)
    args.update(kw)
    with pytest.raises(exc, match=match):
        tokens_to_canvas(args.pop("tokens"), args.pop("table"), **args)


def test_bad_inputs_name_the_argument():
    _bad("tokens must .*L >= 1", tokens=torch.zeros(2, 0, dtype=torch.long))
    _bad("tokens.*integer", TypeError, tokens=torch.zeros(1, 3))
    _bad(r"tokens must be \[B, L\]", tokens=torch.zeros(3, dtype=torch.long))
    _bad("table.*float", TypeError, table=torch.zeros(4, 3, 2, 2, dtype=torch.long))
    _bad(r"table must be \[V, C, P\]", table=torch.randn(4, 3))
    _bad("grid must .*at least L=5 cells", tokens=torch.zeros(1, 5, dtype=torch.long))
    _bad("pad must .*pad rule", pad=None)
    _bad(r"pad must .*\[0, V=4\)", pad=4)
    _bad("pad", TypeError, pad="zeros")
    _bad("out_size must .*large enough", out_size=3)
    _bad("out_size must .*large enough", out_size=5, offset=2)
    _bad("activation", activation="gelu")
    _bad("normalize", normalize="before")
    _bad("mean, std", mean=IN_MEAN)
    _bad("std must .*> 0", mean=IN_MEAN, std=(0.2, 0.0, 0.1))
    _bad("patch_weight must .*C=3", patch_weight=(1.0, 2.0))
    _bad("clamp", clamp=(1.0, 0.0))
    _bad("program must ", program=torch.randn(3, 5, 5))
    _bad("program must ", program=torch.randn(2, 3, 4, 4))
    _bad("program_mask must .*no program", program_mask=torch.ones(4, 4))
    _bad("program_mask must .*constant", program=torch.randn(3, 4, 4), program_mask=torch.ones(4, 4, requires_grad=True))
    _bad("base must ", base=torch.randn(2, 4, 4))
    _bad("grid must .*>= 1", grid=0)


def test_top_level_name():
    assert "tokens_to_canvas" in reprogram_ext.__all__ and reprogram_ext.tokens_to_canvas is tokens_to_canvas
