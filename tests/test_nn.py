"""reprogram_ext.nn layers against their formulas in plain torch, on every backend (docs/nn.md)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backend_params import backend_device_params
from reprogram_ext.mapping import bayesian_mapping, count_matrix, frequency_mapping
from reprogram_ext.nn import (AdditivePrompt, LabelMapping, PaddingPrompt, Reprogrammer, SampleSpecificMaskPrompt,
                              TimeSeriesPrompt)

BACKENDS = backend_device_params()
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
ACTS = {"none": lambda t: t, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def norm(z, mean=MEAN, std=STD):
    return (z - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def randomize(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


def make_layers(backend):
    """One configured instance of every layer (with random programs), and an input for it."""
    g = torch.Generator().manual_seed(1)
    return [
        (randomize(PaddingPrompt((5, 6), (9, 11), mean=MEAN, std=STD, backend=backend)), torch.rand(2, 3, 5, 6)),
        (randomize(PaddingPrompt(6, 10, resize=8, activation="tanh", backend=backend)), torch.rand(2, 1, 6, 6)),
        (randomize(AdditivePrompt(12, kind="pad", prompt_size=3, backend=backend)), torch.randn(2, 3, 12, 12)),
        (randomize(AdditivePrompt(12, kind="patch", prompt_size=4, random_location=True, generator=g,
                                  backend=backend)).eval(), torch.randn(2, 3, 12, 12)),
        (randomize(SampleSpecificMaskPrompt(10, 20, mask_scale=4, mean=MEAN, std=STD, backend=backend)).eval(),
         torch.rand(2, 3, 10, 10)),
        (randomize(TimeSeriesPrompt(7, 40, copies=3, backend=backend)), torch.randn(2, 7)),
    ]


@pytest.mark.parametrize("backend_device", BACKENDS)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_padding_prompt_formula(backend_device, activation):
    backend, device = backend_device
    layer = randomize(PaddingPrompt((5, 6), (9, 11), activation=activation, mean=MEAN, std=STD, backend=backend)).to(device)
    x = torch.rand(4, 3, 5, 6, device=device)
    M = torch.ones(9, 11)
    M[2:7, 3:9] = 0  # centred: (9 - 5 + 1) // 2 = 2, (11 - 6 + 1) // 2 = 3
    expected = norm(F.pad(x, (3, 2, 2, 2)) + ACTS[activation](layer.delta) * M)
    out = layer(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    assert torch.all(layer.delta.grad[:, 2:7, 3:9] == 0) and torch.all(layer.delta.grad[:, 0] != 0)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_padding_prompt_resize_grey_input_and_full_prompt(backend_device):
    backend, _ = backend_device
    layer = randomize(PaddingPrompt(6, 12, resize=(8, 7), prompt_over_input=True, activation="none", backend=backend))
    x = torch.rand(2, 1, 6, 6)
    placed = F.pad(F.interpolate(x, size=(8, 7), mode="bilinear", align_corners=False), (3, 2, 2, 2))
    torch.testing.assert_close(layer(x), placed.expand(-1, 3, -1, -1) + layer.delta)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_additive_prompt_pad_full_and_fixed_patch(backend_device):
    backend, _ = backend_device
    x = torch.randn(2, 3, 12, 10)
    pad = randomize(AdditivePrompt((12, 10), kind="pad", prompt_size=3, backend=backend))
    M = torch.ones(12, 10)
    M[3:9, 3:7] = 0
    torch.testing.assert_close(pad(x), x + M * pad.delta)
    full = randomize(AdditivePrompt((12, 10), kind="full", activation="tanh", backend=backend))
    torch.testing.assert_close(full(x), x + torch.tanh(full.delta))
    patch = randomize(AdditivePrompt((12, 10), kind="patch", prompt_size=4, patch_location=(5, 2), backend=backend))
    expected = x.clone()
    expected[:, :, 5:9, 2:6] += patch.delta
    torch.testing.assert_close(patch(x), expected)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_additive_prompt_random_patch_moves_in_training_only(backend_device):
    backend, _ = backend_device
    layer = randomize(AdditivePrompt(10, kind="patch", prompt_size=3, random_location=True,
                                     generator=torch.Generator().manual_seed(0), backend=backend))
    x = torch.zeros(1, 3, 10, 10)
    seen = set()
    for _ in range(12):
        diff = layer(x)[0]
        nonzero = diff.abs().sum(0).nonzero()
        (y, x0), (y1, x1) = nonzero.min(0).values.tolist(), nonzero.max(0).values.tolist()
        assert (y1 - y, x1 - x0) == (2, 2)
        torch.testing.assert_close(diff[:, y:y + 3, x0:x0 + 3], layer.delta)
        seen.add((y, x0))
    assert len(seen) > 3
    layer.eval()
    torch.testing.assert_close(layer(x)[0, :, :3, :3], layer.delta.detach())


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_sample_specific_mask_prompt_formula_and_gradients(backend_device):
    backend, _ = backend_device
    f, size = 4, (18, 21)  # the mask is ceil(18/4) x ceil(21/4) = 5 x 6, cropped after upsampling
    layer = randomize(SampleSpecificMaskPrompt((7, 9), size, mask_scale=f, mean=MEAN, std=STD, backend=backend)).eval()
    x = torch.rand(3, 3, 7, 9)
    n = norm(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    mask = layer.mask_net(n)
    assert mask.shape == (3, 3, 5, 6)
    up = mask.repeat_interleave(f, -2).repeat_interleave(f, -1)[..., :18, :21]
    out = layer(x)
    torch.testing.assert_close(out, n + layer.delta * up)
    out.square().sum().backward()
    assert layer.delta.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.mask_net[0].parameters())


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_time_series_prompt_tiles_copies(backend_device):
    backend, _ = backend_device
    layer = randomize(TimeSeriesPrompt(7, 40, copies=3, backend=backend))
    assert layer.offsets == (10, 17, 24)  # block of 21 centred: (40 - 21 + 1) // 2
    x = torch.randn(2, 7)
    tiled = torch.zeros(2, 1, 40)
    M = torch.ones(40)
    for o in layer.offsets:
        tiled[:, 0, o:o + 7] += x
        M[o:o + 7] = 0
    torch.testing.assert_close(layer(x), tiled + M * layer.delta)
    overlapping = randomize(TimeSeriesPrompt(7, 20, offsets=[0, 4, 16], backend=backend))
    tiled, M = torch.zeros(2, 1, 20), torch.ones(20)
    for o in (0, 4, 16):  # copies overlap on 4..6 (they add) and the last one is cropped at 20
        tiled[:, 0, o:o + 7] += x[:, : 20 - o]
        M[o:o + 7] = 0
    assert M.sum() == 5  # positions 11..15 are free
    torch.testing.assert_close(overlapping(x.unsqueeze(1)), tiled + M * overlapping.delta)


def test_layers_give_the_same_output_on_every_backend():
    backends = [p.values[0][0] for p in BACKENDS]
    outputs = {}
    for backend in backends:
        torch.manual_seed(0)
        outputs[backend] = [layer(x) for layer, x in make_layers(backend)]
    for backend in backends[1:]:
        for a, b in zip(outputs[backends[0]], outputs[backend]):
            torch.testing.assert_close(a, b)


def test_backend_is_passed_through():
    for layer, x in make_layers("cuda"):  # CPU tensors with backend="cuda": the op must refuse
        with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
            layer(x)


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_prompt_state_dict_round_trip(backend_device):
    backend, _ = backend_device
    for (a, x), (b, _) in zip(make_layers(backend), make_layers(backend)):
        randomize(b)
        b.load_state_dict(a.state_dict())
        a.eval(), b.eval()
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
        assert a.state_dict().keys() == b.state_dict().keys() and "delta" in a.state_dict()


def test_prompt_dtype_moves():
    for layer, x in make_layers("auto"):
        ref = layer(x)
        layer.to(torch.float64)
        assert layer.delta.dtype == torch.float64
        assert all(b.dtype == torch.float64 for b in layer.buffers() if b.is_floating_point())
        out = layer(x.double())
        assert out.dtype == torch.float64
        # SMM's float32 output carries its mask network's float32 rounding (~2e-5 relative); float64 is exact
        rtol = 1e-4 if isinstance(layer, SampleSpecificMaskPrompt) else 1e-5
        torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=1e-5)


def test_prompt_reprs_and_errors():
    assert "output_size=(9, 11)" in repr(PaddingPrompt((5, 6), (9, 11)))
    assert "kind='patch'" in repr(AdditivePrompt(12, kind="patch", prompt_size=4))
    assert "mask_scale=4" in repr(SampleSpecificMaskPrompt(10, 20, mask_scale=4))
    assert "offsets=(16,)" in repr(TimeSeriesPrompt(8, 40))
    with pytest.raises(ValueError, match=r"x must have shape \[B, C, 5, 5\]"):
        PaddingPrompt(5, 9)(torch.rand(1, 3, 6, 6))
    with pytest.raises(ValueError, match="mask_scale must be a power of two"):
        SampleSpecificMaskPrompt(10, 20, mask_scale=3)
    with pytest.raises(ValueError, match="kind must be one of"):
        AdditivePrompt(12, kind="ring")
    with pytest.raises(ValueError, match="mean and std must be given together"):
        PaddingPrompt(5, 9, mean=MEAN)
    with pytest.raises(ValueError, match="copies must be"):
        TimeSeriesPrompt(8, 20, copies=3)


# ---- LabelMapping ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend_device", BACKENDS)
def test_label_mapping_sparse_methods(backend_device):
    backend, _ = backend_device
    logits = torch.randn(5, 12)
    ident = LabelMapping(12, 3, "identity", k=2, backend=backend)
    torch.testing.assert_close(ident(logits), logits[:, :6].view(5, 3, 2).mean(-1))
    rand = LabelMapping(12, 3, "random", k=3, pre="softmax", generator=torch.Generator().manual_seed(0), backend=backend)
    idx = rand.index
    assert len(set(idx.flatten().tolist())) == 9
    torch.testing.assert_close(rand(logits), logits.softmax(-1)[:, idx].mean(-1))
    summed = LabelMapping(12, 3, "random", k=2, reduce="sum", backend=backend)
    torch.testing.assert_close(summed(logits), logits[:, summed.index].sum(-1))


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_label_mapping_dense_methods(backend_device):
    backend, _ = backend_device
    logits = torch.randn(5, 6)
    lin = LabelMapping(6, 4, "linear", bias=True, backend=backend)
    torch.testing.assert_close(lin(logits), logits[:, :4])  # starts as the identity mapping
    randomize(lin)
    out = lin(logits)
    torch.testing.assert_close(out, logits @ lin.weight + lin.bias)
    out.sum().backward()
    torch.testing.assert_close(lin.weight.grad, logits.sum(0)[:, None].expand(6, 4))
    blm = LabelMapping(6, 4, "bayesian", pre="log_softmax", backend=backend)
    target = torch.randint(0, 4, (5,))
    omega = blm.fit(logits, target)
    torch.testing.assert_close(omega, bayesian_mapping(count_matrix(logits, target, 4)))
    torch.testing.assert_close(blm(logits), logits.log_softmax(-1) @ omega)


@pytest.mark.parametrize("method,topk", [("iterative", None), ("bayesian", None), ("bayesian_plus", 2)])
def test_remapping_uses_the_counts_of_each_epoch(method, topk):
    layer = LabelMapping(8, 3, method, k=2 if method == "iterative" else 1, topk=topk)
    for epoch in range(3):
        counts = torch.zeros(8, 3)
        for _ in range(4):  # batches of one epoch: the layer counts during the training pass itself
            logits, target = torch.randn(6, 8), torch.randint(0, 3, (6,))
            layer.update(logits, target)
            count_matrix(logits, target, 3, topk=topk, counts=counts)
        torch.testing.assert_close(layer.counts, counts)
        assert layer.end_epoch()
        expected = frequency_mapping(counts, 2) if method == "iterative" else bayesian_mapping(counts)
        torch.testing.assert_close(layer.index if method == "iterative" else layer.weight, expected)
        assert torch.all(layer.counts == 0) and layer.epochs == epoch + 1 and layer.remaps == epoch + 1


def test_remap_schedule_frequency_once_iterative_every_n():
    freq = LabelMapping(6, 2, "frequency")
    freq.update(torch.tensor([[0., 0, 0, 0, 0, 9]]), torch.tensor([1]))
    assert freq.end_epoch() and freq.index.tolist() == [[0], [5]]
    freq.update(torch.tensor([[9., 0, 0, 0, 0, 0]]), torch.tensor([1]))  # ignored: mapped once already
    assert torch.all(freq.counts == 0) and not freq.end_epoch() and freq.index.tolist() == [[0], [5]]
    it = LabelMapping(6, 2, "iterative", remap_every=2)
    it.update(torch.tensor([[0., 0, 0, 0, 0, 9]]), torch.tensor([1]))
    assert not it.end_epoch() and it.index.tolist() == [[0], [1]]
    assert it.end_epoch() and it.index.tolist() == [[0], [5]]
    with pytest.raises(RuntimeError, match="no counts gathered yet"):
        LabelMapping(6, 2, "iterative").remap()
    with pytest.raises(RuntimeError, match="has no data-driven mapping"):
        LabelMapping(6, 2, "identity").remap()


def test_label_mapping_state_dict_round_trip_and_moves():
    a = LabelMapping(10, 3, "iterative")
    a.update(torch.randn(7, 10), torch.randint(0, 3, (7,)))
    a.end_epoch()
    a.update(torch.randn(7, 10), torch.randint(0, 3, (7,)))
    b = LabelMapping(10, 3, "iterative")
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.index, b.index) and torch.equal(a.counts, b.counts) and (b.epochs, b.remaps) == (1, 1)
    r1, r2 = LabelMapping(10, 3, "random"), LabelMapping(10, 3, "random")
    r2.load_state_dict(r1.state_dict())
    assert torch.equal(r1.index, r2.index)
    blm = LabelMapping(10, 3, "bayesian_plus", topk=2)
    logits = torch.randn(7, 10)
    blm.fit(logits, torch.randint(0, 3, (7,)))
    blm.update(torch.randn(7, 10) * 3, torch.randint(0, 3, (7,)))
    counts = blm.counts.clone()
    blm.to(torch.float16)
    assert blm.weight.dtype == torch.float16 and blm.counts.dtype == torch.float32
    assert torch.equal(blm.counts, counts)
    assert blm.to(torch.float64)(logits.double()).dtype == torch.float64
    assert "method='bayesian_plus'" in repr(blm) and "topk=2" in repr(blm)


def test_label_mapping_errors():
    with pytest.raises(ValueError, match="k\\*num_target <= num_source"):
        LabelMapping(5, 3, "frequency", k=2)
    with pytest.raises(ValueError, match="method must be one of"):
        LabelMapping(5, 3, "nearest")
    with pytest.raises(ValueError, match="topk is only used"):
        LabelMapping(5, 3, "bayesian", topk=2)
    with pytest.raises(ValueError, match="num_target must be a positive int"):
        LabelMapping(5, 0)


# ---- Reprogrammer ----------------------------------------------------------------------------

def source_model():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # non-trivial running statistics
        model.train()(torch.randn(8, 3, 12, 12) * 2 + 1)
    return model


@pytest.mark.parametrize("backend_device", BACKENDS)
def test_reprogrammer_trains_only_the_added_layers(backend_device):
    backend, _ = backend_device
    model = source_model()
    before = copy.deepcopy(model.state_dict())
    rp = Reprogrammer(model, PaddingPrompt(6, 12, backend=backend), LabelMapping(10, 3, "iterative", backend=backend))
    rp.train()
    assert rp.training and rp.input_transform.training and not any(m.training for m in rp.model.modules())
    assert all(not p.requires_grad for p in rp.model.parameters())
    assert {id(p) for p in rp.trainable_parameters()} == {id(rp.input_transform.delta)}
    delta0 = rp.input_transform.delta.detach().clone()
    opt = torch.optim.SGD(rp.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)  # even given every parameter
    for _ in range(3):
        x, y = torch.rand(8, 3, 6, 6), torch.randint(0, 3, (8,))
        loss = F.cross_entropy(rp(x, y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert rp.end_epoch() and rp.output_mapping.remaps == 1
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit, BatchNorm statistics included
    assert all(p.grad is None for p in model.parameters())
    assert not torch.equal(rp.input_transform.delta, delta0)
    rp.eval()
    out = rp(torch.rand(2, 3, 6, 6), torch.tensor([0, 1]))  # no counting outside training
    assert out.shape == (2, 3) and torch.all(rp.output_mapping.counts == 0)


def test_reprogrammer_eval_output_is_the_composition():
    model = source_model()
    prompt, mapping = randomize(PaddingPrompt(6, 12)), LabelMapping(10, 4, "identity")
    rp = Reprogrammer(model, prompt, mapping).eval()
    x = torch.rand(3, 3, 6, 6)
    torch.testing.assert_close(rp(x), model(prompt(x))[:, :4])
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        Reprogrammer(lambda z: z, prompt, mapping)
