"""ILM-VP (Chen et al. 2023): the ``presets.ilm_vp`` constructor."""
from __future__ import annotations

from typing import Optional

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe, padding_recipe
from .source import takes_source


@takes_source()
def ilm_vp(num_target: int, *, input_size: Size = 32, output_size: Size = 224, num_source: int = 1000,
           resize: Optional[Size] = None, channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, k: int = 1,
           backend: str = "auto") -> Recipe:
    """ILM-VP (Chen et al. 2023): padding prompt ``N(pad(x) + sigmoid(θ) ⊙ M)`` and iterative label mapping.

    Output: ``out[:, t] = logits[:, index[t]]`` with ``index = frequency_mapping(D, k)`` recomputed
    after every epoch from the counts ``D`` gathered while training (``Reprogrammer.forward(x, target)``
    and ``Reprogrammer.end_epoch()``). ``resize`` enlarges the input before padding.
    """
    mapping = LabelMapping(num_source, num_target, "iterative", k=k, backend=backend)
    return padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, resize, backend)
