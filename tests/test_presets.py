"""Each paper preset against its formula (docs/presets.md) written out in plain torch."""
import pytest
import torch
import torch.nn.functional as F

from backend_params import backend_device_params
from reprogram_ext import presets
from reprogram_ext.nn import AdditivePrompt, LabelMapping, PaddingPrompt, SampleSpecificMaskPrompt, TimeSeriesPrompt

BACKENDS = backend_device_params()
IN_MEAN = torch.tensor(presets.IMAGENET_MEAN).view(1, 3, 1, 1)
IN_STD = torch.tensor(presets.IMAGENET_STD).view(1, 3, 1, 1)


def n_in(z):
    return (z - IN_MEAN) / IN_STD


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def border_mask(out, top, left, h, w):
    """1 on the prompt, 0 over the h x w input placed at (top, left)."""
    M = torch.ones(out, out)
    M[top:top + h, left:left + w] = 0
    return M


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_ilm_vp(backend_device):
    backend, _ = backend_device
    recipe = presets.ilm_vp(4, input_size=6, output_size=12, num_source=20, backend=backend)
    assert isinstance(recipe.input_transform, PaddingPrompt) and recipe.output_mapping.method == "iterative"
    theta = randomize(recipe.input_transform).delta
    x = torch.rand(3, 3, 6, 6)
    expected = n_in(F.pad(x, (3, 3, 3, 3)) + torch.sigmoid(theta) * border_mask(12, 3, 3, 6, 6))
    torch.testing.assert_close(recipe.input_transform(x), expected)
    logits, target = torch.randn(30, 20), torch.randint(0, 4, (30,))
    recipe.output_mapping.fit(logits, target)
    index = recipe.output_mapping.index[:, 0]
    predicted = logits.argmax(1)  # each target's source is one it was predicted as most often, all distinct
    assert len(set(index.tolist())) == 4
    top = max(((predicted == s) & (target == t)).sum().item() for s in range(20) for t in range(4))
    assert max(((predicted == index[t]) & (target == t)).sum().item() for t in range(4)) == top
    torch.testing.assert_close(recipe.output_mapping(logits), logits[:, index])


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_elsayed(backend_device):
    backend, _ = backend_device
    recipe = presets.elsayed(5, input_size=4, output_size=10, num_source=12, backend=backend)
    W = randomize(recipe.input_transform).delta
    x = torch.rand(2, 3, 4, 4)
    M = border_mask(10, 3, 3, 4, 4)
    torch.testing.assert_close(recipe.input_transform(x), n_in(F.pad(x, (3, 3, 3, 3)) + torch.tanh(W * M)))
    logits = torch.randn(2, 12)
    torch.testing.assert_close(recipe.output_mapping(logits), logits[:, :5])


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_bar(backend_device):
    backend, _ = backend_device
    recipe = presets.bar(3, input_size=5, output_size=9, num_source=15, k=4,
                         generator=torch.Generator().manual_seed(2), activation="sigmoid", prompt_over_input=False,
                         mean=presets.IMAGENET_MEAN, std=presets.IMAGENET_STD, backend=backend)
    W = randomize(recipe.input_transform).delta
    x = torch.rand(2, 3, 5, 5)
    M = border_mask(9, 2, 2, 5, 5)
    torch.testing.assert_close(recipe.input_transform(x), n_in(F.pad(x, (2, 2, 2, 2)) + torch.sigmoid(W) * M))
    index = recipe.output_mapping.index
    assert index.shape == (3, 4) and len(set(index.flatten().tolist())) == 12
    logits = torch.randn(6, 15)
    probs = torch.softmax(logits, -1)
    expected = torch.stack([sum(probs[:, s] for s in index[t].tolist()) / 4 for t in range(3)], 1)
    torch.testing.assert_close(recipe.output_mapping(logits), expected)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_bahng_pad_and_patch(backend_device):
    backend, _ = backend_device
    pad = presets.bahng(10, image_size=16, kind="pad", prompt_size=3, num_source=100, backend=backend)
    assert isinstance(pad.input_transform, AdditivePrompt)
    delta = randomize(pad.input_transform).delta
    x = torch.randn(2, 3, 16, 16)  # already normalised
    prompt = torch.zeros(3, 16, 16)
    prompt[:, :3], prompt[:, -3:], prompt[:, :, :3], prompt[:, :, -3:] = (
        delta[:, :3], delta[:, -3:], delta[:, :, :3], delta[:, :, -3:])
    torch.testing.assert_close(pad.input_transform(x), x + prompt)
    patch = presets.bahng(10, image_size=16, kind="patch", prompt_size=5, num_source=100, backend=backend)
    p = randomize(patch.input_transform).delta
    torch.testing.assert_close(patch.input_transform(x), x + F.pad(p, (0, 11, 0, 11)))
    logits = torch.randn(2, 100)
    torch.testing.assert_close(pad.output_mapping(logits), logits[:, :10])


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_autovp(backend_device):
    backend, _ = backend_device
    recipe = presets.autovp(3, input_size=6, output_size=16, scale=1.5, num_source=11, original_mask=False,
                            backend=backend)
    delta = randomize(recipe.input_transform).delta
    x = torch.rand(2, 3, 6, 6)
    resized = F.interpolate(x, size=(9, 9), mode="bilinear", align_corners=False)  # s * h = 9
    M = border_mask(16, 4, 4, 9, 9)  # (16 - 9 + 1) // 2 = 4
    expected = n_in(F.pad(resized, (4, 3, 4, 3)) + torch.sigmoid(delta) * M)
    torch.testing.assert_close(recipe.input_transform(x), expected)
    lm = randomize(recipe.output_mapping)
    logits = torch.randn(4, 11)
    torch.testing.assert_close(lm(logits), logits @ lm.weight + lm.bias)
    avg = presets.autovp(3, input_size=6, output_size=16, num_source=11, mapping="frequency", k=2, backend=backend)
    idx = avg.output_mapping.index
    torch.testing.assert_close(avg.output_mapping(logits), (logits[:, idx[:, 0]] + logits[:, idx[:, 1]]) / 2)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_smm(backend_device):
    backend, _ = backend_device
    recipe = presets.smm(5, input_size=7, output_size=16, mask_scale=4, num_source=20, backend=backend)
    layer = randomize(recipe.input_transform).eval()
    assert isinstance(layer, SampleSpecificMaskPrompt)
    x = torch.rand(2, 3, 7, 7)
    r = n_in(F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
    up = F.interpolate(layer.mask_net(r), scale_factor=4, mode="nearest")  # patch-wise: p reads p // 4
    torch.testing.assert_close(layer(x), r + layer.delta * up)
    assert recipe.output_mapping.method == "iterative"


@pytest.mark.parametrize("plus", [False, True])
def test_blm(plus):
    recipe = presets.blm(3, input_size=5, output_size=9, num_source=6, plus=plus, topk=2, laplace=0.5)
    theta = randomize(recipe.input_transform).delta
    x = torch.rand(2, 3, 5, 5)
    M = border_mask(9, 2, 2, 5, 5)
    torch.testing.assert_close(recipe.input_transform(x), n_in(F.pad(x, (2, 2, 2, 2)) + torch.sigmoid(theta) * M))
    logits, target = torch.randn(40, 6), torch.randint(0, 3, (40,))
    D = torch.zeros(6, 3)
    for row, t in zip(logits, target):
        if plus:  # BLM+: the top-2 probabilities
            p = torch.softmax(row, 0)
            for s in p.argsort(descending=True)[:2]:
                D[s, t] += p[s]
        else:
            D[row.argmax(), t] += 1
    P = D / (D.sum(1, keepdim=True) + 0.5)
    omega = P / P.sum(0, keepdim=True)
    lm = recipe.output_mapping
    for _ in range(2):  # two epochs: the same counts give the same omega
        for chunk in range(4):
            lm.update(logits[chunk * 10:(chunk + 1) * 10], target[chunk * 10:(chunk + 1) * 10])
        assert lm.end_epoch()
        torch.testing.assert_close(lm.weight, omega)
    torch.testing.assert_close(lm(logits), logits @ omega)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_voice2series(backend_device):
    backend, _ = backend_device
    recipe = presets.voice2series(4, input_length=3000, num_source=35, copies=2, k=3, mapping="identity",
                                  apply_mask=True, dropout=0.0, backend=backend)
    assert isinstance(recipe.input_transform, TimeSeriesPrompt) and recipe.input_transform.output_length == 16000
    theta = randomize(recipe.input_transform).delta
    x = torch.randn(2, 1, 3000)
    start = (16000 - 6000 + 1) // 2
    tiled, M = torch.zeros(2, 1, 16000), torch.ones(16000)
    for o in (start, start + 3000):
        tiled[..., o:o + 3000] = x
        M[o:o + 3000] = 0
    torch.testing.assert_close(recipe.input_transform(x), tiled + M * theta)
    logits = torch.randn(5, 35)
    probs = torch.softmax(logits, -1)
    expected = torch.stack([probs[:, 3 * t:3 * t + 3].mean(1) for t in range(4)], 1)
    torch.testing.assert_close(recipe.output_mapping(logits), expected)


def test_recipe_builds_a_reprogrammer():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 10 * 10, 12))
    rp = presets.elsayed(5, input_size=4, output_size=10, num_source=12).reprogrammer(model)
    assert rp.model is model and not any(p.requires_grad for p in model.parameters())
    assert isinstance(rp.output_mapping, LabelMapping) and rp(torch.rand(2, 3, 4, 4)).shape == (2, 5)
