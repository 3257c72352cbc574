"""BLM / BLM+, Bayesian-guided label mapping (Cai et al. 2024): the ``presets.blm`` constructor."""
from __future__ import annotations

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe, padding_recipe
from .source import takes_source


@takes_source()
def blm(num_target: int, *, input_size: Size = 32, output_size: Size = 224, num_source: int = 1000,
        plus: bool = False, topk: int = 3, laplace: float = 1.0, channels: int = 3, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, backend: str = "auto") -> Recipe:
    """BLM / BLM+ (Cai et al. 2024): padding prompt and Bayesian-guided label mapping.

    ``omega = bayesian_mapping(D, laplace)``: ``P = D / (D.sum(1) + λ)``, ``omega = P / P.sum(0)``, with
    ``D`` the argmax counts (BLM) or the summed top-``topk`` probabilities (BLM+) of the epoch;
    output ``out = logits @ omega``, ``omega`` re-estimated after every epoch.
    """
    if plus:
        mapping = LabelMapping(num_source, num_target, "bayesian_plus", topk=topk, laplace=laplace, backend=backend)
    else:
        mapping = LabelMapping(num_source, num_target, "bayesian", laplace=laplace, backend=backend)
    return padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, backend=backend)
