"""vocab_map (docs/ops/vocab_map.md) on every backend: a float64 transcription of the formula (loops
over positions and window offsets) for the forward and every gradient, in every mode, over several
V_s chunks; the counter-based Gumbel noise; opcheck, torch.compile, bad inputs."""
from __future__ import annotations

import math

import pytest
import torch

import reprogram_ext as rx
from backend_params import INTERPRET, backend_device_params
from reprogram_ext.ops.vocab_map import noise
from reprogram_ext.ops.vocab_map.options import MODES

BACKENDS = backend_device_params()
KERNEL_BACKENDS = backend_device_params(include_reference=False)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def transcription(tokens, theta, embedding, tau, mode, seed):
    """The formula with loops: z[b, i] = Σ_j θ[j, tokens[b, i + j − w//2]] over the in-sequence j."""
    B, L = tokens.shape
    w, _, V_s = theta.shape
    rows = []
    for b in range(B):
        for i in range(L):
            z = theta.new_zeros(V_s)
            for j in range(w):
                k = i + j - w // 2
                if 0 <= k < L:
                    z = z + theta[j, int(tokens[b, k])]
            rows.append(z)
    z = torch.stack(rows)  # [N, V_s], n = b·L + i
    if mode == "none":
        return (z @ embedding).reshape(B, L, -1)
    if mode in ("gumbel", "gumbel_hard"):
        z = z + noise.gumbel(seed, torch.arange(B * L), torch.arange(V_s), theta.dtype)
    s = z / tau
    e = torch.exp(s - s.max(dim=1, keepdim=True).values)
    p = e / e.sum(dim=1, keepdim=True)
    if mode == "gumbel_hard":
        hard = torch.zeros_like(p)
        hard[torch.arange(B * L), s.argmax(dim=1)] = 1.0
        p = hard + (p - p.detach())
    return (p @ embedding).reshape(B, L, -1)


def inputs(B, L, w, V_t, V_s, D, seed=0, dtype=torch.float64, scale=2.0):
    g = gen(seed)
    tokens = torch.randint(0, V_t, (B, L), generator=g)
    theta = (torch.randn(w, V_t, V_s, generator=g, dtype=dtype) * scale)
    embedding = torch.randn(V_s, D, generator=g, dtype=dtype)
    return tokens, theta, embedding


def grads(fn, theta, embedding, upstream, embedding_grad=True):
    theta = theta.detach().clone().requires_grad_(True)
    embedding = embedding.detach().clone().requires_grad_(embedding_grad)
    out = fn(theta, embedding)
    wrt = [theta, embedding] if embedding_grad else [theta]
    return (out.detach(), *torch.autograd.grad(out, wrt, upstream))


def on(device, *ts):
    return [t.to(device) for t in ts]


SHAPES = [  # (B, L, w, V_t, V_s, D, chunk)
    (2, 7, 3, 5, 23, 6, 5),     # several chunks and a ragged last one
    (3, 2, 5, 4, 17, 3, 8),     # a window wider than the sequence
    (1, 9, 1, 6, 40, 4, None),  # R2DL's w = 1, one default chunk
]


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])))
def test_float64_matches_transcription(bd, mode, shape):
    """Forward and the gradients to theta and embedding equal the float64 loops to 1e-10."""
    backend, device = bd
    B, L, w, V_t, V_s, D, chunk = shape
    tokens, theta, embedding = inputs(B, L, w, V_t, V_s, D)
    tau, seed = 0.7, 12345
    upstream = torch.randn(B, L, D, generator=gen(1), dtype=torch.float64)
    expected = grads(lambda th, e: transcription(tokens, th, e, tau, mode, seed), theta, embedding, upstream)
    t, th, e, up = on(device, tokens, theta, embedding, upstream)
    got = grads(lambda th_, e_: rx.vocab_map(t, th_, e_, tau=tau, mode=mode, seed=seed, chunk=chunk, backend=backend),
                th, e, up)
    for name, a, b in zip(("out", "grad_theta", "grad_embedding"), got, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_float32_matches_reference_without_embedding_grad(bd, mode):
    """float32, a frozen embedding (no embedding gradient asked), larger sizes."""
    backend, device = bd
    tokens, theta, embedding = inputs(4, 16, 5, 11, 300, 12, seed=3, dtype=torch.float32)
    upstream = torch.randn(4, 16, 12, generator=gen(2))
    expected = grads(lambda th, e: rx.vocab_map(tokens, th, e, tau=0.5, mode=mode, seed=7, backend="reference"),
                     theta, embedding, upstream, embedding_grad=False)
    t, th, e, up = on(device, tokens, theta, embedding, upstream)
    got = grads(lambda th_, e_: rx.vocab_map(t, th_, e_, tau=0.5, mode=mode, seed=7, chunk=64, backend=backend),
                th, e, up, embedding_grad=False)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
def test_gumbel_hard_is_straight_through(bd):
    """gumbel_hard's rows are embedding rows (the argmax of (z + G)/τ), and its theta gradient is
    the soft gumbel's with the same seed."""
    backend, device = bd
    tokens, theta, embedding = on(device, *inputs(2, 5, 3, 4, 30, 5, seed=4))
    up = torch.randn(2, 5, 5, dtype=torch.float64, device=device)
    hard = grads(lambda th, e: rx.vocab_map(tokens, th, e, tau=0.3, mode="gumbel_hard", seed=9, chunk=7,
                                            backend=backend), theta, embedding, up)
    soft = grads(lambda th, e: rx.vocab_map(tokens, th, e, tau=0.3, mode="gumbel", seed=9, chunk=7, backend=backend),
                 theta, embedding, up)
    rows = hard[0].reshape(-1, 5)
    match = (rows[:, None, :] == embedding[None, :, :]).all(-1)
    assert bool(match.any(1).all()), "every gumbel_hard output row is an embedding row"
    torch.testing.assert_close(hard[1], soft[1], rtol=1e-12, atol=1e-12)
    picked = match.float().argmax(1)
    expected_ge = torch.zeros_like(embedding).index_add_(0, picked, up.reshape(-1, 5))
    torch.testing.assert_close(hard[2], expected_ge, rtol=1e-12, atol=1e-12)


def test_noise_is_the_documented_hash():
    """noise.gumbel equals a plain-integer transcription of the lowbias32 formula, and is Gumbel(0, 1):
    mean ≈ Euler's γ, variance ≈ π²/6."""
    def mix(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    seed = (123 << 40) + 987654321
    key = mix((seed & 0xFFFFFFFF) ^ mix(seed >> 32))
    rows, cols = torch.tensor([0, 1, 5, 2**33 + 3]), torch.tensor([0, 7, 40000])
    got = noise.gumbel(seed, rows, cols, torch.float64)
    for a, n in enumerate(rows.tolist()):
        for b, v in enumerate(cols.tolist()):
            h = mix(mix((n & 0xFFFFFFFF) ^ key) ^ v)
            u = ((h >> 8) + 0.5) / 2**24
            assert got[a, b].item() == pytest.approx(-math.log(-math.log(u)), rel=1e-14)
    sample = noise.gumbel(5, torch.arange(400), torch.arange(500), torch.float64)
    assert abs(sample.mean().item() - 0.5772156649) < 0.01
    assert abs(sample.var().item() - math.pi ** 2 / 6) < 0.03


@pytest.mark.parametrize("bd", BACKENDS)
def test_generator_reproducible(bd):
    backend, device = bd
    tokens, theta, embedding = on(device, *inputs(2, 4, 3, 5, 20, 3, dtype=torch.float32))
    a = rx.vocab_map(tokens, theta, embedding, mode="gumbel", generator=gen(3), backend=backend)
    b = rx.vocab_map(tokens, theta, embedding, mode="gumbel", generator=gen(3), backend=backend)
    c = rx.vocab_map(tokens, theta, embedding, mode="gumbel", generator=gen(4), backend=backend)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
def test_refuses_double_backward(bd):
    backend, device = bd
    tokens, theta, embedding = on(device, *inputs(1, 3, 3, 4, 9, 2))
    theta.requires_grad_(True)
    out = rx.vocab_map(tokens, theta, embedding, backend=backend)
    with pytest.raises(RuntimeError, match="higher-order"):
        torch.autograd.grad(out.sum(), theta, create_graph=True)


def test_reference_double_backward():
    tokens, theta, embedding = inputs(1, 4, 3, 3, 6, 2)
    theta.requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda th: rx.vocab_map(tokens, th, embedding, tau=0.8, backend="reference"), (theta,))


@pytest.mark.skipif(INTERPRET, reason="compiled-op checks run in the normal process")
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_compiled_ops(mode):
    tokens, theta, embedding = inputs(2, 5, 3, 4, 13, 3, dtype=torch.float32)
    theta.requires_grad_(True)
    embedding.requires_grad_(True)
    torch.library.opcheck(torch.ops.reprogram_ext.vocab_map_forward, (tokens, theta, embedding, 0.9, mode, 5, 4))
    out = torch.ops.reprogram_ext.vocab_map_forward(tokens, theta, embedding, 0.9, mode, 5, 4)
    g = torch.randn_like(out[0])
    torch.library.opcheck(torch.ops.reprogram_ext.vocab_map_backward,
                          (g, tokens, theta.detach(), embedding.detach(), out[0].detach(), *out[1:], 0.9, mode, 5, 4,
                           True))


@pytest.mark.parametrize("bd", KERNEL_BACKENDS)
@pytest.mark.parametrize("mode", ["softmax", "gumbel_hard", "none"])
def test_compile_fullgraph(bd, mode):
    backend, device = bd
    tokens, theta, embedding = on(device, *inputs(2, 6, 3, 5, 21, 4, dtype=torch.float32))

    def f(tk, th, e):
        return rx.vocab_map(tk, th, e, tau=0.6, mode=mode, seed=11, chunk=8, backend=backend)

    th = theta.clone().requires_grad_(True)
    th2 = theta.clone().requires_grad_(True)
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(tokens, th, embedding)
    eager = f(tokens, th2, embedding)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    out.pow(2).sum().backward()
    eager.pow(2).sum().backward()
    torch.testing.assert_close(th.grad, th2.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bd", BACKENDS)
def test_compiled_token_check(bd):
    """Out-of-range token ids raise under torch.compile too (an in-graph check)."""
    backend, device = bd
    tokens, theta, embedding = on(device, *inputs(1, 4, 3, 5, 9, 2, dtype=torch.float32))
    tokens[0, 2] = 5
    torch._dynamo.reset()
    f = torch.compile(lambda tk: rx.vocab_map(tk, theta, embedding, backend=backend), fullgraph=True)
    with pytest.raises(RuntimeError, match="tokens must hold ids"):
        f(tokens)


# ------------------------------------------------------------------ bad input


def _bad_cases():
    tokens, theta, embedding = inputs(2, 4, 3, 5, 9, 2, dtype=torch.float32)
    neg = tokens.clone()
    neg[1, 3] = -1
    big = tokens.clone()
    big[0, 0] = 5
    return [
        ("negative token", dict(tokens=neg), ValueError, r"tokens must hold ids in \[0, V_t=5\).*got -1 at \(1, 3\)"),
        ("token out of range", dict(tokens=big), ValueError, r"tokens .*got 5 at \(0, 0\)"),
        ("tau zero", dict(tau=0.0), ValueError, "tau must be a positive finite"),
        ("tau negative", dict(tau=-1.0), ValueError, "tau must be a positive finite"),
        ("tau inf", dict(tau=float("inf")), ValueError, "tau must be a positive finite"),
        ("tau nan", dict(tau=float("nan")), ValueError, "tau must be a positive finite"),
        ("even window", dict(theta=torch.randn(2, 5, 9)), ValueError, "window w = theta.shape\\[0\\] must be odd"),
        ("vocabulary mismatch", dict(embedding=torch.randn(8, 2)), ValueError, r"embedding must be \[V_s=9, D\]"),
        ("empty sequences", dict(tokens=tokens[:, :0]), ValueError, "tokens must be a non-empty"),
        ("empty batch", dict(tokens=tokens[:0]), ValueError, "tokens must be a non-empty"),
        ("float tokens", dict(tokens=tokens.float()), TypeError, "tokens must be an integer tensor"),
        ("1-D tokens", dict(tokens=tokens[0]), ValueError, r"tokens must be \[B, L\]"),
        ("dtype mismatch", dict(embedding=embedding.double()), TypeError, "embedding must have theta's dtype"),
        ("half theta", dict(theta=theta.half(), embedding=embedding.half()), TypeError, "theta must be float32"),
        ("bad mode", dict(mode="hard"), ValueError, "mode must be one of"),
        ("bad chunk", dict(chunk=0), ValueError, "chunk must be a positive int"),
    ], (tokens, theta, embedding)


CASES, GOOD = _bad_cases()


@pytest.mark.parametrize("bd", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_bad_input(bd, case):
    backend, device = bd
    _, change, error, message = case
    args = dict(zip(("tokens", "theta", "embedding"), GOOD))
    args.update({k: v for k, v in change.items() if k in args})
    kwargs = {k: v for k, v in change.items() if k not in args}
    t, th, e = on(device, args["tokens"], args["theta"], args["embedding"])
    with pytest.raises(error, match=message):
        rx.vocab_map(t, th, e, backend=backend, **kwargs)


def test_inputs_unchanged():
    tokens, theta, embedding = inputs(2, 5, 3, 4, 11, 3)
    copies = [t.clone() for t in (tokens, theta, embedding)]
    for backend in ("reference", "cpu"):
        rx.vocab_map(tokens, theta, embedding, mode="gumbel", seed=1, chunk=4, backend=backend)
    for a, b in zip((tokens, theta, embedding), copies):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", MODES)
def test_cpu_many_blocks_and_tiles(mode):
    """The CPU kernels at sizes with several row blocks (128 rows) and column tiles (256 columns), each
    ragged: float64 equal to the reference to 1e-10 (forward and both gradients), and float32 bitwise
    equal across 1 and 2 threads and between runs."""
    tokens, theta, embedding = inputs(3, 100, 5, 7, 600, 5, seed=4)
    upstream = torch.randn(3, 100, 5, generator=gen(5), dtype=torch.float64)
    expected = grads(lambda th, e: rx.vocab_map(tokens, th, e, tau=0.6, mode=mode, seed=9, backend="reference"),
                     theta, embedding, upstream)
    got = grads(lambda th, e: rx.vocab_map(tokens, th, e, tau=0.6, mode=mode, seed=9, chunk=200, backend="cpu"),
                theta, embedding, upstream)
    for name, a, b in zip(("out", "grad_theta", "grad_embedding"), got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")
    th32, e32, up32 = theta.float(), embedding.float(), upstream.float()
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            runs.append(grads(lambda th, e: rx.vocab_map(tokens, th, e, tau=0.6, mode=mode, seed=9, backend="cpu"),
                              th32, e32, up32))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert torch.equal(a, b)


def test_cpu_under_inference_mode():
    """The CPU forward's worker threads run under torch.inference_mode too (same output as outside)."""
    tokens, theta, embedding = inputs(2, 70, 3, 5, 300, 4, seed=6, dtype=torch.float32)
    expected = rx.vocab_map(tokens, theta, embedding, mode="gumbel", seed=2, backend="cpu")
    with torch.inference_mode():
        got = rx.vocab_map(tokens, theta, embedding, mode="gumbel", seed=2, backend="cpu")
    assert torch.equal(got, expected)


@pytest.mark.parametrize("bd", BACKENDS)
def test_float32_largest_uniform_is_finite(bd):
    """seed 183 hashes row 29, column 392 to h >> 8 = 2^24 − 1: float32 rounds that u to 1, and the
    floor of −log u (2^−25) keeps G finite (≈ 17.33, as in float64) on every backend."""
    backend, device = bd
    rows, cols = torch.tensor([29]), torch.tensor([392])
    g32, g64 = noise.gumbel(183, rows, cols, torch.float32), noise.gumbel(183, rows, cols, torch.float64)
    assert torch.isfinite(g32).all()
    assert abs(g32.item() - g64.item()) < 1e-3 and abs(g64.item() - 25 * math.log(2)) < 1e-6
    tokens, theta, embedding = inputs(1, 30, 3, 5, 400, 4, seed=8, dtype=torch.float32, scale=0.1)
    t, th, e = on(device, tokens, theta, embedding)
    out = rx.vocab_map(t, th, e, mode="gumbel", seed=183, backend=backend).cpu()
    assert torch.isfinite(out).all()
    reference = rx.vocab_map(tokens, theta, embedding, mode="gumbel", seed=183, backend="reference")
    torch.testing.assert_close(out, reference, rtol=2e-4, atol=2e-5)
    exact = transcription(tokens, theta.double(), embedding.double(), 1.0, "gumbel", 183)
    torch.testing.assert_close(out[0, 29].double(), exact[0, 29], rtol=1e-3, atol=1e-3)
