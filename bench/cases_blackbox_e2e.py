"""End-to-end black-box case: queries per second of BAR's zeroth-order step through a ResNet-18.

``e2e_resnet18_bar_blackbox``: CIFAR-sized images [B, 3, 32, 32], B = 8 -> padding prompt onto a
224x224 canvas (sigmoid program, ImageNet normalisation) -> the frozen timm ResNet-18 (random
weights, eval, no download), queried as a black box (``BlackBoxReprogrammer``: counted, checked
scores) -> BAR's mapping (six sources per target, mean probability) -> focal loss -> RGE estimate ->
BAR's Adam. ``bar_black_box`` preset, with q = 1 (BAR's default: Q = 2 queries per sample) and q = 5
(``..._q5``: Q = 6).

Variants: "fused" (layers and bank with ``backend="auto"``: the compiled kernels) and "reference"
(``backend="reference"``). The timed forward is one whole step (queries included); there is no
backward (``bwd`` is empty). ``in_step``: medians over the steps of the model's time (inside the
query callable), the framework's (bank + mapping + loss + estimate + update = step − model), the
step's, and ``queries_per_s`` = Q·B / step.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from .case_types import Case, CaseInstance, CaseUnavailable, Impl
from .cases_masked_perturb import IMAGENET_MEAN, IMAGENET_STD

NUM_SOURCE, NUM_TARGET = 1000, 10


@dataclass(frozen=True)
class Setting:
    batch: int
    input_size: int
    canvas: int


SETTINGS = {
    "default": Setting(batch=8, input_size=32, canvas=224),
    "quick": Setting(batch=2, input_size=32, canvas=224),
    "tiny": Setting(batch=2, input_size=16, canvas=32),
}


class TimedModel:
    """The black box: the frozen model called under ``no_grad``, with the wall time of each call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.seconds = model, 0.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        begin = time.perf_counter()
        with torch.no_grad():
            out = self.model(batch)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - begin
        return out


def _frozen_resnet18(device) -> torch.nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise CaseUnavailable(f"timm is not installed ({exc})") from exc
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=NUM_SOURCE).to(device).eval()
    return model.requires_grad_(False)


def _step_impl(name: str, kind: str, model, setting: Setting, q: int, backend: str, x, y) -> Impl:
    from reprogram_ext import presets

    recipe = presets.bar_black_box(NUM_TARGET, input_size=setting.input_size, output_size=setting.canvas,
                                   num_source=NUM_SOURCE, q=q, mean=IMAGENET_MEAN, std=IMAGENET_STD, backend=backend)
    black_box = TimedModel(model)
    rp = recipe.reprogrammer(black_box).to(x.device)
    steps = []

    def forward():
        black_box.seconds = 0.0
        begin = time.perf_counter()
        out = rp.step(x, y)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        step = time.perf_counter() - begin
        steps.append((step * 1e3, black_box.seconds * 1e3, out["queries"]))
        return out

    def summary() -> dict:
        if not steps:
            return {}
        step_ms = statistics.median(s for s, _, _ in steps)
        model_ms = statistics.median(m for _, m, _ in steps)
        return {"zo_steps": len(steps), "queries_per_step": steps[0][2], "step_ms": step_ms, "model_ms": model_ms,
                "framework_ms": statistics.median(s - m for s, m, _ in steps),
                "queries_per_s": steps[0][2] / (step_ms / 1e3)}

    return Impl(name, kind, forward, lambda _out: None, in_step=summary)


def _build(setting: Setting, q: int):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        if dtype != torch.float32:
            raise CaseUnavailable("the black-box step runs in float32 only")
        model = _frozen_resnet18(device)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((setting.batch, 3, setting.input_size, setting.input_size), generator=generator).to(device)
        y = torch.randint(0, NUM_TARGET, (setting.batch,), generator=generator).to(device)
        impls = [_step_impl("fused", "fused", model, setting, q, "auto", x, y),
                 _step_impl("reference", "eager", model, setting, q, "reference", x, y)]
        notes = [f"one BAR black-box step = {(q + 1) * setting.batch} queries (Q = q + 1 = {q + 1} canvases per "
                 "sample); fwd = the whole step, no bwd; in_step: model vs framework time and queries/s"]
        return CaseInstance(impls, notes=notes)

    return build


def cases(sizes: str = "default") -> list:
    setting = SETTINGS.get(sizes, SETTINGS["default"])
    out = []
    for q, suffix in ((1, ""), (5, "_q5")):
        params = dict(B=setting.batch, input=f"{setting.input_size}x{setting.input_size}",
                      canvas=f"{setting.canvas}x{setting.canvas}", model="resnet18", q=q, Q=q + 1)
        out.append(Case("e2e_step", f"e2e_resnet18_bar_blackbox{suffix}",
                        "BAR black-box step through a frozen timm ResNet-18: padding prompt bank + queries + "
                        "six-source mapping + focal loss + RGE + Adam; queries per second", params,
                        _build(setting, q), tier="default" if q == 1 else "extended"))
    return out
