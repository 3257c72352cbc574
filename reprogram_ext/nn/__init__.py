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
from .embedding_prompt import ClassEmbeddingHead, EmbeddingPrompt, PromptedInputs
from .vocab_mapping import VocabMapping

__all__ = ["PaddingPrompt", "AdditivePrompt", "SampleSpecificMaskPrompt", "TimeSeriesPrompt", "LabelMapping",
           "TextHeadMapping", "Reprogrammer",
           "TrainableResizePrompt"]
from .token_canvas import TokenCanvasPrompt  # noqa: E402  (tokens_to_canvas, docs/ops/tokens_to_canvas.md)
__all__ += ["TokenCanvasPrompt"]
__all__ += ["EmbeddingPrompt", "PromptedInputs", "ClassEmbeddingHead", "VocabMapping"]
