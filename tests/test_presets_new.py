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


def normalize(z, mean, std):
    """torchvision's ``Normalize``: ``(z - mean_c) / std_c``."""
    mean = torch.tensor(mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
    return (z - mean) / std


def assert_same_grads(ours, theirs, dtype):
    for i, (g_ours, g_theirs) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(g_ours, g_theirs, **tolerances(dtype), msg=lambda m, i=i: f"gradient {i}: {m}")


class FeatureNet(nn.Module):
    """A small random "source model" that returns features (an image encoder): conv, ReLU, mean pool."""

    def __init__(self, dim=16):
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 8, stride=8)

    def forward(self, x):
        return F.relu(self.conv(x)).mean((2, 3))


def train_one_step(recipe, model, x, y, loss_fn=F.cross_entropy, lr=0.1):
    """One SGD step through ``recipe.reprogrammer(model)``: some trainable parameter moves, the model
    does not; returns the reprogrammer."""
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
def test_lor_vp_matches_original(backend, device, dtype, mean, std):
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
def test_evp_matches_original(backend, device, dtype, normalized):
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


# --------------------------------------------------------------------------- AttrVR and DVP (CLIP, PaddingVR)


def original_padding_vr(x, program, out_size=224, norm=True):
    """``methods/vp.py`` ``PaddingVR`` of tmlr-group/AttrVR and tmlr-group/DecoupledVP (the same
    class): ``l_pad = int((out - in + 1)/2)``, ``r_pad = int((out - in)/2)``, mask 1 on the border,
    ``pad(x) + sigmoid(program) * mask``, then CLIP's ``Normalize`` when ``norm``."""
    size = x.shape[-1]
    l_pad, r_pad = int((out_size - size + 1) / 2), int((out_size - size) / 2)
    mask = F.pad(torch.zeros(3, size, size, dtype=x.dtype, device=x.device), (l_pad, r_pad, l_pad, r_pad), value=1)
    z = F.pad(x, (l_pad, r_pad, l_pad, r_pad), value=0) + torch.sigmoid(program) * mask
    return normalize(z, presets.CLIP_MEAN, presets.CLIP_STD) if norm else z


def original_get_logits(num_attr, exp, x_emb, t_emb, k):
    """AttrVR ``tools.py`` ``getLogits``: ``t_emb [m, T, D]`` -> ``[D, T·m]`` (class-major), scores
    ``exp·x_emb @ t``, per class sorted descending, the mean of the first k."""
    fea_dim = t_emb.shape[-1]
    t = t_emb.permute(2, 1, 0).reshape(fea_dim, -1)
    res = (exp * x_emb @ t).reshape(x_emb.shape[0], -1, num_attr)
    res, _ = torch.sort(res, dim=-1, descending=True)
    return torch.mean(res[:, :, :k], dim=2)


def unit(t):
    return t / t.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("backend,device,dtype", CASES)
@pytest.mark.parametrize("normalized", [True, False], ids=["clip-norm", "no-norm"])
def test_attrvr_matches_original(backend, device, dtype, normalized):
    T, m, D, k, alpha = 10, 20, 16, 3, 0.5
    des, dist = torch.randn(T, m, D, dtype=dtype, device=device), torch.randn(T, m, D, dtype=dtype, device=device)
    norm = dict(mean=presets.CLIP_MEAN, std=presets.CLIP_STD) if normalized else dict(mean=None, std=None)
    recipe = presets.attrvr(des, dist, backend=backend, **norm)
    prompt, mapping = recipe.input_transform.to(device, dtype), recipe.output_mapping
    with torch.no_grad():
        prompt.delta.normal_()
    encoder = FeatureNet(D).to(device, dtype)
    x = torch.rand(4, 3, 192, 192, device=device, dtype=dtype)
    program = prompt.delta.detach().clone().requires_grad_()
    canvas = original_padding_vr(x, program, norm=normalized)
    x_emb = unit(encoder(canvas))
    exp = math.exp(presets.CLIP_LOGIT_SCALE)
    expected = (original_get_logits(m, exp, x_emb, unit(des).transpose(0, 1), k) * alpha
                + original_get_logits(m, exp, x_emb, unit(dist).transpose(0, 1), k) * (1 - alpha))
    out = mapping(encoder(prompt(x)))
    assert out.shape == (4, T) and out.dtype == dtype
    torch.testing.assert_close(out, expected, **tolerances(dtype))
    grad_out = torch.randn_like(out)
    (ours,) = torch.autograd.grad(out, prompt.delta, grad_out)
    (theirs,) = torch.autograd.grad(expected, program, grad_out)
    torch.testing.assert_close(ours, theirs, **tolerances(dtype))


def test_attrvr_layout_and_errors():
    recipe = presets.attrvr(torch.randn(5, 20, 8), torch.randn(5, 20, 8))
    prompt, mapping = recipe.input_transform, recipe.output_mapping
    assert prompt.offset == (16, 16) and prompt.activation == "sigmoid" and torch.count_nonzero(prompt.delta) == 0
    assert (mapping.topk, mapping.lam, mapping.num_attributes) == (3, 0.5, 20)
    features = torch.randn(6, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(mapping(features).sum(), features)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        presets.attrvr(torch.randn(5, 20, 8), torch.randn(5, 19, 8))
    with pytest.raises(ValueError, match="topk"):
        presets.attrvr(torch.randn(5, 20, 8), torch.randn(5, 20, 8), topk=21)
    with pytest.raises(ValueError, match="lam"):
        presets.attrvr(torch.randn(5, 20, 8), torch.randn(5, 20, 8), lam=1.5)
    with pytest.raises(ValueError, match="features"):
        mapping(torch.randn(6, 9))


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_attrvr_trains_end_to_end(backend_device):
    backend, _ = backend_device
    recipe = presets.attrvr(torch.randn(4, 20, 16), torch.randn(4, 20, 16), input_size=32, output_size=64,
                            backend=backend)
    train_one_step(recipe, FeatureNet(16), torch.rand(6, 3, 32, 32), torch.randint(0, 4, (6,)), lr=40.0)


def original_dvp_network(x, programs, encoder, causes_emb_list, T, m, norm=True):
    """DecoupledVP ``experiments/fs_dvp_cse.py`` ``network``: for each group i, the CLIP features of
    ``vplist[i](x)``, normalised, ``exp·x_emb @ causes_emb_list[i].T`` reshaped ``[B, T, m]``;
    concatenated over the groups on the last dim and flattened to ``[B, T·V·m]`` (its ``.float()``
    is for autocast, a no-op here)."""
    exp = math.exp(presets.CLIP_LOGIT_SCALE)
    single = []
    for i, emb in enumerate(causes_emb_list):
        x_emb = unit(encoder(original_padding_vr(x, programs[i], norm=norm)))
        single.append((exp * x_emb @ emb.T).reshape(-1, T, m))
    return torch.cat(single, dim=2).reshape(-1, T * m * len(causes_emb_list))


def original_initialize_prm(c, m):
    """DecoupledVP ``tools.py`` ``initialize_prm``: ``prob[i, i·m : i·m + m] = 1/m``, returned ``[c·m, c]``."""
    prob = torch.zeros(c, m * c, dtype=torch.float64)
    for i in range(c):
        prob[i, i * m:i * m + m] = 1 / m
    return prob.T.float()


def original_calculate_prm(all_v, all_y, m):
    """DecoupledVP ``tools.py`` ``calculate_prm``: ``prm[y, y·m + v] += 1`` for each sample's top-k
    descriptions v, rows divided by their sums, returned ``[c·m, c]`` with ``c = max(y) + 1``."""
    c = int(all_y.max()) + 1
    prm = torch.zeros(c, m * c, dtype=torch.float64)
    for i in range(all_v.shape[0]):
        for j in range(all_v.shape[1]):
            prm[all_y[i], all_y[i] * m + all_v[i, j]] += 1
    return (prm / prm.sum(1, keepdim=True)).T.float()


@pytest.mark.parametrize("backend,device,dtype", CASES)
@pytest.mark.parametrize("normalized", [True, False], ids=["clip-norm", "no-norm"])
def test_dvp_matches_original(backend, device, dtype, normalized):
    V, T, m, D, k = 3, 10, 20, 16, 3
    descriptions = torch.randn(V, T, m, D, dtype=dtype, device=device)
    norm = dict(mean=presets.CLIP_MEAN, std=presets.CLIP_STD) if normalized else dict(mean=None, std=None)
    recipe = presets.dvp(descriptions, backend=backend, **norm)
    bank, mapping = recipe.input_transform.to(device, dtype), recipe.output_mapping
    with torch.no_grad():
        bank.delta.normal_()
    encoder = FeatureNet(D).to(device, dtype)
    causes = [unit(descriptions[v]).reshape(T * m, D) for v in range(V)]  # clip_txt: [T·m, D], class-major
    net = recipe.reprogrammer(encoder).train()
    programs = [bank.delta[v].detach().clone().requires_grad_() for v in range(V)]

    # the original's first epoch: no training, only the reweighting matrix from the top-k descriptions
    x = torch.rand(12, 3, 192, 192, device=device, dtype=dtype)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 3], device=device)
    prob = original_initialize_prm(T, V * m)
    with torch.no_grad():
        torch.testing.assert_close(net(x[:6]), original_dvp_network(x[:6], programs, encoder, causes, T, m, normalized)
                                   @ prob.to(dtype), **tolerances(dtype))
        net(x[6:], y[6:])
        net(x[:6], y[:6])
    fx = original_dvp_network(torch.cat([x[6:], x[:6]]), programs, encoder, causes, T, m, normalized)
    y_order = torch.cat([y[6:], y[:6]])
    indices = torch.topk(fx.reshape(-1, T, V * m)[torch.arange(12), y_order], k, dim=1).indices
    prob = original_calculate_prm(indices.cpu(), y_order.cpu(), V * m)
    assert net.end_epoch()
    dense = torch.zeros(T * V * m, T, dtype=mapping.weight.dtype)
    for t in range(T):
        dense[t * V * m:(t + 1) * V * m, t] = mapping.weight[t].cpu()
    torch.testing.assert_close(dense, prob.to(dense.dtype), rtol=1e-6, atol=1e-7)
    assert torch.count_nonzero(mapping.counts) == 0

    # a training step: forward and the prompts' gradients
    out = net(x[:4])
    expected = original_dvp_network(x[:4], programs, encoder, causes, T, m, normalized) @ prob.to(device, dtype)
    torch.testing.assert_close(out, expected, **tolerances(dtype))
    grad_out = torch.randn_like(out)
    (ours,) = torch.autograd.grad(out, bank.delta, grad_out)
    theirs = torch.stack(torch.autograd.grad(expected, programs, grad_out))
    torch.testing.assert_close(ours, theirs, **tolerances(dtype))


def test_dvp_layout_and_classes_without_samples():
    recipe = presets.dvp(torch.randn(3, 4, 5, 8))
    bank, mapping = recipe.input_transform, recipe.output_mapping
    assert bank.delta.shape == (3, 3, 224, 224) and bank.offset == (16, 16) and torch.count_nonzero(bank.delta) == 0
    torch.testing.assert_close(mapping.weight, torch.full((4, 15), 1 / 15))  # initialize_prm
    out = bank(torch.rand(2, 3, 192, 192))
    assert out.shape == (6, 3, 224, 224)
    mapping.update(torch.randn(6, 8), torch.tensor([1, 1]))  # only class 1 has samples
    assert mapping.counts.sum().item() == 6 and mapping.counts[1].sum().item() == 6
    mapping.end_epoch()
    assert mapping.weight[1].sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(mapping.weight[[0, 2, 3]], torch.full((3, 15), 1 / 15))  # original: 0/0
    with pytest.raises(ValueError, match="V·B"):
        mapping(torch.randn(5, 8))
    with pytest.raises(ValueError, match="descriptions"):
        presets.dvp(torch.randn(4, 5, 8))


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_dvp_trains_end_to_end(backend_device):
    backend, _ = backend_device
    recipe = presets.dvp(torch.randn(2, 4, 5, 16), input_size=32, output_size=64, backend=backend)
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 4, (6,))
    net = train_one_step(recipe, FeatureNet(16), x, y, lr=40.0)
    assert net.end_epoch() and not torch.equal(recipe.output_mapping.weight, torch.full((4, 10), 0.1))
