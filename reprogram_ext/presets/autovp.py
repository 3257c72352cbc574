"""AutoVP (Tsao et al. 2024): the ``presets.autovp`` constructor."""
from __future__ import annotations

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size, spatial_size
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe, padding_recipe
from .source import takes_source


@takes_source()
def autovp(num_target: int, *, input_size: Size = 32, output_size: Size = 224, scale: float = 1.0,
           num_source: int = 1000, mapping: str = "linear", k: int = 1, channels: int = 3, mean=IMAGENET_MEAN,
           std=IMAGENET_STD, backend: str = "auto") -> Recipe:
    """AutoVP (Tsao et al. 2024): ``N(pad(resize(x, s·h)) + sigmoid(δ) ⊙ M)`` with input scale ``s``.

    The input is resized to ``round(s·h) x round(s·w)`` and centred. Output ``mapping``: ``"linear"``
    (AutoVP's FullyMap, ``out = logits @ W + b``), or ``"frequency"`` / ``"iterative"`` with ``k``
    sources per target whose logits are averaged (``out[:, t] = mean_j logits[:, index[t, j]]``).
    """
    size = spatial_size(input_size, "input_size", "autovp", 2)
    if not scale > 0:
        raise ValueError(f"autovp: scale must be positive, got {scale!r}")
    resize = tuple(max(1, round(scale * s)) for s in size)
    if mapping == "linear":
        out_map = LabelMapping(num_source, num_target, "linear", bias=True, backend=backend)
    else:
        out_map = LabelMapping(num_source, num_target, mapping, k=k, reduce="mean", backend=backend)
    return padding_recipe("sigmoid", out_map, size, output_size, channels, mean, std, resize, backend)
