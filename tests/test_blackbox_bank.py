"""perturbation_bank, zo_gradient and CGE (reprogram_ext.blackbox; SPEC §6, docs/blackbox.md).

The directions are checked against the generator's definition (Philox4x32-10 known answers), recovered
from banks where the transform is linear, and the estimates are rebuilt from the recovered directions.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from reprogram_ext import blackbox as bb
from reprogram_ext.ops.perturbation_bank import philox

DIRS = ("sphere", "gaussian", "segmented")
LINEAR = dict(normalize="none")  # activation none, no mask, no clamp: bank_k = placed x + theta_k


def test_philox_known_answers():
    """Random123's known-answer vectors for philox4x32_10."""
    zero = torch.zeros(1, dtype=torch.int64)
    ones = torch.full((1,), 0xFFFFFFFF, dtype=torch.int64)
    pi = [torch.tensor([v], dtype=torch.int64) for v in (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)]
    cases = [((zero,) * 4, (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((ones,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             (tuple(pi), (0xA4093822, 0x299F31D0), (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, expected in cases:
        got = tuple(int(w) for w in philox.philox4x32_10(*ctr, *key))
        assert got == expected


def test_counter_layout():
    """Element i of direction j is lane i & 3 of Philox(counter (i >> 2, 0, j, 0), key (seed lo, seed hi))."""
    seed, j = (7 << 32) | 11, 3
    words = philox.raw_words(seed, j, 10, "cpu")
    g = torch.tensor([2], dtype=torch.int64)
    zero = torch.zeros(1, dtype=torch.int64)
    direct = philox.philox4x32_10(g, zero, torch.tensor([j]), zero, 11, 7)
    assert [int(w) for w in words[8:10]] == [int(direct[0]), int(direct[1])]


def test_direction_distributions():
    z = philox.direction(1, 1, 100_000, "gaussian", "cpu").double()
    assert abs(z.mean()) < 0.015 and abs(z.var() - 1) < 0.015 and abs((z ** 4).mean() - 3) < 0.1
    u = philox.direction(1, 1, 50_000, "sphere", "cpu").double()
    assert abs(u.norm() - 1) < 1e-6
    s = philox.direction(1, 1, 50_000, "segmented", "cpu")
    assert bool(((s.abs() >= 0.5) & (s.abs() < 1)).all())
    assert abs((s > 0).double().mean() - 0.5) < 0.01 and abs(s.abs().double().mean() - 0.75) < 0.01
    assert not torch.equal(philox.direction(1, 2, 64, "gaussian", "cpu"), philox.direction(1, 1, 64, "gaussian", "cpu"))
    assert not torch.equal(philox.direction(2, 1, 64, "gaussian", "cpu"), philox.direction(1, 1, 64, "gaussian", "cpu"))


def test_box_muller_pieces_are_accurate():
    n = torch.arange(1, 2 ** 24, 34, dtype=torch.int64)  # every 17th odd n
    log = philox._log_u(n.to(torch.float32)).double()
    assert (log - torch.log(n.double() * 2.0 ** -24)).abs().max() < 2e-6
    cos, sin = philox._sincos_turn(n)
    angle = 2 * math.pi * n.double() * 2.0 ** -24
    assert (cos.double() - torch.cos(angle)).abs().max() < 3e-7
    assert (sin.double() - torch.sin(angle)).abs().max() < 3e-7


@pytest.mark.parametrize("directions", DIRS)
@pytest.mark.parametrize("antithetic", [False, True])
def test_directions_recovered_from_bank(directions, antithetic):
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    theta = torch.randn(3, 9, 8, dtype=torch.float64)
    q, beta, seed = 4, 0.05, 1234
    bank = bb.perturbation_bank(x, theta, q=q, beta=beta, seed=seed, directions=directions, antithetic=antithetic,
                                **LINEAR)
    assert bank.shape == (2 * q if antithetic else q + 1, 2, 3, 9, 8) and bank.dtype == torch.float64
    u = bb.zo_directions(theta.shape, seed=seed, q=q, directions=directions, dtype=torch.float64)
    if antithetic:
        rec = (bank[0::2] - bank[1::2]) / (2 * beta)
    else:
        rec = (bank[1:] - bank[0]) / beta
        centre = bb.perturbation_bank(x, theta, q=q, beta=beta, seed=seed, directions=directions, queries=(0, 1),
                                      **LINEAR)
        assert torch.equal(centre[0], bank[0])
    torch.testing.assert_close(rec, u[:, None].expand_as(rec), atol=1e-12, rtol=1e-9)


def test_recovered_float32_and_per_sample_theta_and_1d():
    x = torch.rand(3, 1, 7)
    theta = torch.randn(3, 2, 12)  # per-sample programs: directions over all 72 elements
    bank = bb.perturbation_bank(x, theta, q=3, beta=0.1, seed=9, directions="gaussian", **LINEAR)
    assert bank.shape == (4, 3, 2, 12) and bank.dtype == torch.float32
    u = bb.zo_directions(theta.shape, seed=9, q=3, directions="gaussian")
    torch.testing.assert_close((bank[1:] - bank[0]) / 0.1, u, atol=2e-5, rtol=1e-4)


def test_bank_queries_are_masked_perturb():
    """Each query is masked_perturb of the perturbed program, with every option passed through."""
    from reprogram_ext import masked_perturb

    x = torch.rand(2, 1, 5, 5)
    theta = torch.randn(3, 12, 12)
    mask = (torch.rand(12, 12) > 0.3).float()
    opts = dict(activation="sigmoid", clamp=(0.0, 1.0), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), offset=(2, 3))
    bank = bb.perturbation_bank(x, theta, mask, q=2, beta=0.5, seed=3, **opts)
    u = bb.zo_directions(theta.shape, seed=3, q=2)
    for k in range(3):
        t = theta if k == 0 else theta + u[k - 1] * 0.5
        torch.testing.assert_close(bank[k], masked_perturb(x, t, mask, backend="reference", **opts))


@pytest.mark.parametrize("directions", DIRS)
@pytest.mark.parametrize("antithetic", [False, True])
def test_estimate_rebuilt_from_recovered_directions(directions, antithetic):
    x = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    theta = torch.randn(2, 5, 4, dtype=torch.float64)
    q, beta, seed = 6, 0.01, 77
    bank = bb.perturbation_bank(x, theta, q=q, beta=beta, seed=seed, directions=directions, antithetic=antithetic,
                                **LINEAR)
    target = torch.randn(2, 5, 4, dtype=torch.float64)
    losses = ((bank[:, 0] - target) ** 2).sum((1, 2, 3))
    g = bb.zo_gradient(losses, theta, seed=seed, beta=beta, directions=directions, antithetic=antithetic)
    if antithetic:
        rec = (bank[0::2, 0] - bank[1::2, 0]) / (2 * beta)
        diff = (losses[0::2] - losses[1::2]) / (2 * beta)
    else:
        rec = (bank[1:, 0] - bank[0, 0]) / beta
        diff = (losses[1:] - losses[0]) / beta
    v = 1 / rec if directions == "segmented" else rec
    b = theta.numel() if directions == "sphere" else 1
    expected = b / q * (diff.view(-1, 1, 1, 1) * v).sum(0)
    torch.testing.assert_close(g, expected, atol=1e-8, rtol=1e-7)
    g2 = bb.zo_gradient(losses, theta, seed=seed, beta=beta, directions=directions, antithetic=antithetic, scale=3.0)
    torch.testing.assert_close(g2, expected * (3.0 / b), atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("directions,antithetic", [("sphere", False), ("gaussian", False), ("segmented", True),
                                                   ("sphere", True)])
def test_unbiased_on_a_quadratic(directions, antithetic):
    """For f(t) = 0.5 (t - c)^T A (t - c) the one-sided and two-sided estimates are unbiased."""
    torch.manual_seed(1)
    d = 8
    theta = torch.randn(1, 1, d, dtype=torch.float64)
    c = torch.randn(d, dtype=torch.float64)
    a = torch.randn(d, d, dtype=torch.float64)
    A = a @ a.T / d + torch.eye(d, dtype=torch.float64)
    x = torch.zeros(1, 1, d, dtype=torch.float64)
    q, beta = 3000, 0.05
    bank = bb.perturbation_bank(x, theta[0], q=q, beta=beta, seed=5, directions=directions, antithetic=antithetic,
                                **LINEAR)
    r = bank.view(bank.shape[0], d) - c
    losses = 0.5 * ((r @ A) * r).sum(1)
    g = bb.zo_gradient(losses, theta[0], seed=5, beta=beta, directions=directions, antithetic=antithetic)
    true = A @ (theta.view(-1) - c)
    rel = (g.view(-1) - true).norm() / true.norm()
    assert rel < 0.25, rel


def test_dtypes_autocast_and_precision_warning():
    x = torch.rand(2, 3, 4, 4)
    theta = torch.randn(3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bank = bb.perturbation_bank(x, theta, q=2, beta=0.1, seed=0)
    assert bank.dtype == torch.float32
    assert bb.perturbation_bank(x, theta.double(), q=2, beta=0.1, seed=0).dtype == torch.float64
    assert bb.perturbation_bank(x, theta.half(), q=2, beta=0.1, seed=0).dtype == torch.float32
    with pytest.warns(RuntimeWarning, match="cannot hold the perturbations"):
        low = bb.perturbation_bank(x, theta, q=2, beta=0.01, seed=0, out_dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bb.perturbation_bank(x, theta, q=2, beta=0.01, seed=0)  # float32: no warning
        bb.perturbation_bank(x, theta, q=2, beta=0.5, seed=0, directions="segmented", out_dtype=torch.bfloat16)
    g = bb.zo_gradient(torch.ones(3), theta.half(), seed=0, beta=0.1)
    assert g.dtype == torch.float16 and g.shape == theta.shape


def test_seeds_and_query_ranges():
    x = torch.rand(1, 3, 4, 4)
    theta = torch.randn(3, 6, 6)
    full = bb.perturbation_bank(x, theta, q=5, beta=0.1, seed=2 ** 64 - 1, antithetic=True)
    part = bb.perturbation_bank(x, theta, q=5, beta=0.1, seed=2 ** 64 - 1, antithetic=True, queries=range(3, 7))
    assert torch.equal(part, full[3:7])
    other = bb.perturbation_bank(x, theta, q=5, beta=0.1, seed=2 ** 63, antithetic=True)
    assert not torch.equal(other, full)
    import numpy as np

    same = bb.perturbation_bank(x, theta, q=5, beta=0.1, seed=np.uint64(2 ** 64 - 1), antithetic=True)
    assert torch.equal(same, full)


def test_cge_recovers_a_linear_gradient_in_chunks():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    theta = torch.randn(1, 4, 4, dtype=torch.float64)
    w = torch.randn(16, dtype=torch.float64)
    total = torch.zeros_like(theta)
    chunks = bb.coordinate_chunks(theta, 5)
    assert [c.numel() for c in chunks] == [5, 5, 5, 1]
    for coords in chunks:
        bank = bb.coordinate_bank(x, theta, coords=coords, mu=1e-3, **LINEAR)
        assert bank.shape == (coords.numel() + 1, 1, 1, 4, 4)
        losses = bank.view(bank.shape[0], -1) @ w
        total = total + bb.cge_gradient(losses, theta, coords=coords, mu=1e-3)
    torch.testing.assert_close(total.view(-1), w, atol=1e-9, rtol=1e-9)
    part = bb.cge_gradient(torch.tensor([1.0, 2.0, 4.0]), theta, coords=[3, 7], mu=0.5)
    assert part.view(-1)[3] == 2.0 and part.view(-1)[7] == 6.0 and int((part != 0).sum()) == 2


X, THETA = torch.rand(1, 3, 4, 4), torch.randn(3, 6, 6)
BAD_BANK = [
    (dict(q=0), ValueError, "q must be a positive int"),
    (dict(q=True), TypeError, "q must be a positive int"),
    (dict(q=2.0), TypeError, "q must be a positive int"),
    (dict(beta=0.0), ValueError, "beta must be a finite real number > 0"),
    (dict(beta=-1), ValueError, "beta must be"),
    (dict(beta=float("nan")), ValueError, "beta must be"),
    (dict(beta=float("inf")), ValueError, "beta must be"),
    (dict(beta=True), TypeError, "beta must be"),
    (dict(seed=True), TypeError, "seed must be an int"),
    (dict(seed=-1), ValueError, "seed must be an int in"),
    (dict(seed=2 ** 64), ValueError, "seed must be an int in"),
    (dict(seed=1.0), TypeError, "seed must be an int"),
    (dict(seed=torch.tensor(1)), TypeError, "seed must be an int"),
    (dict(directions="uniform"), ValueError, "directions must be one of"),
    (dict(antithetic=1), TypeError, "antithetic must be a bool"),
    (dict(queries=(0, 9)), ValueError, "queries must be a non-empty range"),
    (dict(queries=range(0, 4, 2)), ValueError, "step 1"),
    (dict(activaton="tanh"), TypeError, "activaton"),
    (dict(out_dtype=torch.int32), TypeError, "out_dtype"),
    (dict(activation="gelu"), ValueError, "activation"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_BANK)
def test_bank_bad_input(kwargs, exc, match):
    x, theta = X.clone(), THETA.clone()
    args = dict(q=3, beta=0.1, seed=1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        bb.perturbation_bank(x, theta, **args)
    assert torch.equal(x, X) and torch.equal(theta, THETA)


def test_bank_bad_theta():
    with pytest.raises(TypeError, match="theta must be a floating tensor"):
        bb.perturbation_bank(X, THETA.long(), q=1, beta=0.1, seed=0)
    with pytest.raises(ValueError, match="theta must be a non-empty"):
        bb.perturbation_bank(X, torch.zeros(3, 0, 6), q=1, beta=0.1, seed=0)


BAD_ESTIMATE = [
    (dict(losses=torch.ones(1)), ValueError, "Q = q \\+ 1 >= 2"),
    (dict(losses=torch.ones(5), antithetic=True), ValueError, "even number"),
    (dict(losses=torch.ones(4), q=4), ValueError, "bank with q=3"),
    (dict(losses=torch.tensor([1.0, float("nan"), 2.0])), ValueError, "non-finite values at queries \\[1\\]"),
    (dict(losses=torch.tensor([1.0, float("inf")])), ValueError, "finite"),
    (dict(losses=torch.ones(2, 3)), ValueError, "shape \\[Q\\]"),
    (dict(losses=torch.ones(3, dtype=torch.int64)), TypeError, "floating tensor"),
    (dict(losses="abc"), TypeError, "losses"),
    (dict(beta=0), ValueError, "beta"),
    (dict(beta=float("nan")), ValueError, "beta"),
    (dict(seed=False), TypeError, "seed"),
    (dict(scale=0.0), ValueError, "scale"),
    (dict(scale=float("inf")), ValueError, "scale"),
    (dict(directions="normal"), ValueError, "directions"),
    (dict(theta=torch.ones(3, dtype=torch.int32)), TypeError, "theta"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_ESTIMATE)
def test_estimate_bad_input(kwargs, exc, match):
    args = dict(losses=torch.ones(4), theta=THETA.clone(), seed=1, beta=0.1)
    args.update(kwargs)
    theta = args["theta"]
    kept = theta.clone()
    with pytest.raises(exc, match=match):
        bb.zo_gradient(args.pop("losses"), args.pop("theta"), **args)
    assert torch.equal(theta, kept)


def test_estimate_leaves_inputs_alone():
    losses = torch.tensor([1.0, 2.0, 0.5])
    theta = THETA.clone()
    bb.zo_gradient(losses, theta, seed=1, beta=0.1)
    assert torch.equal(losses, torch.tensor([1.0, 2.0, 0.5])) and torch.equal(theta, THETA)


BAD_CGE = [
    (dict(coords=[0, 0]), ValueError, "distinct"),
    (dict(coords=[36]), ValueError, "flat indices in \\[0, d=36\\)"),
    (dict(coords=[-1]), ValueError, "flat indices in"),
    (dict(coords=[0.5]), TypeError, "integer"),
    (dict(coords=[]), ValueError, "non-empty"),
    (dict(mu=0.0), ValueError, "mu"),
    (dict(losses=torch.ones(3)), ValueError, "1 \\+ K = 2 values"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_CGE)
def test_cge_bad_input(kwargs, exc, match):
    theta = torch.randn(1, 6, 6)
    args = dict(losses=torch.ones(2), coords=[4], mu=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        bb.cge_gradient(args.pop("losses"), theta, **args)


# ---- the fused backends: the same directions (bits), the same banks and estimates ----------------------

from backend_params import backend_device_params  # noqa: E402

FUSED = backend_device_params(include_reference=False)
LINEAR_OPTS = [dict(normalize="none"), dict(normalize="none", offset=[(1, 2), (3, 0)]),
               dict(normalize="none", resize=(7, 9), resize_mode="nearest")]


@pytest.mark.parametrize("backend_device", FUSED)
@pytest.mark.parametrize("directions", DIRS)
@pytest.mark.parametrize("antithetic", [False, True])
def test_fused_bank_bits_equal_reference(backend_device, directions, antithetic):
    """Activation none, blend add, no normalisation: every step is one rounding of the same operands, so
    the fused bank equals the reference bit for bit (directions included)."""
    backend, device = backend_device
    for dtype in (torch.float32, torch.float64):
        for opts in LINEAR_OPTS:
            x = torch.rand(3, 3, 5, 6, dtype=dtype, device=device)
            theta = torch.randn(3, 10, 11, dtype=dtype, device=device)  # d = 330: a partial last group
            mask = (torch.rand(10, 11, device=device) > 0.4).to(dtype)
            args = dict(q=3, beta=0.07, seed=2 ** 63 + 5, directions=directions, antithetic=antithetic, **opts)
            ref = bb.perturbation_bank(x, theta, mask, backend="reference", **args)
            out = bb.perturbation_bank(x, theta, mask, backend=backend, **args)
            assert out.dtype == ref.dtype and torch.equal(out, ref), (dtype, opts)


@pytest.mark.parametrize("backend_device", FUSED)
@pytest.mark.parametrize("theta_batch", [2, 1], ids=["per_sample_programs", "one_program"])
def test_fused_bank_matches_reference_with_every_option(backend_device, theta_batch):
    """Per-sample programs take one forward per query; one program shared by the batch takes the
    queries as one prompt bank (bank=True) on CUDA and Triton."""
    backend, device = backend_device
    x = (torch.rand(2, 1, 6, 6, device=device) * 255).to(torch.uint8)
    theta = torch.randn(theta_batch, 3, 12, 12, device=device)
    mask = torch.rand(2, 1, 6, 6, device=device)
    opts = dict(activation="sigmoid", clamp=(0.1, 0.9), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), mask_scale=2,
                resize=(8, 8), blend="replace")
    for directions in DIRS:
        args = dict(q=4, beta=0.3, seed=11, directions=directions, queries=(1, 5), **opts)
        ref = bb.perturbation_bank(x, theta, mask, backend="reference", **args)
        out = bb.perturbation_bank(x, theta, mask, backend=backend, **args)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend_device", FUSED)
@pytest.mark.parametrize("directions", DIRS)
def test_fused_estimate_bits_equal_reference(backend_device, directions):
    backend, device = backend_device
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(3, 7, 9, dtype=dtype, device=device)
        losses = torch.rand(6, dtype=dtype, device=device)
        for antithetic in (False, True):
            args = dict(seed=123456789, beta=0.02, directions=directions, antithetic=antithetic)
            ref = bb.zo_gradient(losses, theta, backend="reference", **args)
            out = bb.zo_gradient(losses, theta, backend=backend, **args)
            assert out.dtype == dtype and torch.equal(out, ref)


def test_cpu_opcheck_and_compile():
    from reprogram_ext.ops.perturbation_bank.api import canonicalize_bank
    from reprogram_ext.ops.perturbation_bank.args import signed_seed
    from reprogram_ext.ops.perturbation_bank.options import PERTURB_DEFAULTS

    x = torch.rand(2, 3, 4, 4)
    theta = torch.randn(3, 6, 6)
    cb = canonicalize_bank(x, theta, None, q=2, beta=0.1, seed=7, directions="sphere", antithetic=False,
                           queries=None, out_dtype=None, options=dict(PERTURB_DEFAULTS, activation="tanh"))
    cp = cb.perturb
    args = (cp.x, cp.delta, cp.mask, signed_seed(7), 2, 0.1, "sphere", False, 0, 3, *cp.options.option_args(cp.norm))
    torch.library.opcheck(torch.ops.reprogram_ext.perturbation_bank, args)
    torch.library.opcheck(torch.ops.reprogram_ext.perturbation_bank_combine,
                          (torch.rand(3), signed_seed(2 ** 64 - 1), 50, "segmented"))

    def step(x, theta):
        bank = bb.perturbation_bank(x, theta, q=2, beta=0.1, seed=7, backend="cpu", activation="tanh")
        return bank.sum((1, 2, 3, 4))

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, theta), step(x, theta))


def test_schemas_match_python():
    from reprogram_ext.ops.perturbation_bank.options import BANK_SCHEMA, COMBINE_SCHEMA

    assert str(torch.ops.reprogram_ext.perturbation_bank.default._schema).split("perturbation_bank")[1] == BANK_SCHEMA
    assert (str(torch.ops.reprogram_ext.perturbation_bank_combine.default._schema).split("perturbation_bank_combine")[1]
            == COMBINE_SCHEMA)


def test_auto_picks_cpu_and_bad_backend():
    from reprogram_ext.backend_registry import resolve_backend

    assert resolve_backend("auto", torch.device("cpu"), "perturbation_bank") == "cpu"
    assert resolve_backend("auto", torch.device("cpu"), "perturbation_bank_combine") == "cpu"
    with pytest.raises(ValueError, match="backend"):
        bb.perturbation_bank(X, THETA, q=1, beta=0.1, seed=0, backend="gpu")


def test_cpu_op_guards():
    """Direct torch.ops callers get the same argument checks from the C++ op."""
    from reprogram_ext.ops.perturbation_bank.api import canonicalize_bank
    from reprogram_ext.ops.perturbation_bank.options import PERTURB_DEFAULTS

    cb = canonicalize_bank(X, THETA, None, q=2, beta=0.1, seed=7, directions="sphere", antithetic=False,
                           queries=None, out_dtype=None, options=dict(PERTURB_DEFAULTS))
    cp = cb.perturb
    opts = cp.options.option_args(cp.norm)
    bank = torch.ops.reprogram_ext.perturbation_bank
    for q, beta, start, stop, match in ((0, 0.1, 0, 1, "q must be"), (2, 0.0, 0, 1, "beta must be"),
                                        (2, float("nan"), 0, 1, "beta must be"), (2, 0.1, 0, 4, "queries must be"),
                                        (2, 0.1, 2, 2, "queries must be")):
        with pytest.raises(RuntimeError, match=match):
            bank(cp.x, cp.delta, cp.mask, 7, q, beta, "sphere", False, start, stop, *opts)
    with pytest.raises(ValueError, match="directions"):
        bank(cp.x, cp.delta, cp.mask, 7, 2, 0.1, "normal", False, 0, 3, *opts)
    with pytest.raises(RuntimeError, match="theta must be float32 or float64"):
        bank(cp.x.half(), cp.delta.half(), cp.mask, 7, 2, 0.1, "sphere", False, 0, 3, *opts)
    combine = torch.ops.reprogram_ext.perturbation_bank_combine
    with pytest.raises(RuntimeError, match="weights must be"):
        combine(torch.ones(2, 2), 1, 10, "sphere")
    with pytest.raises(RuntimeError, match="numel must be"):
        combine(torch.ones(2), 1, 2 ** 25 + 1, "sphere")
    with pytest.raises(RuntimeError, match="numel must be"):
        combine(torch.ones(2), 1, 0, "gaussian")
