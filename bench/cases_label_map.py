"""Benchmark cases of ``label_map`` and ``mapped_cross_entropy`` (docs/ops/label_map.md), sparse form ``index [T, K]``.

Sizes: ImageNet-1k source classes mapped to 10 (CIFAR-10) or 100 (CIFAR-100) targets with K=10
sources each at batch 256, and a 32k-entry language-model vocabulary mapped to 100 targets with
K=8 at 2048 rows. The index groups are disjoint random source classes.

Bytes the fused op must move (its minimum):
  label_map forward : read logits [B, S] once (softmax's normaliser is computed in the same pass) +
                      the index + write out [B, T];
  label_map backward: read grad_out [B, T] + the index + write grad_logits [B, S] (dense) + read
                      the logits again when pre != "none" (the softmax's derivative needs them);
  mapped_cross_entropy forward : read logits + index + target, write a scalar;
  mapped_cross_entropy backward: read logits + index + target again, write grad_logits [B, S].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import reprogram_ext

from .case_types import Case, CaseInstance, CaseUnavailable, grad_backward, op_impls
from .utils import tensor_bytes


@dataclass(frozen=True)
class MappingSize:
    batch: int
    sources: int
    targets: int
    k: int


SIZES = {
    "in1k_to10": (MappingSize(256, 1000, 10, 10), "ImageNet-1k classifier reprogrammed to 10 classes (CIFAR-10), K=10"),
    "in1k_to100": (MappingSize(256, 1000, 100, 10), "ImageNet-1k classifier reprogrammed to 100 classes (CIFAR-100), K=10"),
    "vocab32k": (MappingSize(2048, 32000, 100, 8), "language model, 32k vocabulary -> 100 classes, K=8, 2048 rows"),
}
TINY = MappingSize(batch=3, sources=53, targets=5, k=3)  # smoke-test size, odd on purpose


def _op(name: str):
    fn = getattr(reprogram_ext, name, None)
    if fn is None:
        raise CaseUnavailable(f"reprogram_ext.{name} is not in this build (op not merged yet)")
    return fn


def _inputs(size: MappingSize, device, dtype):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn((size.batch, size.sources), generator=generator).to(device, dtype).requires_grad_(True)
    index = torch.randperm(size.sources, generator=generator)[: size.targets * size.k].view(size.targets, size.k)
    target = torch.randint(0, size.targets, (size.batch,), generator=generator)
    return logits, index.to(device), target.to(device), generator


def _with_logits_sized_copy(instance: CaseInstance, size: MappingSize, dtype) -> CaseInstance:
    """Copy baseline: clone() of a [B, S] tensor, the bytes that dominate (the output [B, T] is tiny)."""
    instance.out_shape, instance.out_dtype = (size.batch, size.sources), dtype
    instance.notes.append("copy baseline: clone() of a [B, S] tensor (the logits' size, which the backward "
                          "writes as grad_logits), not of the small output")
    return instance


def _build_label_map(size: MappingSize, pre: str):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        label_map = _op("label_map")
        logits, index, _, generator = _inputs(size, device, dtype)

        def call(logits, index, *, backend):
            return label_map(logits, index, reduce="mean", pre=pre, backend=backend)

        out_shape = (size.batch, size.targets)
        grad_out = torch.randn(out_shape, generator=generator).to(device, dtype)
        impls = op_impls(call, (logits, index), grad_backward([logits], grad_out), device)
        logits_bytes, index_bytes = tensor_bytes(logits.shape, dtype), tensor_bytes(index.shape, index.dtype)
        out_bytes = tensor_bytes(out_shape, dtype)
        fwd = logits_bytes + index_bytes + out_bytes
        bwd = out_bytes + index_bytes + logits_bytes + (logits_bytes if pre != "none" else 0)
        return _with_logits_sized_copy(CaseInstance(impls, fwd, bwd), size, dtype)

    return build


def _build_mapped_ce(size: MappingSize):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        mapped_cross_entropy = _op("mapped_cross_entropy")
        logits, index, target, _ = _inputs(size, device, dtype)

        def call(logits, target, index, *, backend):
            return mapped_cross_entropy(logits, target, index, pre="softmax", backend=backend)

        impls = op_impls(call, (logits, target, index), grad_backward([logits], None), device)
        logits_bytes = tensor_bytes(logits.shape, dtype)
        small = tensor_bytes(index.shape, index.dtype) + tensor_bytes(target.shape, target.dtype)
        fwd = logits_bytes + small + tensor_bytes((), dtype)
        bwd = 2 * logits_bytes + small
        return _with_logits_sized_copy(CaseInstance(impls, fwd, bwd), size, dtype)

    return build


def _params(size: MappingSize, **extra) -> dict:
    return dict(B=size.batch, S=size.sources, T=size.targets, K=size.k, **extra)


def cases(sizes: str = "default") -> list:
    """label_map (pre="softmax", as Voice2Series/BAR; pre="none", as AutoVP) and mapped_cross_entropy."""
    result = []
    for key, (size, models) in SIZES.items():
        if sizes == "tiny":
            size = TINY
        large = key == "vocab32k"
        result.append(Case("label_map", f"label_map_softmax_{key}", f"{models}; mean of probabilities (V2S/BAR)",
                           _params(size, pre="softmax", reduce="mean"), _build_label_map(size, "softmax"),
                           tier="default"))
        result.append(Case("mapped_cross_entropy", f"mapped_ce_softmax_{key}",
                           f"{models}; cross-entropy on the log of averaged probabilities (V2S loss)",
                           _params(size, pre="softmax"), _build_mapped_ce(size),
                           headline=large or key == "in1k_to10", tier="quick" if key != "in1k_to100" else "extended"))
    size = TINY if sizes == "tiny" else SIZES["in1k_to10"][0]
    result.append(Case("label_map", "label_map_logits_in1k_to10",
                       "AutoVP: mean of K=10 source logits per CIFAR-10 class (ImageNet-1k source)",
                       _params(size, pre="none", reduce="mean"), _build_label_map(size, "none")))
    return result
