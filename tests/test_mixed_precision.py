"""Training steps under torch.autocast on the CPU (docs/mixed_precision.md): bf16, and fp16 with GradScaler.

Each layer family drives a real source model (a randomly initialised timm ResNet-18; a small 1-D
ConvNet for the time-series prompt) through a LabelMapping; the step's dtypes are the documented ones,
the gradients are float32, finite and point the way the float32 step's do, and the parameters move.
"""
import pytest
import timm  # a test requirement (.ci/requirements.txt)
import torch
import torch.nn.functional as F
from torch import nn

from reprogram_ext import mapped_cross_entropy
from reprogram_ext.nn import (AdditivePrompt, LabelMapping, PaddingPrompt, Reprogrammer, SampleSpecificMaskPrompt,
                              TimeSeriesPrompt)

NUM_SOURCE, NUM_TARGET = 20, 5
AMP_DTYPES = [torch.bfloat16, torch.float16]
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=NUM_SOURCE)


def series_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 9, stride=4), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(8, NUM_SOURCE))


def family(name, resnet):
    """(Reprogrammer, input batch, loss of (source logits, mapping, target)) of one layer family."""
    torch.manual_seed(1)
    if name == "timeseries":
        mapping = LabelMapping(NUM_SOURCE, NUM_TARGET, "random", k=2, pre="softmax",
                               generator=torch.Generator().manual_seed(0))
        rp = Reprogrammer(series_model(), TimeSeriesPrompt(50, 200, channels=1), mapping)
        loss = lambda logits, m, y: mapped_cross_entropy(logits, y, m.index, pre="softmax")  # noqa: E731
        return rp, torch.randn(4, 1, 50), loss
    prompts = {
        "padding": (lambda: PaddingPrompt(16, 32, mean=MEAN, std=STD), 16),
        "additive": (lambda: AdditivePrompt(32, kind="pad", prompt_size=4), 32),
        "sample_specific": (lambda: SampleSpecificMaskPrompt(16, 32, mask_scale=4, mean=MEAN, std=STD), 16),
    }
    make, size = prompts[name]
    prompt = make()
    with torch.no_grad():
        for p in prompt.parameters():
            p.normal_(0, 0.5)
    mapping = LabelMapping(NUM_SOURCE, NUM_TARGET, "iterative" if name != "additive" else "bayesian")
    return Reprogrammer(resnet, prompt, mapping), torch.rand(4, 3, size, size), \
        lambda logits, m, y: F.cross_entropy(m(logits), y)


def step(rp, x, y, loss_fn, dtype):
    """One training step (autocast at ``dtype``, or float32 for None); returns dtypes and the gradients."""
    # fp16: a scale that does not overflow at once (the default 2**16 skips the first steps: see the next test)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=dtype == torch.float16)
    params = list(rp.trainable_parameters())
    for p in params:
        p.grad = None
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        canvas = rp.input_transform(x)
        logits = rp.model(canvas)
        rp.output_mapping.update(logits.detach(), y)
        out = rp.output_mapping(logits)
        loss = loss_fn(logits, rp.output_mapping, y)
    scaler.scale(loss).backward()
    scaler.unscale_(torch.optim.SGD(params, lr=0.0))  # the unscaled gradients, as before an optimizer step
    grads = [p.grad.clone() for p in params]
    dtypes = {"canvas": canvas.dtype, "logits": logits.dtype, "mapped": out.dtype, "loss": loss.dtype}
    return dtypes, grads


@pytest.mark.parametrize("dtype", AMP_DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["padding", "additive", "sample_specific", "timeseries"])
def test_autocast_training_step(resnet, name, dtype):
    rp, x, loss_fn = family(name, resnet)
    y = torch.randint(0, NUM_TARGET, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    _, grads32 = step(rp, x, y, loss_fn, None)
    dtypes, grads = step(rp, x, y, loss_fn, dtype)
    assert dtypes == {"canvas": dtype, "logits": dtype, "mapped": dtype, "loss": torch.float32 if name != "timeseries"
                      else dtype}
    for g in grads:
        assert g.dtype == torch.float32 and torch.isfinite(g).all()
    # The direction of the whole update (single parameters such as a conv bias before a BatchNorm have a
    # gradient that is zero in exact arithmetic, so only rounding noise at any precision).
    flat, flat32 = torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in grads32])
    cosine = F.cosine_similarity(flat, flat32, dim=0)
    assert cosine > 0.95, f"{name}: the low-precision gradient points elsewhere (cosine {cosine:.3f})"
    counts = rp.output_mapping.counts
    if counts is not None:  # the data-driven mapping counted both steps, in float32
        assert counts.dtype == torch.float32 and counts.sum() == 2 * x.shape[0]


@pytest.mark.parametrize("dtype", AMP_DTYPES, ids=["bf16", "fp16"])
def test_optimizer_steps_with_grad_scaler_move_the_prompt_and_keep_float32_parameters(resnet, dtype):
    rp, x, loss_fn = family("padding", resnet)
    y = torch.randint(0, NUM_TARGET, (4,), generator=torch.Generator().manual_seed(3))
    opt = torch.optim.Adam(rp.trainable_parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    before = rp.input_transform.delta.detach().clone()
    rp.train()
    for _ in range(3):
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(rp(x, y), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    delta = rp.input_transform.delta
    assert delta.dtype == torch.float32 and torch.isfinite(delta).all() and not torch.equal(delta, before)
    assert rp.end_epoch() and rp.output_mapping.index.dtype == torch.int64
