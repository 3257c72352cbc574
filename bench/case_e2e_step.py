"""End-to-end case: one training step of reprogramming torchvision ResNet-18 with ILM-VP's recipe.

The step: CIFAR-sized images [B, 3, 32, 32] -> padding prompt onto a 224x224 canvas (sigmoid
program, mask = 1 on the padding, ImageNet normalisation after) -> frozen ResNet-18 (random
weights, eval mode, no download) -> frequency label mapping 1000 -> 10 classes (one source class
per target) -> cross-entropy -> backward to the prompt -> Adam step on the prompt.

Two variants share the frozen model: "fused" (layers with ``backend="auto"``: the compiled kernels
of the device) and "reference" (the same layers with ``backend="reference"``). Phases: ``fwd`` =
forward and loss, ``bwd`` = backward + optimizer step, ``fwdbwd`` = the whole step.

The layers come from ``reprogram_ext.nn`` (PaddingPrompt, LabelMapping, Reprogrammer, SPEC §4)
when that module is present; otherwise the case builds the same step from ``masked_perturb`` and
``label_map`` (or plain indexing when label_map is missing) and says so in its notes.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import reprogram_ext

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
# scale with B), and a 2-core CPU runs a ResNet-18 step at B=4 in about a second.
SETTINGS = {
    "default": StepSetting(batch=4, input_size=32, canvas=224),
    "quick": StepSetting(batch=2, input_size=32, canvas=224),  # --quick
    "tiny": StepSetting(batch=2, input_size=16, canvas=32),  # smoke tests
}


class PromptFromOps(torch.nn.Module):
    """ILM-VP padding prompt on ``masked_perturb``: N(pad(x) + sigmoid(theta) * M), M = 1 on the padding."""

    def __init__(self, input_size: int, canvas: int, backend: str):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(3, canvas, canvas))
        pad = (canvas - input_size + 1) // 2
        mask = torch.ones(canvas, canvas)
        mask[pad:pad + input_size, pad:pad + input_size] = 0
        self.register_buffer("mask", mask)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reprogram_ext.masked_perturb(x, self.theta, self.mask, activation="sigmoid", mean=IMAGENET_MEAN,
                                            std=IMAGENET_STD, backend=self.backend)


class MappingFromOps(torch.nn.Module):
    """One-to-one label mapping ``out[:, t] = logits[:, index[t, 0]]`` via ``label_map`` when present."""

    def __init__(self, index: torch.Tensor, backend: str):
        super().__init__()
        self.register_buffer("index", index)
        self.backend = backend

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        label_map = getattr(reprogram_ext, "label_map", None)
        if label_map is None:
            return logits[:, self.index[:, 0]]
        return label_map(logits, self.index, backend=self.backend)


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


def _reprogrammer_from_nn(model, setting: StepSetting, backend: str, x, target):
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


def _reprogrammer_from_ops(model, setting: StepSetting, backend: str, index):
    return torch.nn.Sequential(PromptFromOps(setting.input_size, setting.canvas, backend), model,
                               MappingFromOps(index, backend)).to(index.device)


def _frequency_index(model, prompt_input, target, num_target):
    """ILM-VP's frequency mapping index [T, 1] when reprogram_ext.mapping exists, else the first T classes."""
    try:
        mapping = importlib.import_module("reprogram_ext.mapping")
        mapping.frequency_mapping, mapping.count_matrix
    except (ImportError, AttributeError):
        return torch.arange(num_target, device=target.device).view(num_target, 1), False
    with torch.no_grad():
        counts = mapping.count_matrix(model(prompt_input), target, num_target)
    return mapping.frequency_mapping(counts, k=1), True


def _step_impl(name: str, kind: str, net: torch.nn.Module, x, target) -> Impl:
    trained = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=0.01)

    def forward():
        return F.cross_entropy(net(x), target)

    def backward(loss):
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return Impl(name, kind, forward, backward)


def _build(setting: StepSetting):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        if dtype != torch.float32:
            raise CaseUnavailable("the end-to-end step runs in float32 only")
        model = _frozen_resnet18(device)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((setting.batch, 3, setting.input_size, setting.input_size), generator=generator).to(device)
        target = torch.randint(0, setting.num_target, (setting.batch,), generator=generator).to(device)
        notes = []
        nets = {}
        try:
            for backend in ("auto", "reference"):
                nets[backend] = _reprogrammer_from_nn(model, setting, backend, x, target)
            notes.append("layers: reprogram_ext.nn Reprogrammer(PaddingPrompt, LabelMapping('frequency'))")
        except Exception as exc:  # nn layers missing or incomplete: same step from the ops
            padded = PromptFromOps(setting.input_size, setting.canvas, "reference").to(device)(x)
            index, frequency = _frequency_index(model, padded, target, setting.num_target)
            nets = {backend: _reprogrammer_from_ops(model, setting, backend, index) for backend in ("auto", "reference")}
            has_label_map = hasattr(reprogram_ext, "label_map")
            notes.append(f"reprogram_ext.nn not usable ({type(exc).__name__}: {str(exc)[:120]}); step built from "
                         f"masked_perturb + {'label_map' if has_label_map else 'plain indexing (label_map missing)'}, "
                         f"index from {'frequency_mapping' if frequency else 'the first T classes (mapping missing)'}")
        impls = [_step_impl("fused", "fused", nets["auto"], x, target),
                 _step_impl("reference", "eager", nets["reference"], x, target)]
        notes.append("no torch.compile variant: compiling ResNet-18 costs minutes on 2 CPU cores")
        return CaseInstance(impls, notes=notes)

    return build


def cases(sizes: str = "default") -> list:
    setting = SETTINGS.get(sizes, SETTINGS["default"])
    params = dict(B=setting.batch, input=f"{setting.input_size}x{setting.input_size}",
                  canvas=f"{setting.canvas}x{setting.canvas}", model="resnet18", targets=setting.num_target)
    return [Case("e2e_step", "e2e_resnet18_ilmvp",
                 "one ILM-VP training step: padding prompt + frozen ResNet-18 + frequency label mapping + "
                 "cross-entropy + Adam on the prompt", params, _build(setting), tier="quick", min_reps=30)]
