"""Black-box presets (reprogram_ext/presets/blackbox.py): BAR's and BlackVIP's defaults as their code has them."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reprogram_ext import presets
from reprogram_ext.blackbox.bar import bar_focal_loss, bar_frequency_mapping
from reprogram_ext.blackbox.coordinator import Coordinator
from reprogram_ext.blackbox.optim import BarAdam, SpsaGC
from reprogram_ext.nn import PaddingPrompt, TextHeadMapping


def test_bar_black_box_takes_every_argument_of_the_white_box_bar():
    white = {n: p for n, p in inspect.signature(presets.bar).parameters.items()
             if n != "black_box" and p.kind != p.VAR_KEYWORD}  # bar's switch to bar_black_box
    black = inspect.signature(presets.bar_black_box).parameters
    assert set(white) <= set(black)
    for name in white:
        if name not in ("k", "mapping"):  # BAR's own mapping ("bar", k = 6) instead of the random stand-in
            assert black[name].default == white[name].default, name


def test_bar_black_box_true_is_bar_black_box():
    a = presets.bar(2, input_size=8, output_size=16, num_source=40, black_box=True, q=3, beta=0.2)
    b = presets.bar_black_box(2, input_size=8, output_size=16, num_source=40, q=3, beta=0.2)
    assert type(a) is type(b) and (a.estimator.q, a.estimator.beta) == (3, 0.2)
    assert repr(a.input_transform) == repr(b.input_transform) and a.output_mapping.k == b.output_mapping.k == 6
    with pytest.raises(TypeError, match="black_box=True only"):
        presets.bar(2, q=3)


def test_bar_black_box_defaults_are_the_originals():
    recipe = presets.bar_black_box(2, input_size=8, output_size=16, num_source=40)
    white = presets.bar(2, input_size=8, output_size=16, num_source=40)
    assert isinstance(recipe.input_transform, PaddingPrompt)
    assert repr(recipe.input_transform) == repr(white.input_transform)
    e = recipe.estimator
    assert (e.kind, e.q, e.beta, e.directions, e.scale, e.num_queries) == ("rge", 1, 0.1, "sphere", None, 2)
    opt = recipe.optimizer([nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, BarAdam) and opt.current_lr() == 0.01 and opt.defaults["lr_schedule"] == "constant"
    assert recipe.loss is bar_focal_loss
    m = recipe.output_mapping
    assert (m.k, m.pre, m.reduce, m.num_source, m.num_target) == (6, "softmax", "mean", 40, 2)
    rnd = presets.bar_black_box(2, input_size=8, output_size=16, num_source=40, mapping="random")
    assert rnd.output_mapping.method == "random" and rnd.output_mapping.k == 1


def test_bar_black_box_fits_its_mapping_from_queries_and_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 40))
    recipe = presets.bar_black_box(2, input_size=8, output_size=16, num_source=40)
    rp = recipe.reprogrammer(model)
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
    index = presets.fit_bar_mapping(rp, x, y)
    with torch.no_grad():
        expected = bar_frequency_mapping(model(recipe.input_transform(x)).softmax(1), y, 2, k=6)
    assert torch.equal(index, expected) and rp.queries == 20
    before = recipe.input_transform.delta.detach().clone()
    out = rp.step(x[:4], y[:4])
    assert out["queries"] == 8 and rp.queries == 28  # (q + 1) · B
    assert not torch.equal(before, recipe.input_transform.delta.detach())


def test_bar_black_box_refuses_unknown_choices():
    with pytest.raises(ValueError, match="mapping must be"):
        presets.bar_black_box(2, mapping="ilm")
    with pytest.raises(ValueError, match="loss must be"):
        presets.bar_black_box(2, loss="hinge")
    with pytest.raises(ValueError, match="lr must be"):
        presets.bar_black_box(2, lr=-1.0)
    with pytest.raises(ValueError, match="beta"):
        presets.bar_black_box(2, beta=0.0)


class TinyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 8, 8), nn.Flatten(), nn.Linear(4 * 4 * 4, 12))

    def forward(self, x):
        return self.net(x)


def test_blackvip_defaults_are_its_configs():
    torch.manual_seed(0)
    recipe = presets.blackvip(4, encoder=TinyEncoder(), src_dim=32, grid=1)
    assert isinstance(recipe.input_transform, Coordinator) and recipe.input_transform.decoder.z_dim == 12
    e = recipe.estimator
    assert (e.kind, e.q, e.beta, e.directions, e.num_queries) == ("spsa", 5, None, "segmented", 10)
    opt = recipe.optimizer([nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, SpsaGC)
    assert {k: opt.defaults[k] for k in ("o", "c", "a", "alpha", "gamma", "momentum", "gc")} == dict(
        o=1.0, c=0.01, a=0.01, alpha=0.4, gamma=0.1, momentum=0.9, gc=True)
    assert recipe.loss is F.cross_entropy


def test_blackvip_trains_the_decoder_from_queries_with_a_text_head():
    torch.manual_seed(0)
    text = torch.randn(4, 8)
    recipe = presets.blackvip(4, encoder=TinyEncoder(), src_dim=32, grid=1, text_features=text)
    assert isinstance(recipe.output_mapping, TextHeadMapping)
    image_features = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8))  # the black box: image -> features
    rp = recipe.reprogrammer(image_features)
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 3])
    dec = [p.detach().clone() for p in recipe.input_transform.decoder.parameters()]
    out = rp.step(x, y)
    assert out["queries"] == 30 and out["beta"] == pytest.approx(0.01)
    assert any(not torch.equal(a, b) for a, b in zip(dec, recipe.input_transform.decoder.parameters()))
    assert rp(x).shape == (3, 4)
