"""BlackBoxReprogrammer (reprogram_ext/blackbox/reprogrammer.py): the step rebuilt by hand from the bank,
query counting and budgets, checks on what the black box returns, every kind of query callable, the
coordinator network, and nothing updated when a step fails."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reprogram_ext.blackbox import perturbation_bank, zo_gradient
from reprogram_ext.blackbox.canvases import ParameterBank, PromptBank
from reprogram_ext.blackbox.coordinator import Coordinator, CoordinatorDecoder
from reprogram_ext.blackbox.optim import BarAdam, SpsaGC
from reprogram_ext.blackbox.query import BlackBoxQuery, QueryBudgetExceeded, RefusesGradients
from reprogram_ext.blackbox.reprogrammer import BlackBoxReprogrammer, step_seed
from reprogram_ext.blackbox.zo_estimator import ZOEstimator
from reprogram_ext.nn import LabelMapping, PaddingPrompt

S, T, B = 6, 3, 4


def source_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, S))


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, 4, 4, generator=g), torch.randint(0, T, (B,), generator=g)


def make(estimator="rge", query=None, **kwargs):
    torch.manual_seed(3)
    prompt = PaddingPrompt(4, 8, channels=3, init="randn")
    model = source_model()
    rp = BlackBoxReprogrammer(query or model, prompt, LabelMapping(S, T, "identity"), estimator, **kwargs)
    return rp, prompt, model


def snapshot(rp):
    return ([p.detach().clone() for p in rp.source.params], rp.steps, rp.queries,
            {k: dict(v) for k, v in rp.optimizer.state.items()})


def assert_unchanged(rp, before):
    params, steps, _, state = before
    assert all(torch.equal(p, q) for p, q in zip(rp.source.params, params))
    assert rp.steps == steps and len(rp.optimizer.state) == len(state)


@pytest.mark.parametrize("kind", ["rge", "spsa"])
def test_step_is_the_estimate_of_the_banks_losses_and_one_optimiser_step(kind):
    est = ZOEstimator(kind, q=3, beta=0.05)
    rp, prompt, model = make(est)
    x, y = batch()
    theta0 = prompt.delta.detach().clone()
    seed = step_seed(0, 0)
    bank = perturbation_bank(x, theta0, prompt.mask, q=3, beta=0.05, seed=seed, directions=est.directions,
                             antithetic=est.antithetic, offset=prompt.offset, activation="sigmoid",
                             normalize="after", mean=prompt.mean, std=prompt.std)
    losses = torch.stack([F.cross_entropy(model(c)[:, :T], y) for c in bank])
    grad = zo_gradient(losses, theta0, seed=seed, beta=0.05, directions=est.directions, antithetic=est.antithetic)
    ref = nn.Parameter(theta0.clone())
    opt = BarAdam([ref]) if kind == "rge" else SpsaGC([ref])
    ref.grad = grad
    opt.step()
    out = rp.step(x, y)
    torch.testing.assert_close(prompt.delta.detach(), ref.detach(), rtol=1e-5, atol=1e-6)
    assert out["queries"] == est.num_queries * B == rp.queries and rp.black_box.calls == 1
    assert out["loss"] == pytest.approx(float(losses[0] if kind == "rge" else losses.mean()), rel=1e-5)


def test_prompt_bank_and_parameter_bank_make_the_same_estimate():
    rp, prompt, _ = make(ZOEstimator("rge", q=4, beta=0.1))
    x, y = batch()
    fused = rp.source
    assert isinstance(fused, PromptBank)
    generic = ParameterBank(prompt)
    kwargs = dict(q=4, beta=0.1, seed=7, directions="sphere", antithetic=False)
    torch.testing.assert_close(generic.canvases(x, range(5), **kwargs), fused.canvases(x, range(5), **kwargs),
                               rtol=1e-5, atol=1e-5)


def test_training_lowers_the_loss():
    rp, _, _ = make(ZOEstimator("rge", q=8, beta=0.05), optimizer=lambda p: BarAdam(p, lr=0.05))
    x, y = batch()
    first = rp.step(x, y)["loss"]
    for _ in range(40):
        rp.step(x, y)
    assert rp.history[-1] < first - 0.05
    assert rp.queries == 41 * 9 * B


def test_budget_refuses_a_step_it_cannot_pay_for_and_changes_nothing():
    rp, _, _ = make(ZOEstimator("rge", q=2, beta=0.1), budget=3 * B + 2)
    x, y = batch()
    rp.step(x, y)  # 3·B queries
    before = snapshot(rp)
    with pytest.raises(QueryBudgetExceeded, match=r"needs 12 queries but only 2 of the budget of 14"):
        rp.step(x, y)
    assert_unchanged(rp, before)
    assert rp.queries == 3 * B and rp.black_box.calls == 1


class Faulty:
    def __init__(self, fault):
        self.fault, self.model = fault, source_model()

    def __call__(self, batch):
        out = self.model(batch)
        if self.fault == "nan":
            out[1, 2] = float("nan")
        elif self.fault == "rows":
            out = out[1:]
        elif self.fault == "cols":
            out = out[:, :-1]
        elif self.fault == "raise":
            raise ConnectionError("API down")
        return out


@pytest.mark.parametrize("fault, error, match", [
    ("nan", ValueError, "non-finite scores"),
    ("rows", ValueError, r"expected \[12, 6\]"),
    ("cols", ValueError, r"shape \(12, 5\)"),
    ("raise", ConnectionError, "API down"),
])
def test_bad_answers_of_the_black_box_are_refused_and_nothing_is_updated(fault, error, match):
    rp, _, _ = make(ZOEstimator("rge", q=2, beta=0.1), query=Faulty(fault))
    before = snapshot(rp)
    with pytest.raises(error, match=match):
        rp.step(*batch())
    assert_unchanged(rp, before)


def test_non_finite_loss_is_refused():
    rp, _, _ = make(ZOEstimator("rge", q=2, beta=0.1), loss=lambda out, y: torch.tensor(float("inf")))
    before = snapshot(rp)
    with pytest.raises(ValueError, match="loss is not finite"):
        rp.step(*batch())
    assert_unchanged(rp, before)


def test_numpy_function_list_output_and_module_give_the_same_step():
    model = source_model()
    weight, bias = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    numpy_fn = lambda a: a.reshape(a.shape[0], -1) @ weight.T + bias  # noqa: E731
    results = []
    for query, as_numpy in ((model, False), (numpy_fn, True), (lambda t: model(t).tolist(), False)):
        rp, prompt, _ = make(ZOEstimator("rge", q=2, beta=0.1), query=query, as_numpy=as_numpy)
        rp.step(*batch())
        results.append(prompt.delta.detach().clone())
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=1e-4, atol=1e-5)


def test_inputs_per_call_splits_the_queries_into_calls():
    rp, _, _ = make(ZOEstimator("rge", q=2, beta=0.1), inputs_per_call=5)
    rp.step(*batch())
    assert rp.black_box.calls == 3 and rp.queries == 12  # 12 canvases in calls of 5, 5, 2


def test_evaluation_queries_are_counted_and_the_wrapper_refuses_gradients():
    black_box = RefusesGradients(source_model())
    rp, _, _ = make(query=black_box)
    x, _ = batch()
    out = rp(x)
    assert out.shape == (B, T) and rp.queries == B
    assert torch.allclose(black_box(torch.zeros(2, 3, 8, 8)).sum(1), torch.ones(2))
    with pytest.raises(RuntimeError, match="black box"):
        black_box(torch.zeros(2, 3, 8, 8, requires_grad=True))


def test_standalone_query_checks_its_arguments():
    with pytest.raises(TypeError, match="query must be callable"):
        BlackBoxQuery(3)
    with pytest.raises(ValueError, match="budget must be a positive int"):
        BlackBoxQuery(lambda t: t, budget=0)
    q = BlackBoxQuery(lambda t: t.flatten(1), budget=4)
    q(torch.zeros(3, 2))
    with pytest.raises(QueryBudgetExceeded):
        q(torch.zeros(2, 2))
    assert q.queries == 3 and q.remaining == 1


def test_beta_from_the_optimiser_is_spsa_gcs_c_k():
    rp, _, _ = make(ZOEstimator("spsa", q=2), optimizer=lambda p: SpsaGC(p, c=0.02, gamma=0.5))
    x, y = batch()
    assert rp.step(x, y)["beta"] == pytest.approx(0.02)
    assert rp.step(x, y)["beta"] == pytest.approx(0.02 / 2 ** 0.5)
    rp2, _, _ = make(ZOEstimator("rge", q=2), optimizer=lambda p: BarAdam(p))
    with pytest.raises(ValueError, match="perturbation_scale"):
        rp2.step(x, y)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="q must be a positive int"):
        ZOEstimator("rge", q=0)
    with pytest.raises(ValueError, match="beta .* must be a finite positive"):
        ZOEstimator("rge", beta=float("nan"))
    with pytest.raises(ValueError, match="beta .* must be a finite positive"):
        ZOEstimator("spsa", beta=-1.0)
    with pytest.raises(ValueError, match="takes directions"):
        ZOEstimator("spsa", directions="sphere")
    with pytest.raises(ValueError, match="optimizer must hold exactly"):
        make(optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1))
    rp, _, _ = make()
    with pytest.raises(ValueError, match="same B"):
        rp.step(torch.zeros(2, 3, 4, 4), torch.zeros(3, dtype=torch.long))


class TinyEncoder(nn.Module):
    """A small random frozen encoder: 32x32 images -> 16 features."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.Flatten(), nn.Linear(4 * 8 * 8, 16))

    def forward(self, x):
        return self.net(x)


def test_coordinator_trains_only_its_decoder_through_spsa_gc():
    torch.manual_seed(0)
    coord = Coordinator(TinyEncoder(), CoordinatorDecoder(16, 64, grid=1))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, S))
    rp = BlackBoxReprogrammer(model, coord, LabelMapping(S, T, "identity"), ZOEstimator("spsa", q=2))
    assert isinstance(rp.source, ParameterBank) and all("decoder" in n for n in rp.source.names)
    enc = [p.clone() for p in coord.encoder.parameters()]
    dec = [p.detach().clone() for p in coord.decoder.parameters()]
    x = torch.randn(B, 3, 32, 32)
    out = coord(x)
    assert out.shape == x.shape and bool((out <= coord.hi).all()) and bool((out >= coord.lo).all())
    rp.step(x, torch.randint(0, T, (B,)))
    assert all(torch.equal(a, b) for a, b in zip(enc, coord.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(dec, coord.decoder.parameters()))
    assert rp.queries == 4 * B


def test_coordinator_decoder_is_blackvips_architecture():
    dec = CoordinatorDecoder(768, 1568)  # ViT-MAE [CLS] features, 1568 = 32 x 7 x 7
    assert dec(torch.randn(2, 768)).shape == (2, 3, 224, 224)
    assert dec.p_trigger.shape == (1, 800) and float(dec.p_trigger.detach().min()) >= 0 and float(dec.p_trigger.detach().max()) < 0.1
    convs = [m for m in dec.body if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.groups, c.bias is not None) for c in convs] == [
        (32, 64, 32, True), (64, 64, 1, False), (64, 64, 64, True), (64, 32, 1, False), (32, 32, 32, True),
        (32, 32, 1, False), (32, 32, 32, True), (32, 16, 1, False), (16, 3, 1, False)]
    with pytest.raises(ValueError, match="multiple of grid"):
        CoordinatorDecoder(16, 50)
