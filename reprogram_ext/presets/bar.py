"""BAR, black-box adversarial reprogramming (Tsai et al. 2020): the ``presets.bar`` constructor."""
from __future__ import annotations

from typing import Optional

import torch

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe, padding_recipe
from .source import takes_source


@takes_source()
def bar(num_target: int, *, input_size: Size = 28, output_size: Size = 224, num_source: int = 1000, k: int = 1,
        channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, generator: Optional[torch.Generator] = None,
        backend: str = "auto") -> Recipe:
    """Black-box adversarial reprogramming (Tsai et al. 2020): ``N(pad(x) + sigmoid(W) ⊙ M)``.

    Output: random multi-label mapping, ``k`` distinct random sources per target, averaging the source
    probabilities: ``out[:, t] = mean_j softmax(logits)[:, index[t, j]]`` (train with
    ``mapped_cross_entropy(..., pre="softmax")``, the loss on ``log(out)``).
    """
    mapping = LabelMapping(num_source, num_target, "random", k=k, pre="softmax", reduce="mean", generator=generator,
                           backend=backend)
    return padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, backend=backend)
