"""Drop-in nn layers for model reprogramming (docs/nn.md).

Input side: ``PaddingPrompt`` (ILM-VP / Elsayed / BAR / AutoVP), ``AdditivePrompt`` (full-image
watermark, Bahng's pad and patch prompters), ``SampleSpecificMaskPrompt`` (SMM),
``TimeSeriesPrompt`` (Voice2Series), ``TrainableResizePrompt`` (AutoVP's learned scale), ``LowRankPrompt``
(LoR-VP), ``EVPPrompt`` (EVP), ``PaddingPromptBank`` (DVP), ``TokenCanvasPrompt`` (tokens_to_canvas),
``VocabMapping`` (vocab_map), ``EmbeddingPrompt`` (WARP). Output side: ``LabelMapping``,
``TextHeadMapping`` (CLIP), ``AttributeMapping`` (AttrVR), ``DescriptionMapping`` (DVP),
``ClassEmbeddingHead`` (WARP). Glue: ``Reprogrammer``.
"""
from .attribute_mapping import AttributeMapping
from .description_mapping import DescriptionMapping
from .embedding_prompt import ClassEmbeddingHead, EmbeddingPrompt, PromptedInputs
from .evp_prompt import EVPPrompt
from .label_mapping import LabelMapping
from .low_rank_prompt import LowRankPrompt
from .prompt_bank import PaddingPromptBank
from .prompts import AdditivePrompt, PaddingPrompt, TimeSeriesPrompt
from .reprogrammer import Reprogrammer
from .sample_specific import SampleSpecificMaskPrompt
from .text_head import TextHeadMapping
from .token_canvas import TokenCanvasPrompt
from .trainable_resize import TrainableResizePrompt
from .vocab_mapping import VocabMapping

__all__ = ["PaddingPrompt", "AdditivePrompt", "SampleSpecificMaskPrompt", "TimeSeriesPrompt", "LabelMapping",
           "TextHeadMapping", "Reprogrammer", "TrainableResizePrompt", "TokenCanvasPrompt", "EmbeddingPrompt",
           "PromptedInputs", "ClassEmbeddingHead", "VocabMapping", "LowRankPrompt", "EVPPrompt", "AttributeMapping",
           "PaddingPromptBank", "DescriptionMapping"]
