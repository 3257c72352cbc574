"""AutoVP (Tsao et al. 2024, IBM/AutoVP): the ``presets.autovp`` constructor."""
from __future__ import annotations

import torch

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size, region_mask, spatial_size
from ..nn.prompts import PaddingPrompt
from ..nn.trainable_resize import TrainableResizePrompt
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe
from .source import takes_source


def fixed_scale_size(input_size, output_size, scale: float):
    """AutoVP's resized input size: ``min(int(h·scale), H)`` per dim (truncation, capped at the canvas)."""
    return tuple(max(1, min(int(n * scale), o)) for n, o in zip(input_size, output_size))


def shifted_mask(output_size, placed) -> torch.Tensor:
    """AutoVP's mask: 0 over ``placed`` starting at ``(H - r) // 2`` (its image starts at ``(H - r + 1) // 2``)."""
    origin = tuple((o - r) // 2 for o, r in zip(output_size, placed))
    return region_mask(tuple(output_size), [origin], tuple(placed), 0.0)


@takes_source()
def autovp(num_target: int, *, input_size: Size = 32, output_size: Size = 224, scale: float = 1.5,
           trainable_scale: bool = False, num_source: int = 1000, mapping: str = "linear", k: int = 1,
           channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, original_mask: bool = True,
           backend: str = "auto") -> Recipe:
    """AutoVP (Tsao et al. 2024; IBM/AutoVP ``auto_vp/programs.py``): ``N(pad(resize(x)) + sigmoid(δ) ⊙ M)``.

    Fixed scale (``trainable_scale=False``, the original's ``--train_resize 0``): the input is resized
    (bilinear) to ``r = min(int(scale·h), H)`` per dim, as the original's data pipeline does, and
    placed at ``(H - r + 1) // 2``; the original's mask is 0 from ``(H - r) // 2`` (``InputPadding``),
    one pixel up/left of the image when ``H - r`` is odd, so one image row/column gets the prompt and
    one border row/column gets none. That is reproduced; ``original_mask=False`` puts the mask over
    the image instead. ``trainable_scale=True``: AutoVP's ``Trainable_Resize``, a centred bilinear
    warp of the padded input by a learned scalar ``input_transform.scale`` (initial value ``scale``),
    see ``nn.TrainableResizePrompt``. ``scale=1.5`` is the original's default (``--img_scale``).

    Output ``mapping``: ``"linear"`` (AutoVP's default FullyMap, ``out = logits @ W + b``), or
    ``"frequency"`` / ``"iterative"`` with ``k`` sources per target whose logits are averaged
    (``out[:, t] = mean_j logits[:, index[t, j]]``).

    Deliberate differences: the FullyMap starts as the identity with zero bias (the original uses
    ``nn.Linear``'s random init); the resize is torch bilinear interpolation of the tensor (the
    original resizes in its torchvision data pipeline, which is the same for enlargements; for
    reductions torchvision antialiases).
    """
    size = spatial_size(input_size, "input_size", "autovp", 2)
    out = spatial_size(output_size, "output_size", "autovp", 2)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        raise ValueError(f"autovp: scale must be a positive finite number, got {scale!r}")
    if mapping == "linear":
        out_map = LabelMapping(num_source, num_target, "linear", bias=True, backend=backend)
    else:
        out_map = LabelMapping(num_source, num_target, mapping, k=k, reduce="mean", backend=backend)
    if trainable_scale:
        prompt = TrainableResizePrompt(size, out, scale=scale, channels=channels, activation="sigmoid", mean=mean,
                                       std=std, backend=backend)
        return Recipe(prompt, out_map)
    resize = fixed_scale_size(size, out, scale)
    prompt = PaddingPrompt(size, out, channels=channels, activation="sigmoid", mean=mean, std=std, resize=resize,
                           backend=backend)
    if original_mask:
        prompt.mask = shifted_mask(out, resize).to(prompt.mask)
    return Recipe(prompt, out_map)
