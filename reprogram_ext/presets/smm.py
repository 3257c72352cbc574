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
    """SMM (Cai et al. 2024; tmlr-group/SMM ``instance_model.py``): ``N(r(x)) + δ ⊙ up_f(f_mask(N(r(x))))``.

    ``f_mask`` is a small ConvNet producing a ``channels``-channel mask at ``1/f`` resolution
    (``f = mask_scale``, 8 for 224 inputs), ``up_f`` patch-wise upsampling. Output: ILM (as ILM-VP).
    As the original's ``AttributeNet`` (5 layers, for ResNets): 3x3 conv + BatchNorm + ReLU blocks of
    8, 16, 32, 64 channels, a 2x2 max-pool after the first ``log2(f)`` of them, a final 3x3 conv to 3
    mask channels, no activation; δ = 0 at start, no activation on δ.

    Deliberate differences: the original resizes with PIL in its data pipeline (training: to
    ``H + 32`` then a random ``H`` crop and flip); here the tensor is resized with bilinear
    interpolation. Pools use ``ceil_mode`` (the same for sizes divisible by ``f``). The original's
    ViT setting (6 layers, 384 input) is ``SampleSpecificMaskPrompt(hidden=(8, 16, 32, 64, 128))``.
    """
    prompt = SampleSpecificMaskPrompt(input_size, output_size, channels=channels, mask_scale=mask_scale, mean=mean,
                                      std=std, backend=backend)
    return Recipe(prompt, LabelMapping(num_source, num_target, "iterative", k=k, backend=backend))
