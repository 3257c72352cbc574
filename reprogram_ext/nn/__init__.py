"""Drop-in nn layers for model reprogramming (docs/nn.md).

Input side: ``PaddingPrompt`` (ILM-VP / Elsayed / BAR / AutoVP), ``AdditivePrompt`` (full-image
watermark, Bahng's pad and patch prompters), ``SampleSpecificMaskPrompt`` (SMM),
``TimeSeriesPrompt`` (Voice2Series). Output side: ``LabelMapping``, ``TextHeadMapping`` (CLIP). Glue: ``Reprogrammer``.
"""
from .label_mapping import LabelMapping
from .prompts import AdditivePrompt, PaddingPrompt, TimeSeriesPrompt
from .reprogrammer import Reprogrammer
from .sample_specific import SampleSpecificMaskPrompt
from .text_head import TextHeadMapping
from .trainable_resize import TrainableResizePrompt
from .low_rank_prompt import LowRankPrompt
from .evp_prompt import EVPPrompt
from .attribute_mapping import AttributeMapping
from .prompt_bank import PaddingPromptBank
from .description_mapping import DescriptionMapping

__all__ = ["PaddingPrompt", "AdditivePrompt", "SampleSpecificMaskPrompt", "TimeSeriesPrompt", "LabelMapping",
           "TextHeadMapping", "Reprogrammer",
           "TrainableResizePrompt"]
__all__ += ["LowRankPrompt", "EVPPrompt", "AttributeMapping", "PaddingPromptBank", "DescriptionMapping"]
