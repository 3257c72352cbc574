"""SMM, sample-specific masks (Cai et al. 2024): the ``presets.smm`` constructor."""
from __future__ import annotations

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from ..nn.sample_specific import SampleSpecificMaskPrompt
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe
from .source import takes_source


@takes_source()
def smm(num_target: int, *, input_size: Size = 32, output_size: Size = 224, mask_scale: int = 8,
        num_source: int = 1000, channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, k: int = 1,
        backend: str = "auto") -> Recipe:
    """SMM (Cai et al. 2024): ``N(resize(x)) + δ ⊙ up_f(f_mask(N(resize(x))))``, iterative mapping.

    ``f_mask`` is a small ConvNet producing a ``channels``-channel mask at ``1/f`` resolution
    (``f = mask_scale``, 8 for 224 inputs), ``up_f`` patch-wise upsampling. Output: ILM (as ILM-VP).
    """
    prompt = SampleSpecificMaskPrompt(input_size, output_size, channels=channels, mask_scale=mask_scale, mean=mean,
                                      std=std, backend=backend)
    return Recipe(prompt, LabelMapping(num_source, num_target, "iterative", k=k, backend=backend))
