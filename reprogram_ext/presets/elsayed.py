"""Adversarial reprogramming (Elsayed et al. 2019): the ``presets.elsayed`` constructor."""
from __future__ import annotations

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe, padding_recipe
from .source import takes_source


@takes_source()
def elsayed(num_target: int, *, input_size: Size = 28, output_size: Size = 224, num_source: int = 1000,
            channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, backend: str = "auto") -> Recipe:
    """Adversarial reprogramming (Elsayed et al. 2019, the paper: no official code): ``N(pad(x) + tanh(W ⊙ M))``.

    ``tanh(W ⊙ M) = M ⊙ tanh(W)`` for the binary mask since ``tanh(0) = 0``. Output: target ``t`` is
    source class ``t`` (``out = logits[:, :T]``), the paper's hard-coded mapping.

    Differences from the paper: it trains ``-log P(h_g(y) | X_adv) + λ ‖W‖²_F``; the weight penalty is
    left to the optimiser's ``weight_decay`` (``2λ``); the image sits at ``(H - h + 1) // 2`` (the
    paper says "centre").
    """
    mapping = LabelMapping(num_source, num_target, "identity", backend=backend)
    return padding_recipe("tanh", mapping, input_size, output_size, channels, mean, std, backend=backend)
