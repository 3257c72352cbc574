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
    """ILM-VP (Chen et al. 2023; OPTML-Group/ILM-VP ``models/visual_prompt.py``): ``N(pad(x) + sigmoid(θ) ⊙ M)``.

    ``ExpansiveVisualPrompt``: the image at ``int((H - h + 1) / 2)`` in both dims, the mask padded
    with ones by the same amounts (its hole exactly over the image), θ = 0 at start, ImageNet
    normalisation after the sum.

    Output: ``out[:, t] = logits[:, index[t]]`` with ``index = frequency_mapping(D, k)`` recomputed
    after every epoch from the counts ``D`` gathered while training (``Reprogrammer.forward(x, target)``
    and ``Reprogrammer.end_epoch()``). ``resize`` enlarges the input before padding (the original
    resizes in its data pipeline: 128 x 128 for the non-CIFAR datasets).

    Deliberate differences: the original recomputes the mapping from a separate no-grad pass over
    the training data before each epoch; ``Reprogrammer`` counts during the training pass itself
    (``LabelMapping.fit`` on a pre-pass gives the original's order). Ties in the greedy mapping go
    to the first maximum in row-major order, as the original's ``argmax``.
    """
    mapping = LabelMapping(num_source, num_target, "iterative", k=k, backend=backend)
    return padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, resize, backend)
