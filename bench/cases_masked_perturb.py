"""Benchmark cases of ``masked_perturb`` taken from the papers' training configurations.

Bytes the fused op must move (its minimum, counted per case from the actual tensors):
  forward : read x, delta, mask (each once, at their own size) + write the output [B, C, *S_out];
  backward: read grad_out once + the mask + delta when the gradient depends on it (an activation's
            derivative, or the mask gradient g*act(delta)) + write each trained input's gradient at
            that input's own size. (x would be read too for clamp or blend="replace"; no case here
            uses them.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

import reprogram_ext

from .case_types import Case, CaseInstance, Impl, fused_backend_names, grad_backward, op_impls
from .utils import tensor_bytes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PerturbSetting:
    """One masked_perturb configuration; sizes are spatial tuples (1 or 2 dims).

    ``mask``: "outside" = a shared mask, 1 on the canvas outside the placed input and 0 on it
    (ILM-VP, AutoVP, Voice2Series); "per_sample" = soft values ``[B, 1, *S_m]`` produced by a mask
    network and trained with it (SMM). ``copies`` > 1 tiles the input along the last dim.
    """

    batch: int
    channels: int
    in_size: tuple
    out_size: tuple
    resize: Optional[tuple] = None
    copies: int = 1
    activation: str = "sigmoid"
    normalize: str = "after"
    mask: str = "outside"
    mask_scale: int = 1

    def placed_size(self) -> tuple:
        return self.resize if self.resize is not None else self.in_size

    def offsets(self):
        """ILM-VP's centring for one copy; evenly spaced copies along the last dim otherwise."""
        placed = self.placed_size()
        if self.copies == 1:
            return tuple((o - i + 1) // 2 for o, i in zip(self.out_size, placed))
        step = self.out_size[-1] // self.copies
        lead = tuple((o - i + 1) // 2 for o, i in zip(self.out_size[:-1], placed[:-1]))
        return [lead + (k * step,) for k in range(self.copies)]

    def mask_size(self) -> tuple:
        return tuple(-(-s // self.mask_scale) for s in self.out_size)


def _outside_mask(setting: PerturbSetting, device, dtype) -> torch.Tensor:
    """1 where no copy of the input lands, 0 where one does (the prompt lives on the padding)."""
    covered = torch.zeros(setting.out_size, dtype=torch.bool, device=device)
    offsets = setting.offsets()
    for off in offsets if isinstance(offsets, list) else [offsets]:
        region = tuple(slice(max(o, 0), max(o + s, 0)) for o, s in zip(off, setting.placed_size()))
        covered[region] = True
    return (~covered).to(dtype)


def _inputs(setting: PerturbSetting, device, dtype, generator):
    x = torch.rand((setting.batch, setting.channels, *setting.in_size), generator=generator).to(device, dtype)
    delta = torch.randn((setting.channels, *setting.out_size), generator=generator).to(device, dtype)
    delta.requires_grad_(True)
    if setting.mask == "per_sample":
        logits = torch.randn((setting.batch, 1, *setting.mask_size()), generator=generator)
        mask = torch.sigmoid(logits).to(device, dtype).requires_grad_(True)
    else:
        mask = _outside_mask(setting, device, dtype)
    return x, delta, mask


def perturb_bytes(setting: PerturbSetting, x, delta, mask, out_shape, out_dtype) -> tuple:
    """(forward, backward) bytes the fused op must move at the least (see the module docstring)."""
    out = tensor_bytes(out_shape, out_dtype)
    mask_bytes = mask.numel() * mask.element_size()
    delta_bytes = delta.numel() * delta.element_size()
    forward = x.numel() * x.element_size() + delta_bytes + mask_bytes + out
    backward = out + mask_bytes + delta_bytes  # grad_out, mask, grad_delta
    if setting.activation != "none" or mask.requires_grad:
        backward += delta_bytes  # delta itself
    if mask.requires_grad:
        backward += mask_bytes  # grad_mask
    return forward, backward


def _build(setting: PerturbSetting):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        generator = torch.Generator().manual_seed(0)
        x, delta, mask = _inputs(setting, device, dtype, generator)
        options = dict(
            offset=setting.offsets(), resize=setting.resize, activation=setting.activation,
            normalize=setting.normalize, mask_scale=setting.mask_scale,
        )
        if setting.normalize != "none":
            options.update(mean=IMAGENET_MEAN[: setting.channels], std=IMAGENET_STD[: setting.channels])

        def call(x, delta, mask, *, backend):
            return reprogram_ext.masked_perturb(x, delta, mask, backend=backend, **options)

        out_shape = (setting.batch, setting.channels, *setting.out_size)
        grad_out = torch.randn(out_shape, generator=generator).to(device, dtype)
        trained = [delta] + ([mask] if mask.requires_grad else [])
        impls = op_impls(call, (x, delta, mask), grad_backward(trained, grad_out), device)
        fwd, bwd = perturb_bytes(setting, x, delta, mask, out_shape, dtype)
        return CaseInstance(impls, fwd, bwd, out_shape, dtype)

    return build


def _params(setting: PerturbSetting) -> dict:
    params = dict(B=setting.batch, C=setting.channels, input="x".join(map(str, setting.in_size)),
                  canvas="x".join(map(str, setting.out_size)), activation=setting.activation,
                  normalize=setting.normalize, mask=setting.mask)
    if setting.resize is not None:
        params["resize"] = "x".join(map(str, setting.resize))
    if setting.copies > 1:
        params["copies"] = setting.copies
    if setting.mask_scale > 1:
        params["mask_scale"] = setting.mask_scale
    return params


def _tiny(setting: PerturbSetting) -> PerturbSetting:
    """The same configuration at a few-kilobyte size (smoke tests): batch 2, spatial sizes / 8."""
    def shrink(size):
        return None if size is None else tuple(max(2, s // 8) for s in size)

    return replace(setting, batch=2, in_size=shrink(setting.in_size), out_size=shrink(setting.out_size),
                   resize=shrink(setting.resize), mask_scale=min(setting.mask_scale, 2))


def _settings() -> list:
    """(name, what it models, setting, headline, tier) of every case."""
    ilmvp = dict(channels=3, out_size=(224, 224), activation="sigmoid", normalize="after")
    return [
        ("ilmvp_cifar32_b64", "ILM-VP: CIFAR 32x32 padded to 224x224, sigmoid prompt, add, ImageNet normalisation after",
         PerturbSetting(batch=64, in_size=(32, 32), **ilmvp), False, "extended"),
        ("ilmvp_cifar32_b256", "ILM-VP at its training batch size 256",
         PerturbSetting(batch=256, in_size=(32, 32), **ilmvp), False, "default"),
        ("ilmvp_128_b64", "ILM-VP headline: 3x128x128 padded to 224x224, B=64, sigmoid, add, mask, normalise after",
         PerturbSetting(batch=64, in_size=(128, 128), **ilmvp), True, "quick"),
        ("ilmvp_128_b256", "ILM-VP 128->224 at batch 256",
         PerturbSetting(batch=256, in_size=(128, 128), **ilmvp), False, "extended"),
        ("autovp_resize192_b64", "AutoVP: CIFAR 32x32 resized (bilinear) to 192, padded to 224, sigmoid, normalise after",
         PerturbSetting(batch=64, in_size=(32, 32), resize=(192, 192), **ilmvp), False, "default"),
        ("smm_b64", "SMM: 32x32 resized to 224, normalise before, + delta * upsampled per-sample mask "
                    "[B,1,28,28] (mask_scale 8); gradients for delta and mask",
         PerturbSetting(batch=64, channels=3, in_size=(32, 32), out_size=(224, 224), resize=(224, 224),
                        activation="none", normalize="before", mask="per_sample", mask_scale=8), False, "default"),
        ("v2s_b32", "Voice2Series: 1-D series of 1000 samples tiled 8 times on a 16000-sample canvas, "
                    "+ M * theta outside the copies, no normalisation",
         PerturbSetting(batch=32, channels=1, in_size=(1000,), out_size=(16000,), copies=8,
                        activation="none", normalize="none"), False, "default"),
        ("elsayed_odd_b17", "Elsayed-style odd sizes: B=17, 31x29 padded to 223x225, tanh program",
         PerturbSetting(batch=17, channels=3, in_size=(31, 29), out_size=(223, 225), activation="tanh"), False, "default"),
    ]


# The prompt-bank case: V programs of ILM-VP's headline configuration over one batch (bank=True).
BANK_CASE = "bank_ilmvp_128_v8_b64"
BANK_LOOP = "loop"  # the baseline: a loop of V masked_perturb calls (the fused backend), stacked


def _build_bank(setting: PerturbSetting, programs: int):
    """Implementations of a prompt bank of ``programs`` programs: the fused backends and the eager reference
    with bank=True, torch.compile of that (broadcasting) reference, and the loop of V single-program calls
    of the fused backend whose outputs are stacked into the same [V, B, C, *S_out] tensor.

    Bytes: as perturb_bytes with delta [V, C, *S_out] and the output [V, B, C, *S_out]; x is read once."""
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        generator = torch.Generator().manual_seed(0)
        x, _, mask = _inputs(setting, device, dtype, generator)
        delta = torch.randn((programs, setting.channels, *setting.out_size), generator=generator).to(device, dtype)
        delta.requires_grad_(True)
        options = dict(offset=setting.offsets(), activation=setting.activation, normalize=setting.normalize,
                       mean=IMAGENET_MEAN[: setting.channels], std=IMAGENET_STD[: setting.channels])

        def call(x, delta, mask, *, backend):
            return reprogram_ext.masked_perturb(x, delta, mask, bank=True, backend=backend, **options)

        out_shape = (programs, setting.batch, setting.channels, *setting.out_size)
        grad_out = torch.randn(out_shape, generator=generator).to(device, dtype)
        backward = grad_backward([delta], grad_out)
        impls = op_impls(call, (x, delta, mask), backward, device)
        fused = fused_backend_names(device)[0]

        def loop():
            return torch.stack([reprogram_ext.masked_perturb(x, delta[v], mask, backend=fused, **options)
                                for v in range(programs)])

        impls.append(Impl(BANK_LOOP, "baseline", loop, backward))
        fwd, bwd = perturb_bytes(setting, x, delta, mask, out_shape, dtype)
        return CaseInstance(impls, fwd, bwd, out_shape, dtype,
                            notes=[f"{BANK_LOOP}: {programs} calls of backend={fused!r} and torch.stack"])

    return build


def _bank_case(sizes: str) -> Case:
    setting = PerturbSetting(batch=64, channels=3, in_size=(128, 128), out_size=(224, 224))
    programs = 8
    if sizes == "tiny":
        setting, programs = _tiny(setting), 2
    params = dict(_params(setting), V=programs)
    return Case("masked_perturb", BANK_CASE, f"prompt bank (DVP, black-box query banks): {programs} ILM-VP programs "
                "(3x128x128 padded to 224x224, sigmoid, mask, normalise after) applied to every sample, bank=True",
                params, _build_bank(setting, programs), tier="default")


def cases(sizes: str = "default") -> list:
    """Every masked_perturb case; ``sizes="tiny"`` shrinks them for smoke tests (any other value: paper sizes)."""
    result = []
    for name, models, setting, headline, tier in _settings():
        if sizes == "tiny":
            setting = _tiny(setting)
        result.append(Case("masked_perturb", name, models, _params(setting), _build(setting), headline=headline,
                           tier=tier))
    result.append(_bank_case(sizes))
    return result
