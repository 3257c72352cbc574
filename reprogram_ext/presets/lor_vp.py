"""LoR-VP (Jin et al. 2025, arXiv 2502.00896; code: jincan333/LoR-VP): the ``presets.lor_vp`` constructor."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from ..nn.layer_args import Size
from ..nn.low_rank_prompt import LowRankPrompt
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe
from .source import takes_source

LOR_VP_MAPPINGS = ("lp", "fm")


@takes_source()
def lor_vp(num_target: int, *, feature_dim: Optional[int] = None, input_size: Size = 224, output_size: Size = 224,
           rank: int = 4, mapping: str = "lp", num_source: int = 1000, channels: int = 3, mean=IMAGENET_MEAN,
           std=IMAGENET_STD, init: Sequence[str] = ("zero", "normal"), backend: str = "auto") -> Recipe:
    """LoR-VP: ``N(resize(x) + B_c @ A_c)`` and a linear-probe head, as jincan333/LoR-VP's code does.

    Input (``nn.LowRankPrompt``): per channel ``c`` a rank-``rank`` program ``B_c [H, r] @ A_c [r, W]``
    (the original's ``left_bar`` / ``right_bar``, ``bar_width = 4``) added to the whole input resized
    to the canvas, then normalised. Initialisation as the original's default ``init_method
    "zero,normal"``: ``B = 0``, ``A ~ N(0, 0.01²)`` (so training starts from ``delta = 0``).

    Output ``mapping``:
      - ``"lp"`` (the original's default ``downstream_mapping``): a fresh ``nn.Linear(feature_dim,
        num_target)`` (torch's default init) that replaces the source model's classifier. The source
        model must then return features: build it without its head (timm ``num_classes=0``,
        torchvision ``model.fc = nn.Identity()``); ``feature_dim`` is the head's input size;
      - ``"fm"``: a fresh ``nn.Linear(num_source, num_target)`` on the source logits.
    The original trains with plain cross-entropy (its ``log_softmax`` before ``F.cross_entropy``
    does not change the loss), SGD lr 0.02, momentum 0.9, cosine schedule, fp16 autocast.

    Normalisation: the original uses none for its ImageNet-21k models (``*_21k``), mean = std = 0.5
    for its other ViTs and the ImageNet mean/std otherwise (its default network, ResNet-18): the
    default here is the ImageNet mean/std; ``source=`` takes the model's own (a timm 21k model's
    ``pretrained_cfg`` says mean 0, std 1, i.e. none).

    Deliberate differences from the original code:
      - the original resizes the PIL image to ``input_size`` in its data pipeline (PIL bilinear,
        antialiased); here a tensor of ``input_size`` is resized to ``output_size`` inside the layer
        as ``F.interpolate(bilinear, align_corners=False)`` without antialias (none when
        ``input_size == output_size``, the original's setting of 224);
      - the original's program is square (``bar_height`` for both sides); here ``H x W`` may differ;
      - the original's ``ilm`` / ``flm`` / ``origin`` mappings are not offered (use ``LabelMapping``).
    """
    if mapping not in LOR_VP_MAPPINGS:
        raise ValueError(f"lor_vp: mapping must be one of {LOR_VP_MAPPINGS}, got {mapping!r}")
    if mapping == "lp":
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"lor_vp: mapping='lp' needs feature_dim, the source model's feature size (a positive "
                             f"int), got {feature_dim!r}")
        head = nn.Linear(feature_dim, num_target)
    else:
        head = nn.Linear(num_source, num_target)
    prompt = LowRankPrompt(input_size, output_size, rank=rank, channels=channels, mean=mean, std=std, init=init,
                           backend=backend)
    return Recipe(prompt, head)
