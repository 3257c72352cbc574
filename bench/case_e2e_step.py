"""End-to-end cases: one training step of reprogramming a frozen model with ILM-VP's recipe.

Models: torchvision ResNet-18 (``e2e_resnet18_ilmvp``) and timm ViT-S/16 (``e2e_vit_s16_ilmvp``,
``vit_small_patch16_224`` built at the canvas size, random weights; needs timm).

The step: CIFAR-sized images [B, 3, 32, 32] -> padding prompt onto a 224x224 canvas (sigmoid
program, mask = 1 on the padding, ImageNet normalisation after) -> frozen ResNet-18 (random
weights, eval mode, no download) -> frequency label mapping 1000 -> 10 classes (one source class
per target) -> cross-entropy -> backward to the prompt -> Adam step on the prompt.

Two variants share the frozen model: "fused" (``reprogram_ext.nn`` layers with ``backend="auto"``:
the compiled kernels of the device) and "reference" (the same layers with ``backend="reference"``).
Phases: ``fwd`` = forward and loss, ``bwd`` = backward + optimizer step, ``fwdbwd`` = the whole step.

The layers are about 1% of such a step, less than the step-to-step noise of a CPU, so each variant
also clocks its trained layers *inside* every complete step it runs (``LayerClock``): the record's
``in_step`` holds the medians of the layers' time, of the optimizer update, of the whole step and
of the rest (the model and the loss).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .case_types import Case, CaseInstance, CaseUnavailable, Impl
from .cases_masked_perturb import IMAGENET_MEAN, IMAGENET_STD

NUM_SOURCE = 1000


@dataclass(frozen=True)
class StepSetting:
    batch: int
    input_size: int
    canvas: int
    num_target: int = 10


# Batch 4: the prompt's and the mapping's share of a step does not depend on the batch size (all
# scale with B), and a 2-core CPU runs a ResNet-18 step at B=4 in about a quarter of a second.
SETTINGS = {
    "default": StepSetting(batch=4, input_size=32, canvas=224),
    "quick": StepSetting(batch=2, input_size=32, canvas=224),  # --quick
    "tiny": StepSetting(batch=2, input_size=16, canvas=32),  # smoke tests
}

LAYER_PARTS = ("prompt_fwd", "mapping_fwd", "mapping_bwd", "prompt_bwd")


class LayerClock:
    """Wall time spent in the prompt and the label mapping during each step, from hooks.

    Forward: from each layer's forward pre-hook to its forward hook. Backward: the mapping's runs
    from the gradient of its output (the mapped scores) to the gradient of its input (the source
    logits); the prompt's from the gradient of its output (the canvas) to the accumulation of the
    program's gradient. The step's own code marks the optimizer update (``mark("optimizer0")`` /
    ``mark("optimizer1")``). A step is recorded when all marks are set (a forward without backward
    is not), with ``step`` = from ``start()`` to ``finish()``, ``layers`` = the sum of the four layer
    parts, ``optimizer`` = the update and zeroing of the gradients, and ``rest`` = step - layers -
    optimizer (the model and the loss). The hooks cost a few microseconds per step and are the
    same for both variants.
    """

    def __init__(self, prompt: torch.nn.Module, mapping: torch.nn.Module, program: torch.nn.Parameter):
        self.marks: dict = {}
        self.steps: list = []
        prompt.register_forward_pre_hook(lambda *_: self.mark("prompt_fwd0"))
        prompt.register_forward_hook(lambda _m, _i, out: self.mark("prompt_fwd1", out, "prompt_bwd0"))
        mapping.register_forward_pre_hook(lambda _m, inputs: self.mark("mapping_fwd0", inputs[0], "mapping_bwd1"))
        mapping.register_forward_hook(lambda _m, _i, out: self.mark("mapping_fwd1", out, "mapping_bwd0"))
        program.register_post_accumulate_grad_hook(lambda _p: self.mark("prompt_bwd1"))

    def mark(self, name: str, tensor=None, grad_mark: str = None) -> None:
        """Record the time of ``name``; with ``tensor``, also ``grad_mark`` when its gradient is computed."""
        self.marks[name] = time.perf_counter()
        if tensor is not None and tensor.requires_grad:
            tensor.register_hook(lambda _g: self.mark(grad_mark))

    def start(self) -> None:
        self.marks = {"start": time.perf_counter()}

    def finish(self) -> None:
        end = time.perf_counter()
        m = self.marks
        if not all(f"{part}{i}" in m for part in LAYER_PARTS + ("optimizer",) for i in (0, 1)):
            return
        parts = {part: (m[f"{part}1"] - m[f"{part}0"]) * 1e3 for part in LAYER_PARTS + ("optimizer",)}
        step = (end - m["start"]) * 1e3
        layers = sum(parts[part] for part in LAYER_PARTS)
        self.steps.append(dict(parts, layers=layers, step=step, rest=step - layers - parts["optimizer"]))

    def summary(self) -> dict:
        """Median (ms) of each part over the recorded steps, and how many steps."""
        if not self.steps:
            return {"steps": 0}
        return {"steps": len(self.steps),
                **{f"{key}_ms": statistics.median(s[key] for s in self.steps) for key in self.steps[0]}}


def _frozen_resnet18(device) -> torch.nn.Module:
    try:
        import torchvision
    except ImportError as exc:
        raise CaseUnavailable(f"torchvision is not installed ({exc})") from exc
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=NUM_SOURCE).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _frozen_vit_s16(device, canvas: int) -> torch.nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise CaseUnavailable(f"timm is not installed ({exc})") from exc
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=canvas, num_classes=NUM_SOURCE)
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


MODELS = {
    "resnet18": lambda device, setting: _frozen_resnet18(device),
    "vit_s16": lambda device, setting: _frozen_vit_s16(device, setting.canvas),
}


def _reprogrammer(model, setting: StepSetting, backend: str, x, target):
    """Reprogrammer(PaddingPrompt, LabelMapping('frequency')) from reprogram_ext.nn, mapping fitted on one batch."""
    from reprogram_ext import nn as rnn

    prompt = rnn.PaddingPrompt(setting.input_size, setting.canvas, channels=3, activation="sigmoid",
                               mean=IMAGENET_MEAN, std=IMAGENET_STD, backend=backend)
    mapping = rnn.LabelMapping(NUM_SOURCE, setting.num_target, "frequency", k=1, backend=backend)
    net = rnn.Reprogrammer(model, prompt, mapping).to(x.device)
    with torch.no_grad():
        mapping.update(model(prompt(x)), target)
    mapping.remap()
    return net


def _step_impl(name: str, kind: str, net: torch.nn.Module, x, target) -> Impl:
    trained = list(net.trainable_parameters())
    optimizer = torch.optim.Adam(trained, lr=0.01)
    clock = LayerClock(net.input_transform, net.output_mapping, net.input_transform.delta)

    def forward():
        clock.start()
        return F.cross_entropy(net(x), target)

    def backward(loss):
        loss.backward()
        clock.mark("optimizer0")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.mark("optimizer1")
        clock.finish()

    return Impl(name, kind, forward, backward, in_step=clock.summary)


def _build(setting: StepSetting, model_name: str):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        if dtype != torch.float32:
            raise CaseUnavailable("the end-to-end step runs in float32 only")
        model = MODELS[model_name](device, setting)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((setting.batch, 3, setting.input_size, setting.input_size), generator=generator).to(device)
        target = torch.randint(0, setting.num_target, (setting.batch,), generator=generator).to(device)
        impls = [_step_impl("fused", "fused", _reprogrammer(model, setting, "auto", x, target), x, target),
                 _step_impl("reference", "eager", _reprogrammer(model, setting, "reference", x, target), x, target)]
        notes = ["layers: reprogram_ext.nn Reprogrammer(PaddingPrompt, LabelMapping('frequency'))",
                 f"no torch.compile variant: compiling {model_name} costs minutes on 2 CPU cores"]
        return CaseInstance(impls, notes=notes)

    return build


def cases(sizes: str = "default") -> list:
    setting = SETTINGS.get(sizes, SETTINGS["default"])
    out = []
    for model_name, case_name, title, tier in (
            ("resnet18", "e2e_resnet18_ilmvp", "ResNet-18", "quick"),
            ("vit_s16", "e2e_vit_s16_ilmvp", "timm ViT-S/16", "default")):
        params = dict(B=setting.batch, input=f"{setting.input_size}x{setting.input_size}",
                      canvas=f"{setting.canvas}x{setting.canvas}", model=model_name, targets=setting.num_target)
        out.append(Case("e2e_step", case_name,
                        f"one ILM-VP training step: padding prompt + frozen {title} + frequency label mapping + "
                        "cross-entropy + Adam on the prompt", params, _build(setting, model_name), tier=tier,
                        min_reps=30))
    return out
