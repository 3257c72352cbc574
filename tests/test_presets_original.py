"""Each preset against a transcription of its ORIGINAL public code (formula and quirks), written in plain torch.

The transcriptions below follow the original repositories' code as read (ILM-VP's
``ExpansiveVisualPrompt``, AutoVP's ``InputPadding`` / ``Trainable_Resize``, BAR's ``adv_program`` /
``gen_mask`` / ``freq_idx_search`` / ``multi_focal_loss``, SMM's ``InstancewiseVisualPrompt``, BLM's
``blmpp_reweight_matrix``, Voice2Series' ``SegZeroPadding1D`` / ``ARTLayer`` / ``multi_mapping``,
Bahng's prompters; Elsayed: the paper). Forward and gradients, float64 (reference backend, to
round-off) and float32 (every backend, a few ulps), at realistic shapes.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from backend_params import backend_device_params
from reprogram_ext import mapped_cross_entropy, presets

IN_MEAN, IN_STD = presets.IMAGENET_MEAN, presets.IMAGENET_STD

# float64 on the reference backend (exact to round-off); float32 on every backend (a few ulps).
CASES = [pytest.param(("reference", torch.float64), id="reference-f64")] + [
    pytest.param((p.values[0][0], torch.float32), id=f"{p.values[0][0]}-f32", marks=p.marks)
    for p in backend_device_params()]


# float64 is computed in float64 on every backend (SPEC §1): float64 is checked to float64 round-off.
F64_TOL = dict(rtol=1e-12, atol=1e-12)


def tol(dtype):
    """float32: a few ulps; atol 1e-5 (~40 ulps of the normalised values, |v| < 3) because the Triton
    kernels' bilinear resize computes the source coordinate in float32 in another order than
    ``F.interpolate`` (up to 4e-6 apart at 32 -> 44 / 224); the other backends agree to 2e-6."""
    return F64_TOL if dtype == torch.float64 else dict(rtol=2e-6, atol=1e-5)


def assert_grad_close(a, b, dtype):
    """Gradients are sums over the batch and the canvas: float32 sums in a different order differ by
    a few ulps of the largest partial sums, so the absolute tolerance scales with ``max |b|``."""
    scale = float(b.abs().max()) if b.numel() else 1.0
    rtol = F64_TOL["rtol"] if dtype == torch.float64 else 1e-5
    atol = (F64_TOL["atol"] if dtype == torch.float64 else 2e-4) * max(scale, 1.0)
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def normalize(z, mean=IN_MEAN, std=IN_STD):
    m = torch.tensor(mean, dtype=z.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=z.dtype).view(1, -1, 1, 1)
    return (z - m) / s


def randomize(module, dtype, scale=1.0):
    module.to(dtype)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name != "scale":
                p.normal_(0, scale)
    return module


def check(ours, theirs, params_ours, params_theirs, dtype, normalized=True):
    """Forward equal, and the gradients of ``<out, g>`` w.r.t. each pair of parameters.

    ``normalized=False`` (no mean/std involved): float64 is held to round-off already (1e-12)."""
    exact = dtype == torch.float64 and not normalized
    torch.testing.assert_close(ours, theirs, **(dict(rtol=1e-12, atol=1e-12) if exact else tol(dtype)))
    g = torch.randn_like(theirs)
    got = torch.autograd.grad((ours * g).sum(), params_ours)
    want = torch.autograd.grad((theirs * g).sum(), params_theirs)
    for a, b in zip(got, want):
        if exact:
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11 * max(float(b.abs().max()), 1.0))
        else:
            assert_grad_close(a, b, dtype)


# ---------------------------------------------------------------- ILM-VP / Elsayed / BLM (padding prompts)

def ilm_vp_original(x, program, out_size, activation):
    """OPTML-Group/ILM-VP ExpansiveVisualPrompt: l_pad = int((out - in + 1)/2), r_pad = int((out - in)/2)."""
    h = x.shape[-1]
    l, r = int((out_size - h + 1) / 2), int((out_size - h) / 2)
    mask = F.pad(torch.zeros(3, h, h, dtype=x.dtype), (l, r, l, r), value=1)
    padded = F.pad(x, (l, r, l, r), value=0)
    prompt = torch.sigmoid(program) * mask if activation == "sigmoid" else torch.tanh(program * mask)
    return normalize(padded + prompt)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["ilm_vp", "elsayed", "blm"])
@pytest.mark.parametrize("h", [32, 31])  # CIFAR into 224; 31: an odd border
def test_padding_presets(case, method, h):
    backend, dtype = case
    recipe = getattr(presets, method)(10, input_size=h, output_size=224, backend=backend)
    layer = randomize(recipe.input_transform, dtype)
    x = torch.rand(2, 3, h, h, dtype=dtype)
    program = layer.delta.detach().clone().requires_grad_(True)
    expected = ilm_vp_original(x, program, 224, "tanh" if method == "elsayed" else "sigmoid")
    check(layer(x), expected, [layer.delta], [program], dtype)


# ---------------------------------------------------------------- AutoVP

def autovp_mask(out_size, r):
    """InputPadding.redefind_mask: ones, 0 over [(out - r)//2, (out + r)//2) in both dims."""
    m = torch.ones(3, out_size, out_size)
    m[:, (out_size - r) // 2:(out_size + r) // 2, (out_size - r) // 2:(out_size + r) // 2] = 0
    return m


def autovp_fixed_original(x, delta, scale, out_size=224):
    """Data pipeline Resize to int(h * scale) (capped at 224), then InputPadding: pad int((out - r + 1)/2)."""
    r = min(int(x.shape[-1] * scale), out_size)
    z = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
    u, d = int((out_size - r + 1) / 2), int((out_size - r) / 2)
    padded = F.pad(z, (u, d, u, d), value=0)
    return normalize(padded + torch.sigmoid(delta) * autovp_mask(out_size, r).to(x.dtype))


def autovp_trainable_original(x, delta, scale, out_size=224):
    """Trainable_Resize: pad, kornia scale (affine_grid diag(1/s), grid_sample, align_corners=True), then
    InputPadding with the window min(int(h * scale), out)."""
    h = x.shape[-1]
    l, r = int((out_size - h + 1) / 2), int((out_size - h) / 2)
    padded = F.pad(x, (l, r, l, r), value=0)
    padded = padded.repeat(1, 3 - padded.shape[1] + 1, 1, 1)  # InputPadding's channel repeat (after the warp: same)
    theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    grid = F.affine_grid(theta, list(padded.shape), align_corners=True)
    warped = F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    window = min(int(h * scale.detach()), out_size)
    return normalize(warped + torch.sigmoid(delta) * autovp_mask(out_size, window).to(x.dtype))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scale", [1.4, 45 / 32, 1.5, 7.5])  # 45/32: r = 45, an odd border; 7.5: capped at 224
def test_autovp_fixed_scale(case, scale):
    backend, dtype = case
    recipe = presets.autovp(10, input_size=32, output_size=224, scale=scale, backend=backend)
    layer = randomize(recipe.input_transform, dtype)
    assert layer.resize == (min(int(32 * scale), 224),) * 2  # int(), not round(): 1.4 -> 44
    x = torch.rand(2, 3, 32, 32, dtype=dtype)
    delta = layer.delta.detach().clone().requires_grad_(True)
    check(layer(x), autovp_fixed_original(x, delta, scale), [layer.delta], [delta], dtype)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scale, h, cx", [(1.4, 32, 3), (45 / 32, 32, 3), (0.8, 33, 3), (3.0, 128, 3), (1.4, 28, 1)])
def test_autovp_trainable_scale(case, scale, h, cx):
    backend, dtype = case
    recipe = presets.autovp(10, input_size=h, output_size=224, scale=scale, trainable_scale=True, backend=backend)
    layer = randomize(recipe.input_transform, dtype)
    assert isinstance(layer.scale, torch.nn.Parameter) and layer.scale.dim() == 0
    assert "scale" in dict(layer.named_parameters())
    x = torch.rand(2, cx, h, h, dtype=dtype)  # cx = 1: grey, repeated to 3 channels after the warp
    delta = layer.delta.detach().clone().requires_grad_(True)
    s = layer.scale.detach().clone().requires_grad_(True)
    out = layer(x)
    check(out, autovp_trainable_original(x, delta, s), [layer.delta, layer.scale], [delta, s], dtype)
    grad = torch.autograd.grad(layer(x).square().sum(), layer.scale)[0]
    assert torch.isfinite(grad) and grad != 0  # the learned scale receives a gradient


def test_autovp_trainable_scale_trains():
    recipe = presets.autovp(3, input_size=16, output_size=48, scale=1.5, trainable_scale=True, num_source=5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 48 * 48, 5))
    rp = recipe.reprogrammer(model)
    opt = torch.optim.SGD(rp.parameters(), lr=1e-2)
    before = recipe.input_transform.scale.item()
    F.cross_entropy(rp(torch.rand(4, 3, 16, 16)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    assert recipe.input_transform.scale.item() != before


# ---------------------------------------------------------------- BAR

def bar_original_input(x, W):
    """adv_program: grey 200² input tiled to 3 channels, padded ceil(299/2)-100 / floor(299/2)-100; gen_mask()
    is all ones (its clearing loop never runs); P = tanh(W * M); the normalised channels are discarded."""
    top, bottom = int(math.ceil(299 / 2) - 100), int(math.floor(299 / 2) - 100)
    X = F.pad(x.repeat(1, 3, 1, 1), (top, bottom, top, bottom))
    M = torch.ones(3, 299, 299, dtype=x.dtype)
    return torch.tanh(W * M) + X


def freq_idx_search_two_classes(probs, target, mlm_num=6):
    """mapping_func.freq_idx_search for the original's two classes (NonAsd = 0, Asd = 1)."""
    tables = [torch.zeros(probs.shape[1], 2, dtype=torch.float64) for _ in range(2)]
    vals, idx = probs.topk(30, dim=1)
    for n in range(probs.shape[0]):
        for i in range(30):
            tables[int(target[n])][idx[n, i], 0] += vals[n, i].double()
            tables[int(target[n])][idx[n, i], 1] += 1
    for t in tables:
        seen = t[:, 1] != 0
        t[seen, 0] = t[seen, 0] / t[seen, 1]
    order = [t[:, 0].sort(descending=True, stable=True).indices[:30].tolist() for t in tables]
    chosen = [[], []]
    for c, o in ((0, 1), (1, 0)):
        for i in range(30):
            s = order[c][i]
            if order[o][i] == s:
                if tables[c][s, 0] > tables[o][s, 0]:
                    chosen[c].append(s)
            elif s in order[o]:
                if i < order[o].index(s):
                    chosen[c].append(s)
            else:
                chosen[c].append(s)
    return chosen[0][:mlm_num] + chosen[1][:mlm_num]


def freq_mapping_original(probs, mlm_index, mlm_num=6, classes=2):
    """mapping_func.freq_mapping: gather, reshape [B, mlm_num, 2], mean over axis 1."""
    return probs[:, mlm_index].reshape(probs.shape[0], mlm_num, classes).mean(1)


def multi_focal_loss_original(gamma, alpha, y_true, y_pred):
    y_pred = y_pred.clamp(1e-7, 1 - 1e-7)
    alpha_t = y_true * alpha + (1 - y_true) * (1 - alpha)
    y_t = y_true * y_pred + (1 - y_true) * (1 - y_pred)
    return ((1 - y_t).pow(gamma) * -torch.log(y_t) * alpha_t).mean(1)


@pytest.mark.parametrize("case", CASES)
def test_bar_input(case):
    backend, dtype = case
    recipe = presets.bar(2, backend=backend)
    layer = recipe.input_transform.to(dtype)
    bound = math.sqrt(6 / (299 * 299 + 3 * 299))  # TF glorot_uniform on [1, 299, 299, 3]
    assert layer.delta.abs().max() <= bound and layer.delta.abs().max() > bound / 2
    randomize(layer, dtype)
    x = torch.rand(2, 1, 200, 200, dtype=dtype) * 2 - 1
    W = layer.delta.detach().clone().requires_grad_(True)
    check(layer(x), bar_original_input(x, W), [layer.delta], [W], dtype, normalized=False)


def test_bar_mapping_and_loss():
    torch.manual_seed(0)
    logits = torch.randn(64, 1000, dtype=torch.float64) * 3
    target = torch.randint(0, 2, (64,))
    probs = logits.softmax(-1)
    mlm_index = freq_idx_search_two_classes(probs, target)
    recipe = presets.bar(2, num_source=1000)
    index = presets.bar_frequency_index(probs, target, 2)
    assert index.shape == (2, 6)
    recipe.output_mapping.index.copy_(index)
    out = recipe.output_mapping(logits)
    expected = freq_mapping_original(probs, mlm_index)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    y = F.one_hot(target, 2).double()
    torch.testing.assert_close(recipe.loss(out, target), multi_focal_loss_original(4, 0.8, y, out).sum(),
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- Bahng

@pytest.mark.parametrize("case", CASES)
def test_bahng_prompters(case):
    backend, dtype = case
    pad = presets.bahng(10, kind="pad", backend=backend)
    layer = pad.input_transform.to(dtype)
    x = torch.randn(2, 3, 224, 224, dtype=dtype)
    d = layer.delta.detach()
    strips = [d[None, :, :30, :].clone(), d[None, :, -30:, :].clone(), d[None, :, 30:-30, :30].clone(),
              d[None, :, 30:-30, -30:].clone()]  # PadPrompter: pad_up, pad_down, pad_left, pad_right
    for s in strips:
        s.requires_grad_(True)
    up, down, left, right = strips
    base = torch.zeros(1, 3, 224 - 60, 224 - 60, dtype=dtype)
    prompt = torch.cat([up, torch.cat([left, base, right], dim=3), down], dim=2)
    out = layer(x)
    exact = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else tol(dtype)
    torch.testing.assert_close(out, x + prompt, **exact)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), layer.delta)
    want = torch.autograd.grad((x + prompt).mul(g).sum(), strips)
    assert_grad_close(grad[:, :30, :], want[0][0], dtype)
    assert_grad_close(grad[:, 30:-30, -30:], want[3][0], dtype)
    patch = presets.bahng(10, kind="patch", prompt_size=30, backend=backend).input_transform.to(dtype)
    p = patch.delta.detach().clone().requires_grad_(True)
    prompt = torch.zeros(1, 3, 224, 224, dtype=dtype)
    prompt[:, :, :30, :30] = p  # FixedPatchPrompter
    check(patch(x), x + prompt, [patch.delta], [p], dtype, normalized=False)


# ---------------------------------------------------------------- SMM

def attribute_net_layout(net):
    """The layer sequence of SMM's AttributeNet(layers=5, patch_size=8, channels=3)."""
    kinds = [type(m).__name__ for m in net]
    convs = [(m.in_channels, m.out_channels) for m in net if isinstance(m, torch.nn.Conv2d)]
    return kinds, convs


def smm_original(x_norm, program, priority, patch_size):
    """InstancewiseVisualPrompt.forward: the patch-wise attention by view/expand/transpose, x + program * attention."""
    size = x_norm.shape[-1]
    patch_num = size // patch_size
    attention = priority(x_norm).view(-1, 3, patch_num * patch_num, 1).expand(-1, 3, -1, patch_size * patch_size)
    attention = attention.reshape(-1, 3, patch_num, patch_num, patch_size, patch_size).transpose(3, 4)
    attention = attention.reshape(-1, 3, size, size)
    return x_norm + program * attention


@pytest.mark.parametrize("case", CASES)
def test_smm(case):
    backend, dtype = case
    recipe = presets.smm(10, input_size=32, output_size=224, backend=backend)
    layer = randomize(recipe.input_transform, dtype, scale=0.3)
    kinds, convs = attribute_net_layout(layer.mask_net)
    assert convs == [(3, 8), (8, 16), (16, 32), (32, 64), (64, 3)]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 3 + ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    layer.eval()  # BatchNorm running statistics: the same on both sides, no batch coupling
    x = torch.rand(2, 3, 32, 32, dtype=dtype)
    x_norm = normalize(F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False))
    program = layer.delta.detach().clone().requires_grad_(True)
    expected = smm_original(x_norm, program, layer.mask_net, 8)
    params = [layer.delta] + list(layer.mask_net.parameters())
    check(layer(x), expected, params, [program] + list(layer.mask_net.parameters()), dtype)


# ---------------------------------------------------------------- BLM+

def blmpp_reweight_original(logits, target, num_target, lap=1, k=3):
    probs = F.softmax(logits, dim=1)
    top_values, top_indices = torch.topk(probs, k, dim=1)
    result = torch.zeros_like(probs).scatter_(1, top_indices, top_values)
    matrix = torch.zeros(num_target, probs.size(-1), dtype=probs.dtype)
    matrix.scatter_add_(0, target.view(-1, 1).long().expand(-1, matrix.size(-1)), result)
    matrix = matrix.t()
    matrix = matrix / (matrix.sum(1, keepdim=True) + lap)
    return matrix / matrix.sum(0)


@pytest.mark.parametrize("num_target, topk", [(10, 1), (100, 15), (5, 1), (20, 3)])
def test_blm_plus_topk_default(num_target, topk):
    recipe = presets.blm(num_target, plus=True)
    assert recipe.output_mapping.topk == topk  # int(0.15 * T), at least 1
    torch.manual_seed(1)
    logits = torch.randn(40 * num_target, 1000, dtype=torch.float64) * 4
    target = torch.arange(40 * num_target) % num_target
    mapping = recipe.output_mapping.double()
    mapping.fit(logits, target)
    expected = blmpp_reweight_original(logits, target, num_target, k=topk)
    torch.testing.assert_close(mapping.weight, expected, rtol=1e-6, atol=1e-9)  # counts are float32 sums


# ---------------------------------------------------------------- Voice2Series

def seg_zero_padding_original(x, seg_num, src_len=16000):
    L = x.shape[-1]
    seg_len = (src_len // L) // seg_num
    out = torch.zeros(x.shape[0], 1, src_len, dtype=x.dtype)
    for s in range(seg_num):
        start = s * seg_len * L
        out = out + F.pad(x, (start, src_len - start - L))
    return out


def multi_mapping_original(prob, source_num, mapping_num, target_num):
    mt = mapping_num * target_num
    label_map = torch.zeros(source_num, mt, dtype=prob.dtype)
    label_map[:mt, :mt] = torch.eye(mt, dtype=prob.dtype)
    return (prob @ label_map).reshape(prob.shape[0], target_num, mapping_num).mean(-1)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("L, seg", [(500, 1), (500, 3), (500, 18), (140, 7), (1639, 2)])
def test_voice2series_input(case, L, seg):
    backend, dtype = case
    recipe = presets.voice2series(5, input_length=L, num_source=36, segments=seg, backend=backend)
    layer = recipe.input_transform.to(dtype)
    bound = math.sqrt(6 / 16001)  # Keras glorot_uniform on (16000, 1)
    assert 0 < layer.delta.abs().max() <= bound
    randomize(layer, dtype)
    x = torch.randn(3, 1, L, dtype=dtype)
    W = layer.delta.detach().clone().requires_grad_(True)
    layer.eval()  # no dropout: x + W over the whole canvas (the mask is never applied)
    check(layer(x), seg_zero_padding_original(x, seg) + W, [layer.delta], [W], dtype, normalized=False)
    layer.train()  # x + dropout(W, 0.4): the same draw on both sides
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    expected = seg_zero_padding_original(x, seg) + F.dropout(W, 0.4, True)
    assert (out - seg_zero_padding_original(x, seg) == 0).any()  # some of the program was dropped
    check(out, expected, [layer.delta], [W], dtype, normalized=False)


def test_voice2series_mapping_and_loss():
    recipe = presets.voice2series(4, input_length=500, num_source=36, k=3)
    logits = torch.randn(8, 36, dtype=torch.float64)
    prob = logits.softmax(-1)
    out = recipe.output_mapping(logits)
    torch.testing.assert_close(out, multi_mapping_original(prob, 36, 3, 4), rtol=1e-12, atol=1e-12)
    target = torch.randint(0, 4, (8,))
    y = F.one_hot(target, 4).double()
    pred = (out / out.sum(-1, keepdim=True)).clamp(1e-7, 1 - 1e-7)  # Keras categorical_crossentropy
    W = recipe.input_transform.delta
    expected = -(y * pred.log()).sum(-1).mean() + 0.05 * W.double().square().sum()  # + regularizers.l2(0.05)
    torch.testing.assert_close(recipe.loss(out, target), expected, rtol=1e-7, atol=1e-9)
    # the cross-entropy term, fused from the logits (what a training loop would call)
    fused = mapped_cross_entropy(logits.float(), target, recipe.output_mapping.index, pre="softmax")
    torch.testing.assert_close(fused.double(), -(y * pred.log()).sum(-1).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale, h, out", [(1.4, 32, 224), (45 / 32, 32, 224), (0.7, 33, 64), (2.3, 31, 225),
                                           (9.0, 32, 224)])
def test_trainable_resize_warp_is_float64_exact(scale, h, out):
    """The warp alone (no normalisation involved): float64 to round-off against pad + affine_grid + grid_sample."""
    from reprogram_ext.nn.trainable_resize import centre_warp
    x = torch.rand(2, 3, h, h, dtype=torch.float64)
    s_ours = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    s_theirs = s_ours.detach().clone().requires_grad_(True)
    block, (top, left) = centre_warp(x, s_ours, (out, out))
    ours = F.pad(block, (left, out - left - block.shape[-1], top, out - top - block.shape[-2]))
    l, r = int((out - h + 1) / 2), int((out - h) / 2)
    padded = F.pad(x, (l, r, l, r))
    theta = torch.zeros(2, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s_theirs
    theirs = F.grid_sample(padded, F.affine_grid(theta, list(padded.shape), align_corners=True), mode="bilinear",
                           padding_mode="zeros", align_corners=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13)
    g = torch.randn_like(theirs)
    (a,) = torch.autograd.grad((ours * g).sum(), s_ours)
    (b,) = torch.autograd.grad((theirs * g).sum(), s_theirs)
    torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_argument_errors():
    from reprogram_ext.nn import TimeSeriesPrompt, TrainableResizePrompt
    with pytest.raises(ValueError, match="scale must be a positive finite"):
        presets.autovp(3, scale=float("inf"))
    with pytest.raises(ValueError, match="segments=40 copies of input_length=500"):
        presets.voice2series(2, input_length=500, num_source=36, segments=40)
    with pytest.raises(ValueError, match="l2 must be a non-negative"):
        presets.voice2series(2, input_length=500, num_source=36, l2=-1.0)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        TimeSeriesPrompt(10, 100, dropout=1.0)
    with pytest.raises(ValueError, match="must fit in output_size"):
        TrainableResizePrompt(32, 16)
    with pytest.raises(TypeError, match="floating tensor"):
        TrainableResizePrompt(4, 8)(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="fewer than k=6"):
        presets.bar_frequency_index(torch.rand(4, 20).softmax(-1), torch.tensor([0, 1, 0, 1]), 2, top=5)
