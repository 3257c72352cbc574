"""One constructor per published reprogramming method, returning configured layers (a ``Recipe``).

Each recipe pairs an input transformation with a label mapping; ``recipe.reprogrammer(model)``
wraps a frozen source model with them. Formulas (``N`` = per-channel normalisation with the source
model's mean/std, ``M`` = 1 on the prompt region and 0 over the placed input):

=============  ==============================================  =====================================
method         input transformation (the original's default)   output mapping
=============  ==============================================  =====================================
ILM-VP         ``N(pad(x) + sigmoid(θ) ⊙ M)``                  iterative frequency mapping (each epoch)
Elsayed        ``N(pad(x) + tanh(W ⊙ M))``                     identity (first T source classes)
BAR            ``pad(x) + tanh(W)`` (its mask is all ones)     6 sources per target, mean of probabilities
Bahng          ``x + M ⊙ δ`` (pad border / patch / full)       identity (or any LabelMapping method)
AutoVP         ``N(pad(resize(x, int(s·h))) + sigmoid(δ) ⊙ M)``  fully connected; or a learned scale
SMM            ``N(resize(x)) + δ ⊙ up_f(f_mask(x))``          iterative frequency mapping
BLM / BLM+     ``N(pad(x) + sigmoid(θ) ⊙ M)``                  Bayesian ω from argmax / top-k counts
Voice2Series   ``segments(x) + dropout(θ)`` on 16000 samples   contiguous k-to-1, mean of probabilities
=============  ==============================================  =====================================

Each constructor lives in its own module (``presets/<method>.py``) whose docstring names the
original repository and lists every deliberate difference (docs/methods/<method>.md). A ``Recipe``
is the 2-tuple ``(input_transform, output_mapping)``; ``recipe.loss`` is the original's loss where
it has its own (``None``: cross-entropy).

The vision presets also take ``source=`` (a timm or transformers model, ``processor=`` for the
latter's image processor): the canvas size, ``mean``/``std`` and ``num_source`` then come from the
model (``presets/source.py``, docs/source_models.md); arguments given explicitly win.
"""
from __future__ import annotations

from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe
from .source import SourceInfo, describe_source
from .ilm_vp import ilm_vp
from .elsayed import elsayed
from .bar import bar, bar_frequency_index, focal_loss
from .bahng import bahng
from .autovp import autovp
from .smm import smm
from .blm import blm
from .voice2series import voice2series
# The 2024-25 vision methods (docs/methods/):
from .lor_vp import lor_vp
from .evp import EVPOptimizer, evp
from .clip_constants import CLIP_LOGIT_SCALE, CLIP_MEAN, CLIP_STD
from .attrvr import attrvr
from .dvp import dvp

__all__ = ["Recipe", "ilm_vp", "elsayed", "bar", "bahng", "autovp", "smm", "blm", "voice2series",
           "IMAGENET_MEAN", "IMAGENET_STD", "SourceInfo", "describe_source",
           "bar_frequency_index", "focal_loss"]
__all__ += ["lor_vp", "evp", "attrvr", "dvp", "EVPOptimizer", "CLIP_MEAN", "CLIP_STD", "CLIP_LOGIT_SCALE"]
