"""Black-box optimisers (reprogram_ext/blackbox/optim.py) against transcriptions of the original update rules.

Each ``original_*`` function below restates, in plain Python on lists of floats, the update that the
original code runs (read from the repositories named in optim.py); the optimisers must follow it step
by step on the same sequence of gradient estimates.
"""
import copy
import math

import pytest
import torch

from reprogram_ext.blackbox.optim import BarAdam, SpsaGC, clip_by_norm, polynomial_decay

STEPS = 6


def estimates(n: int, d: int, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(d, generator=g, dtype=torch.float64) for _ in range(n)]


def run(opt_cls, theta0, grads, **kwargs):
    p = torch.nn.Parameter(theta0.clone())
    opt = opt_cls([p], **kwargs)
    seen = []
    for g in grads:
        if hasattr(opt, "perturbation_scale"):
            seen.append((opt.step_size(), opt.perturbation_scale()))
        p.grad = g.clone()
        opt.step()
    return p.detach(), seen


def original_tf1_adam(theta, grads, lr_of_step, b1=0.9, b2=0.999, eps=1e-8):
    """tf.train.AdamOptimizer: lr_t = lr*sqrt(1-b2^t)/(1-b1^t); theta -= lr_t*m/(sqrt(v)+eps)."""
    theta, m, v = list(theta), [0.0] * len(theta), [0.0] * len(theta)
    for t, g in enumerate(grads, start=1):
        lr_t = lr_of_step(t - 1) * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            theta[i] -= lr_t * m[i] / (math.sqrt(v[i]) + eps)
    return theta


def original_blackvip(theta, grads, o=1.0, c=0.01, a=0.01, alpha=0.4, gamma=0.1, b1=0.9, opt_type="spsa-gc"):
    """BlackVIP forward_backward: step += 1; ak, ck; m1 (spsa-gc); w -= ak * accum (ZIP: spsa-clip)."""
    theta, m1, schedule = list(theta), None, []
    for step, g in enumerate(grads, start=1):
        ak = a / ((step + o) ** alpha)
        ck = c / (step ** gamma)
        schedule.append((ak, ck))
        if opt_type == "spsa-gc":
            m1 = list(g) if step == 1 else [b1 * mi + gi for mi, gi in zip(m1, g)]
            accum = [gi + b1 * mi for gi, mi in zip(g, m1)]
        elif opt_type == "spsa-clip":
            norm, delta = math.sqrt(sum(gi * gi for gi in g)), math.sqrt(len(theta))
            accum = [(delta / norm) * gi for gi in g] if norm >= delta else list(g)
        else:
            accum = list(g)
        theta = [w - ak * gi for w, gi in zip(theta, accum)]
    return theta, schedule


@pytest.mark.parametrize("scale", [1.0, 1e-7], ids=["unit", "tiny-grads"])
def test_bar_adam_is_tensorflow1_adam_at_constant_rate(scale):
    theta0, grads = torch.randn(7, dtype=torch.float64), estimates(STEPS, 7, scale=scale)
    ours, _ = run(BarAdam, theta0, grads)
    expected = original_tf1_adam(theta0.tolist(), [g.tolist() for g in grads], lambda s: 0.01)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    if scale < 1e-3:  # where sqrt(v) is near eps, torch's Adam (eps on sqrt(v_hat)) is a different optimiser
        torch_adam, _ = run(torch.optim.Adam, theta0, grads, lr=0.01, eps=1e-8)
        assert (torch_adam - ours).abs().max() > 1e-4


def test_bar_adam_polynomial_schedule_is_the_decay_the_original_defines():
    theta0, grads = torch.randn(5, dtype=torch.float64), estimates(STEPS, 5, seed=1)
    ours, _ = run(BarAdam, theta0, grads, lr_schedule="polynomial", decay_steps=4)
    lr_of = lambda s: (0.01 - 0.001) * (1 - min(s, 4) / 4) ** 0.9 + 0.001  # noqa: E731 (global_step s)
    expected = original_tf1_adam(theta0.tolist(), [g.tolist() for g in grads], lr_of)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert polynomial_decay(0, 0.01, 0.001, 2000, 0.9) == pytest.approx(0.01, rel=1e-15)
    assert polynomial_decay(5000, 0.01, 0.001, 2000, 0.9) == pytest.approx(0.001)


@pytest.mark.parametrize("opt_type", ["spsa-gc", "spsa"])
def test_spsa_gc_is_blackvips_update_and_schedules(opt_type):
    theta0, grads = torch.randn(9, dtype=torch.float64), estimates(STEPS, 9, seed=2)
    ours, seen = run(SpsaGC, theta0, grads, gc=opt_type == "spsa-gc")
    expected, schedule = original_blackvip(theta0.tolist(), [g.tolist() for g in grads], opt_type=opt_type)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    for (a_k, c_k), (ea, ec) in zip(seen, schedule):
        assert a_k == pytest.approx(ea, rel=1e-15) and c_k == pytest.approx(ec, rel=1e-15)
    assert seen[0][1] == pytest.approx(0.01)  # c_1 = c


@pytest.mark.parametrize("scale", [0.1, 10.0], ids=["below-sqrt-d", "clipped"])
def test_zip_norm_clipping(scale):
    theta0, grads = torch.randn(16, dtype=torch.float64), estimates(STEPS, 16, seed=3, scale=scale)
    ours, _ = run(SpsaGC, theta0, grads, gc=False, clip="sqrt_d")
    expected, _ = original_blackvip(theta0.tolist(), [g.tolist() for g in grads], opt_type="spsa-clip")
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    plain, _ = run(SpsaGC, theta0, grads, gc=False)
    assert torch.equal(plain, ours) == (scale < 1)


def test_clip_norm_is_joint_over_the_parameters():
    a, b = torch.full((3,), 2.0), torch.full((1,), 2.0)  # joint norm 4
    ca, cb = clip_by_norm([a, b], 2.0)
    assert torch.allclose(ca, torch.full((3,), 1.0)) and torch.allclose(cb, torch.full((1,), 1.0))
    assert clip_by_norm([a, b], 5.0)[0] is a


def test_state_dict_round_trip_keeps_the_step_count():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = SpsaGC([p])
    for _ in range(3):
        p.grad = torch.ones(3)
        opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = SpsaGC([q])
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # (torch shares state tensors otherwise)
    assert opt2.steps_taken == 3 and opt2.perturbation_scale() == opt.perturbation_scale()
    p.grad, q.grad = torch.ones(3), torch.ones(3)
    opt.step()
    opt2.step()
    assert torch.equal(p, q)


@pytest.mark.parametrize("cls, kwargs, match", [
    (BarAdam, {"lr": 0.0}, "lr must be a finite positive"),
    (BarAdam, {"lr": float("nan")}, "lr must be a finite positive"),
    (BarAdam, {"lr_schedule": "cosine"}, "lr_schedule must be"),
    (BarAdam, {"betas": (0.9, 1.0)}, "betas must be"),
    (BarAdam, {"decay_steps": 0}, "decay_steps must be"),
    (SpsaGC, {"c": -1.0}, "c must be a finite positive"),
    (SpsaGC, {"a": float("inf")}, "a must be a finite positive"),
    (SpsaGC, {"clip": "max"}, "clip must be None"),
    (SpsaGC, {"clip": 0.0}, "clip must be a finite positive"),
])
def test_bad_hyperparameters_are_refused(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_step_without_estimate_is_refused_and_changes_nothing():
    p = torch.nn.Parameter(torch.ones(2))
    for opt in (BarAdam([p]), SpsaGC([p])):
        with pytest.raises(RuntimeError, match="no .grad"):
            opt.step()
        assert torch.equal(p.detach(), torch.ones(2))
