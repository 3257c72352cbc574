"""One constructor per published reprogramming method, returning configured layers (a ``Recipe``).

Each recipe pairs an input transformation with a label mapping; ``recipe.reprogrammer(model)``
wraps a frozen source model with them. Formulas (``N`` = per-channel normalisation with the source
model's mean/std, ``M`` = 1 on the prompt region and 0 over the placed input):

=============  ==========================================  =========================================
method         input transformation                        output mapping
=============  ==========================================  =========================================
ILM-VP         ``N(pad(x) + sigmoid(θ) ⊙ M)``              iterative frequency mapping (each epoch)
Elsayed        ``N(pad(x) + tanh(W ⊙ M))``                 identity (first T source classes)
BAR            ``N(pad(x) + sigmoid(W) ⊙ M)``              random k-to-1, mean of probabilities
Bahng          ``x + M ⊙ δ`` (pad border / patch / full)   identity (or any LabelMapping method)
AutoVP         ``N(pad(resize(x, s·h)) + sigmoid(δ) ⊙ M)``  fully connected (or frequency/iterative)
SMM            ``N(resize(x)) + δ ⊙ up_f(f_mask(x))``      iterative frequency mapping
BLM / BLM+     ``N(pad(x) + sigmoid(θ) ⊙ M)``              Bayesian ω from argmax / top-k counts
Voice2Series   ``tile(x) + M ⊙ θ`` on 16000 samples        k-to-1, mean of probabilities
=============  ==========================================  =========================================

The vision presets also take ``source=`` (a timm or transformers model, ``processor=`` for the
latter's image processor): the canvas size, ``mean``/``std`` and ``num_source`` then come from the
model (``presets/source.py``, docs/source_models.md); arguments given explicitly win.
"""
from __future__ import annotations

from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe
from .source import SourceInfo, describe_source
from .ilm_vp import ilm_vp
from .elsayed import elsayed
from .bar import bar
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
           "IMAGENET_MEAN", "IMAGENET_STD", "SourceInfo", "describe_source"]
__all__ += ["lor_vp", "evp", "attrvr", "dvp", "EVPOptimizer", "CLIP_MEAN", "CLIP_STD", "CLIP_LOGIT_SCALE"]
