"""The 2024-25 vision presets (lor_vp, evp, attrvr, dvp) against their original code.

Each ``original_*`` function below is a transcription, written for this test from reading the
method's public repository (named in each docstring), of the formula that code computes,
quirks included. Our preset runs on the same inputs and parameters: forward and gradients,
float32 on every backend, float64 on the reference backend, at realistic sizes (CIFAR 32² into
224²). Each preset also trains one step end to end on a small random source model.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backend_params import backend_device_params
from reprogram_ext import presets
from reprogram_ext.nn import LowRankPrompt

BACKENDS = backend_device_params()
IN_MEAN, IN_STD = presets.IMAGENET_MEAN, presets.IMAGENET_STD


def dtype_cases():
    """(backend, device, dtype): float32 on every backend here, float64 on the reference."""
    cases = []
    for param in BACKENDS:
        backend, device = param.values[0]
        cases.append(pytest.param(backend, device, torch.float32, id=f"{param.id}-float32", marks=param.marks))
        if backend == "reference":
            cases.append(pytest.param(backend, device, torch.float64, id=f"{param.id}-float64", marks=param.marks))
    return cases


CASES = dtype_cases()


def tolerances(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)


def mark_float64_normalisation(request, dtype, normalized):
    """masked_perturb rounds mean/std to float32 on every backend today (issue 12, "float64 that is
    float64"): a normalised float64 output is float32-accurate only. Strict xfail, so that this case
    fails, and this mark has to go, once float64 is normalised in float64."""
    if dtype == torch.float64 and normalized:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError,
                                              reason="masked_perturb's float64 normalisation uses float32 constants"))


def normalize(z, mean, std):
    """torchvision's ``Normalize``: ``(z - mean_c) / std_c``."""
    mean = torch.tensor(mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
    return (z - mean) / std


def assert_same_grads(ours, theirs, dtype):
    for name, (g_ours, g_theirs) in zip(("first", "second", "third"), zip(ours, theirs)):
        torch.testing.assert_close(g_ours, g_theirs, **tolerances(dtype), msg=lambda m: f"{name} gradient: {m}")


class FeatureNet(nn.Module):
    """A small random "source model": conv features, pooled, optionally a classifier on top."""

    def __init__(self, dim=16, classes=None):
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 8, stride=8)
        self.head = nn.Linear(dim, classes) if classes else nn.Identity()

    def forward(self, x):
        return self.head(F.relu(self.conv(x)).mean((2, 3)))


def train_one_step(recipe, model, x, y, loss_fn=F.cross_entropy, lr=0.1):
    """One SGD step through ``recipe.reprogrammer(model)``; returns the trainable parameters before."""
    net = recipe.reprogrammer(model).train()
    frozen = [p.detach().clone() for p in model.parameters()]
    params = list(net.trainable_parameters())
    before = [p.detach().clone() for p in params]
    loss = loss_fn(net(x, y), y)
    loss.backward()
    torch.optim.SGD(params, lr=lr).step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, params)), "no trainable parameter moved"
    assert all(torch.equal(f, p) for f, p in zip(frozen, model.parameters())), "the source model changed"
    return net


# --------------------------------------------------------------------------------------------- LoR-VP


def original_lor_vp(x_resized, left_bar, right_bar, mean, std):
    """jincan333/LoR-VP ``trainer/visual_prompt.py``: ``program = bmm(left_bar, right_bar)``,
    ``x = x + program``, then ``normalize(x)`` (torchvision ``Normalize``, or none); the input was
    resized to the canvas by the data pipeline beforehand."""
    z = x_resized + torch.bmm(left_bar, right_bar)
    return z if mean is None else normalize(z, mean, std)


@pytest.mark.parametrize("backend,device,dtype", CASES)
@pytest.mark.parametrize("mean,std", [(IN_MEAN, IN_STD), (None, None)], ids=["imagenet", "no-norm"])
def test_lor_vp_matches_original(request, backend, device, dtype, mean, std):
    mark_float64_normalisation(request, dtype, mean is not None)
    recipe = presets.lor_vp(10, feature_dim=16, input_size=32, output_size=224, mean=mean, std=std, backend=backend)
    prompt = recipe.input_transform.to(device, dtype)
    assert isinstance(prompt, LowRankPrompt) and prompt.rank == 4
    with torch.no_grad():  # trained-looking factors (the default init makes delta = 0)
        prompt.B.normal_(0, 0.1)
        prompt.A.normal_(0, 0.1)
    x = torch.rand(4, 3, 32, 32, device=device, dtype=dtype)
    out = prompt(x)
    x_resized = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    B, A = prompt.B.detach().clone().requires_grad_(), prompt.A.detach().clone().requires_grad_()
    expected = original_lor_vp(x_resized, B, A, mean, std)
    assert out.shape == (4, 3, 224, 224) and out.dtype == dtype
    torch.testing.assert_close(out, expected, **tolerances(dtype))
    grad_out = torch.randn_like(out)
    ours = torch.autograd.grad(out, (prompt.B, prompt.A), grad_out)
    theirs = torch.autograd.grad(expected, (B, A), grad_out)
    assert_same_grads(ours, theirs, dtype)


def test_lor_vp_init_and_head():
    torch.manual_seed(1)
    recipe = presets.lor_vp(7, feature_dim=32)
    prompt, head = recipe.input_transform, recipe.output_mapping
    assert prompt.B.shape == (3, 224, 4) and prompt.A.shape == (3, 4, 224)
    assert torch.count_nonzero(prompt.B) == 0  # "zero"
    assert 0.009 < prompt.A.std().item() < 0.011 and abs(prompt.A.mean().item()) < 1e-3  # "normal": N(0, 0.01²)
    x = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(prompt(x), normalize(x, IN_MEAN, IN_STD))  # delta = 0 at the start, no resize
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (32, 7)
    fm = presets.lor_vp(7, mapping="fm", num_source=50).output_mapping
    assert (fm.in_features, fm.out_features) == (50, 7)
    with pytest.raises(ValueError, match="feature_dim"):
        presets.lor_vp(7)
    with pytest.raises(ValueError, match="mapping"):
        presets.lor_vp(7, feature_dim=8, mapping="ilm")
    with pytest.raises(ValueError, match="rank"):
        presets.lor_vp(7, feature_dim=8, rank=0)


def test_lor_vp_linear_probe_on_a_timm_model():
    import timm  # a test requirement (.ci/requirements.txt); random weights, no download
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)  # features out: the probe's input
    recipe = presets.lor_vp(5, feature_dim=model.num_features, input_size=32, source=model)
    prompt = recipe.input_transform
    assert prompt.output_size == (224, 224) and prompt.mean == tuple(model.pretrained_cfg["mean"])
    out = recipe.reprogrammer(model)(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_lor_vp_trains_end_to_end(backend_device):
    backend, _ = backend_device
    recipe = presets.lor_vp(5, feature_dim=16, input_size=32, output_size=64, backend=backend)
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 5, (6,))
    A0 = recipe.input_transform.A.detach().clone()
    net = train_one_step(recipe, FeatureNet(16), x, y)
    assert net(x).shape == (6, 5)
    # B = 0 at the start: dL/dA = B^T G = 0, so only B (and the head) move in the first step
    assert torch.count_nonzero(recipe.input_transform.B) > 0 and torch.equal(recipe.input_transform.A, A0)


# ------------------------------------------------------------------------------------------------ EVP


def original_clip_head(features, text_features, logit_scale):
    """The CLIP output of EVP's ``Pertubation.forward``: ``exp(s) · f/|f| @ (t/|t|)^T``."""
    f = features / features.norm(dim=-1, keepdim=True)
    t = text_features / text_features.norm(dim=-1, keepdim=True)
    return math.exp(logit_scale) * f @ t.T


def original_evp_step(images, perturbation, encoder, text_features, labels, lr, mean, std, prompt_size=30):
    """UCSC-VLAA/EVP ``main.py`` ``train_with_prompt`` on one batch of already resized ``images``
    (its data pipeline: flip, bicubic resize to 164, ToTensor): zero-pad by ``int((224 - 164)/2)``,
    ``noise = perturbation.repeat(B)``, ``normalization(images + noise)``, CLIP head, cross-entropy;
    then ``g = noise.grad.mean(0)``, ``delta -= lr * mask * g / (|g| + 1e-10)``. Returns the
    canvas, the loss and the updated perturbation."""
    pad = int((224 - images.shape[-1]) / 2)
    images = F.pad(images, (pad, pad, pad, pad), "constant", value=0)
    noise = perturbation.repeat(images.size(0), 1, 1, 1)
    noise.retain_grad()
    canvas = images + noise if mean is None else normalize(images + noise, mean, std)
    loss = F.cross_entropy(original_clip_head(encoder(canvas), text_features, presets.CLIP_LOGIT_SCALE), labels)
    loss.backward()
    mask = torch.ones((3, 224, 224), dtype=images.dtype)
    mask[:, prompt_size: 224 - prompt_size, prompt_size: 224 - prompt_size] = 0
    grad_p_t = noise.grad.mean(0).squeeze(0)
    g_norm = torch.norm(grad_p_t.view(-1), dim=0).view(1, 1, 1)
    updated = perturbation.detach() - (grad_p_t / (g_norm + 1e-10)) * mask * lr
    return canvas, loss, updated


def resized_like_evp(x, size=164):
    """Our bicubic resize (the documented difference from PIL's): F.interpolate, clamped to [0, 1]."""
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("backend,device,dtype", CASES)
@pytest.mark.parametrize("normalized", [True, False], ids=["clip-norm", "no-norm"])
def test_evp_matches_original(request, backend, device, dtype, normalized):
    mark_float64_normalisation(request, dtype, normalized)
    norm = dict(mean=presets.CLIP_MEAN, std=presets.CLIP_STD) if normalized else dict(mean=None, std=None)
    text = torch.randn(10, 16, dtype=dtype, device=device)
    recipe = presets.evp(text, backend=backend, **norm)
    prompt, head = recipe.input_transform.to(device, dtype), recipe.output_mapping
    encoder = FeatureNet(16).to(device, dtype)
    with torch.no_grad():  # a program part-way through training: EVP's updates leave the inside at 0
        prompt.delta.copy_(torch.randn_like(prompt.delta) * prompt.mask)
    start = prompt.delta.detach().clone()
    x, y = torch.rand(4, 3, 32, 32, device=device, dtype=dtype), torch.randint(0, 10, (4,), device=device)

    perturbation = start.clone().requires_grad_()
    canvas, loss, updated = original_evp_step(resized_like_evp(x), perturbation, encoder, text, y, 70.0,
                                              norm["mean"], norm["std"])
    prompt.eval()  # no flip: the transcription gets the same images
    out = prompt(x)
    torch.testing.assert_close(out, canvas, **tolerances(dtype))
    ours = F.cross_entropy(head(encoder(out)), y)
    torch.testing.assert_close(ours, loss, **tolerances(dtype))
    ours.backward()
    # our delta.grad is the batch sum of the copies' gradients, EVP's noise.grad their stack
    noise_grad_sum = perturbation.grad
    torch.testing.assert_close(prompt.delta.grad, noise_grad_sum, **tolerances(dtype))
    presets.EVPOptimizer(prompt, lr=70.0).step(batch_size=4)
    torch.testing.assert_close(prompt.delta.detach(), updated, **tolerances(dtype))
    inside = prompt.mask[0] == 0
    assert torch.count_nonzero(prompt.delta.detach()[:, inside]) == 0  # only the border moved
    assert not torch.equal(prompt.delta.detach(), start)


def test_evp_layout_and_input_diversity():
    recipe = presets.evp(torch.randn(5, 8), generator=torch.Generator().manual_seed(3))
    prompt = recipe.input_transform
    assert prompt.offset == (30, 30) and prompt.image_size == (164, 164) and prompt.output_size == (224, 224)
    expected_mask = torch.ones(224, 224)
    expected_mask[30:194, 30:194] = 0
    torch.testing.assert_close(prompt.mask[0], expected_mask)
    assert torch.count_nonzero(prompt.delta) == 0 and recipe.output_mapping.logit_scale.item() == pytest.approx(
        math.log(100), abs=1e-6)
    assert not isinstance(recipe.output_mapping.logit_scale, nn.Parameter)  # EVP's CLIP is frozen
    x = torch.rand(64, 3, 32, 32)
    base = normalize(F.pad(resized_like_evp(x), (30, 30, 30, 30)), presets.CLIP_MEAN, presets.CLIP_STD)
    mirrored = normalize(F.pad(resized_like_evp(x.flip(-1)), (30, 30, 30, 30)), presets.CLIP_MEAN, presets.CLIP_STD)
    prompt.train()
    out = prompt(x)
    draws = torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5  # the layer's draw, same seed
    torch.testing.assert_close(out[draws], mirrored[draws])
    torch.testing.assert_close(out[~draws], base[~draws])
    assert 10 < int(draws.sum()) < 54  # about half the samples are flipped
    prompt.eval()
    torch.testing.assert_close(prompt(x), base)  # never in eval mode
    odd = presets.evp(torch.randn(5, 8), image_size=163).input_transform
    assert odd.offset == (30, 30) and odd(torch.rand(1, 3, 32, 32)).shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="batch_size"):
        presets.EVPOptimizer(prompt).step(batch_size=0)
    with pytest.raises(TypeError, match="EVPPrompt"):
        presets.EVPOptimizer(nn.Linear(2, 2))


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_evp_trains_end_to_end(backend_device):
    backend, _ = backend_device
    recipe = presets.evp(torch.randn(6, 16), backend=backend)
    net = recipe.reprogrammer(FeatureNet(16)).train()
    optimizer = presets.EVPOptimizer(recipe.input_transform)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 6, (8,))
    for _ in range(2):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step(batch_size=8)
    delta = recipe.input_transform.delta.detach()
    assert torch.isfinite(loss) and torch.count_nonzero(delta) > 0
    assert torch.count_nonzero(delta[:, 30:194, 30:194]) == 0
