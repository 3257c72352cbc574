"""Benchmark cases of preset input transforms that are more than one ``masked_perturb`` call.

``autovp_trainable_scale_b64``: AutoVP's learned input scale (``presets.autovp(trainable_scale=True)``,
``nn.TrainableResizePrompt``) on CIFAR 32x32 into 224x224, B=64, scale 1.4, sigmoid program,
ImageNet normalisation; gradients for the program and the scale (the input needs none).
  - ``fused``: the layer with ``backend=<name>``: the separable warp of the image's own footprint
    (two small matmuls) and one ``masked_perturb`` that places it, adds the prompt and normalises;
  - ``eager``: the original's computation in plain PyTorch: ``F.pad`` to the canvas,
    ``affine_grid(diag(1/s))`` + ``grid_sample(align_corners=True)`` over the whole canvas, then
    ``+ sigmoid(delta) * mask`` and the normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .case_types import Case, CaseInstance, CaseUnavailable, Impl, fused_backend_names, grad_backward
from .cases_masked_perturb import IMAGENET_MEAN, IMAGENET_STD
from .utils import tensor_bytes


def _eager_autovp(x, delta, scale, mean, std, out):
    """AutoVP's Trainable_Resize + InputPadding, written directly (pad, affine_grid, grid_sample, add, normalise)."""
    h = x.shape[-1]
    lo, hi = (out - h + 1) // 2, (out - h) // 2
    padded = F.pad(x, (lo, hi, lo, hi))
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    inv = 1 / scale
    theta = torch.stack([torch.stack([inv, zero, zero]), torch.stack([zero, inv, zero])]).expand(x.shape[0], 2, 3)
    warped = F.grid_sample(padded, F.affine_grid(theta, list(padded.shape), align_corners=True), mode="bilinear",
                           padding_mode="zeros", align_corners=True)
    r = min(int(h * scale.detach()), out)
    mask = torch.ones(1, out, out, dtype=x.dtype, device=x.device)
    mask[:, (out - r) // 2:(out + r) // 2, (out - r) // 2:(out + r) // 2] = 0
    return (warped + torch.sigmoid(delta) * mask - mean) / std


def _build(batch: int, size: int, out: int, scale: float):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        try:
            from reprogram_ext.nn import TrainableResizePrompt
        except ImportError as exc:  # pragma: no cover - the layer ships with the package
            raise CaseUnavailable(f"nn.TrainableResizePrompt missing: {exc}") from exc
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, size, size, generator=gen).to(device, dtype)
        grad = torch.randn(batch, 3, out, out, generator=gen).to(device, dtype)
        mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(1, 3, 1, 1)
        impls = []
        for name in fused_backend_names(device):
            layer = TrainableResizePrompt(size, out, scale=scale, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                          backend=name).to(device, dtype)
            impls.append(Impl(name, "fused", lambda layer=layer: layer(x),
                              grad_backward([layer.delta, layer.scale], grad)))
        delta = torch.zeros(3, out, out, device=device, dtype=dtype, requires_grad=True)
        s = torch.tensor(scale, device=device, dtype=dtype, requires_grad=True)
        impls.append(Impl("reference", "eager", lambda: _eager_autovp(x, delta, s, mean, std, out),
                          grad_backward([delta, s], grad)))
        def nbytes(t):
            return tensor_bytes(t.shape, t.dtype)

        # Minimum traffic of the fused layer: read x and delta, write the canvas; backward: read
        # grad_out and delta (sigmoid'), write delta's gradient.
        return CaseInstance(impls, bytes_fwd=nbytes(x) + nbytes(delta) + nbytes(grad),
                            bytes_bwd=nbytes(grad) + 2 * nbytes(delta), out_shape=tuple(grad.shape),
                            out_dtype=dtype,
                            notes=["eager = pad + affine_grid + grid_sample over the canvas + prompt + normalise"])
    return build


def cases(sizes: str = "default") -> list:
    """The preset cases; ``sizes="tiny"`` shrinks them for smoke tests."""
    batch, size, out = (2, 8, 24) if sizes == "tiny" else (64, 32, 224)
    params = dict(batch=batch, input=size, canvas=out, scale=1.4, dtype_note="gradients: delta and scale")
    return [Case("masked_perturb", "autovp_trainable_scale_b64",
                 "AutoVP trainable scale: 32x32 -> 224x224 centred bilinear warp (learned scale 1.4), "
                 "+ sigmoid(delta) * mask, normalise after; grads for delta and scale", params,
                 _build(batch, size, out, 1.4), tier="default")]
