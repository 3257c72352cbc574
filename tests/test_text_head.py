"""``nn.TextHeadMapping``: out = exp(s) * normalize(f) @ normalize(text_features).T (docs/nn.md)."""
import math

import pytest
import torch
import torch.nn.functional as F

from reprogram_ext.nn import PaddingPrompt, Reprogrammer, TextHeadMapping


def by_hand(f, text, s):
    f = f / f.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return math.exp(s) * f @ text.t()


def test_formula_shapes_and_learned_scale_gradient():
    text = torch.randn(5, 16, dtype=torch.float64)
    head = TextHeadMapping(text)
    assert isinstance(head.logit_scale, torch.nn.Parameter) and head.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    f = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)  # any leading dims
    out = head(f)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out, by_hand(f, text, head.logit_scale.item()))
    torch.autograd.gradcheck(lambda f, s: torch.exp(s) * F.normalize(f, dim=-1) @ head.text_features.t(),
                             (f, head.logit_scale))
    out.sum().backward()
    # d out / d s = out: the learned scale's gradient is the sum of the outputs
    torch.testing.assert_close(head.logit_scale.grad, out.detach().sum())
    assert f.grad is not None and torch.isfinite(f.grad).all()


def test_fixed_scale_is_a_buffer_and_learn_scale_overrides():
    text = torch.randn(3, 8)
    fixed = TextHeadMapping(text, logit_scale=math.log(100.0))
    assert "logit_scale" in dict(fixed.named_buffers()) and list(fixed.parameters()) == []
    f = torch.randn(4, 8)
    torch.testing.assert_close(fixed(f), by_hand(f, text, math.log(100.0)))
    learned = TextHeadMapping(text, logit_scale=2.0, learn_scale=True)
    assert [n for n, _ in learned.named_parameters()] == ["logit_scale"] and learned.logit_scale.item() == 2.0
    assert list(TextHeadMapping(text, learn_scale=False).parameters()) == []
    assert "learn_scale=False" in repr(fixed) and "num_target=3, dim=8" in repr(fixed)


def test_state_dict_round_trip_and_moves():
    a = TextHeadMapping(torch.randn(4, 6))
    with torch.no_grad():
        a.logit_scale.fill_(3.25)
    b = TextHeadMapping(torch.randn(4, 6))
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"logit_scale", "text_features"}
    f = torch.randn(2, 6)
    torch.testing.assert_close(b(f), a(f))
    torch.testing.assert_close(b.text_features.norm(dim=-1), torch.ones(4))
    assert b.to(torch.float64)(f.double()).dtype == torch.float64


def test_errors():
    with pytest.raises(ValueError, match=r"text_features must be a floating tensor \[T, D\]"):
        TextHeadMapping(torch.randn(4))
    with pytest.raises(ValueError, match="text_features must be a floating tensor"):
        TextHeadMapping(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="T >= 1 and D >= 1"):
        TextHeadMapping(torch.randn(0, 3))
    with pytest.raises(ValueError, match="logit_scale must be None or a finite float"):
        TextHeadMapping(torch.randn(2, 3), logit_scale=float("inf"))
    with pytest.raises(TypeError, match="learn_scale must be None or a bool"):
        TextHeadMapping(torch.randn(2, 3), learn_scale=1)
    with pytest.raises(ValueError, match=r"features must have shape \[\*, D=3\], got \(2, 4\)"):
        TextHeadMapping(torch.randn(2, 3))(torch.randn(2, 4))


def test_clip_style_reprogramming_with_random_text_features():
    """Bahng's CLIP setting: a frozen image encoder, a trained prompt, class text features as the head."""
    import timm  # a test requirement (.ci/requirements.txt)

    torch.manual_seed(0)
    encoder = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0)  # features [B, 192]
    text = torch.randn(4, encoder.num_features)  # stands in for CLIP's text features of 4 class prompts
    head = TextHeadMapping(text, logit_scale=math.log(100.0))
    rp = Reprogrammer(encoder, PaddingPrompt(24, 32, mean=(0.5,) * 3, std=(0.5,) * 3), head)
    x, y = torch.rand(3, 3, 24, 24), torch.tensor([0, 3, 1])
    rp.train()
    loss = F.cross_entropy(rp(x, y), y)
    loss.backward()
    assert rp(x).shape == (3, 4) and rp.input_transform.delta.grad.abs().sum() > 0
    assert [p for p in rp.trainable_parameters()] == [rp.input_transform.delta]
