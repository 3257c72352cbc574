"""``masked_perturb``: the fused input transformation of model reprogramming (docs/ops/masked_perturb.md)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from ... import _extension  # noqa: F401  (loads the compiled kernels when built)
from .args import canonicalize
from .backends import auto_order, refusal
from ...backend_registry import resolve_backend
from .reference import masked_perturb_reference

Size = Union[int, Sequence[int]]


def masked_perturb(
    x: torch.Tensor,
    delta: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    out_size: Optional[Size] = None,
    resize: Optional[Size] = None,
    resize_mode: str = "bilinear",
    offset=None,
    activation: str = "none",
    blend: str = "add",
    normalize: str = "after",
    mean=None,
    std=None,
    clamp: Optional[Tuple[float, float]] = None,
    mask_scale: int = 1,
    out_dtype: Optional[torch.dtype] = None,
    bank: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Place ``x`` on a canvas and add (or blend in) an activated, masked program ``delta``.

    Per output element ``(b, c, p)`` of ``[B, C, *out_size]``:

    1. ``u`` = the input placed at ``p`` (uint8 read as value/255, grey repeated over C, resized to
       ``resize`` with ``resize_mode`` as ``F.interpolate(align_corners=False)``, each copy at its
       ``offset``, overlapping copies add, 0 where no copy covers ``p``); with
       ``normalize="before"``: ``u = (u - mean_c) / std_c`` inside the placed region;
    2. ``a = act(delta[b?, c, p])`` (``none``/``tanh``/``sigmoid``), ``m = mask[b?, c?, p // mask_scale]``
       (1 without a mask);
    3. ``v = u + m*a`` (``blend="add"``) or ``v = (1 - m)*u + m*a`` (``blend="replace"``);
    4. ``v = min(max(v, lo), hi)`` when ``clamp=(lo, hi)``;
    5. ``out = (v - mean_c) / std_c`` when ``normalize="after"`` and mean/std are given, else ``v``.

    Shapes: ``x [B, Cx, *S_in]`` (1 or 2 spatial dims), ``delta [Cd, *S_out]`` or ``[B, Cd, *S_out]``,
    ``mask`` broadcastable to ``[B, C, *ceil(S_out / mask_scale)]``; ``C`` is ``Cd`` unless ``Cd == 1``.
    ``offset``: one int per spatial dim, or a list of such tuples (several copies); default one copy
    centred at ``(out - in + 1) // 2``. Output dtype: ``out_dtype``, else the autocast dtype under
    ``torch.autocast``, else ``delta.dtype``; math in float32 at least, in float64 (computed,
    normalised and accumulated, every gradient too) when the output is float64. Differentiable
    w.r.t. ``delta``, ``mask`` and floating ``x``. ``backend``: auto / cuda / triton / cpu / reference.

    Prompt bank: ``bank=True`` with ``delta [V, Cd, *S_out]`` applies each of the V programs to every
    sample without copying x: output ``[V, B, C, *S_out]``, ``delta``'s gradient ``[V, Cd, *S_out]``
    summed over the batch, the mask's and x's gradients summed over the V programs too.

    Example (ILM-VP: CIFAR 32x32 padded to 224x224, sigmoid program, ImageNet normalisation)::

        out = masked_perturb(x, theta, mask, activation="sigmoid",
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    """
    cp = canonicalize(
        x, delta, mask, out_size=out_size, resize=resize, resize_mode=resize_mode, offset=offset,
        activation=activation, blend=blend, normalize=normalize, mean=mean, std=std, clamp=clamp,
        mask_scale=mask_scale, out_dtype=out_dtype, bank=bank,
    )
    chosen = resolve_backend(backend, x.device, "masked_perturb_forward", refusal(cp), auto_order(cp, x.device.type))
    if chosen == "reference" or cp.x.shape[0] == 0 or cp.delta.shape[0] == 0:
        out = masked_perturb_reference(cp)
    else:
        if chosen == "triton":
            from . import triton_op as triton_kernels

            op = triton_kernels.forward_op()
        else:
            op = torch.ops.reprogram_ext.masked_perturb_forward
        out = op(cp.x, cp.delta, cp.mask, *cp.options.op_args(cp.norm))
    out = out.squeeze(-2) if cp.spatial_ndim == 1 else out
    return out.unflatten(0, (cp.delta.shape[0], cp.x.shape[0])) if bank else out
