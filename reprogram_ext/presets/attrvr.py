"""AttrVR (Cai et al. 2025, tmlr-group/AttrVR): the ``presets.attrvr`` constructor."""
from __future__ import annotations

import torch

from ..nn.attribute_mapping import AttributeMapping
from ..nn.layer_args import Size
from .clip_constants import CLIP_LOGIT_SCALE, CLIP_MEAN, CLIP_STD
from .recipe import Recipe, padding_recipe
from .source import takes_source


@takes_source()
def attrvr(descriptive: torch.Tensor, distinctive: torch.Tensor, *, input_size: Size = 192, output_size: Size = 224,
           topk: int = 3, lam: float = 0.5, channels: int = 3, mean=CLIP_MEAN, std=CLIP_STD,
           logit_scale: float = CLIP_LOGIT_SCALE, backend: str = "auto") -> Recipe:
    """AttrVR: padding prompt into CLIP and attribute-based scores, as tmlr-group/AttrVR's code does
    (``experiments/fs_attrvr.py``, ``methods/vp.py``, ``tools.py``; tmlr-group/AttrVR could not be
    read from here, so these were read in the first author's repository caichengyi/AttrVR).

    Input (``nn.PaddingPrompt``, its ``PaddingVR``): ``N(pad(x) + sigmoid(δ) ⊙ M)``, the 192² image
    at ``int((224 − 192 + 1)/2) = 16``, ``M`` = 1 on the border, ``δ = 0`` at the start, CLIP's
    normalisation.

    Output (``nn.AttributeMapping``, its ``getLogits``): ``λ·s_des + (1 − λ)·s_dist`` with
    ``s[b, t]`` the mean of the ``topk`` (k = 3) largest ``exp(s)·cos(f_b, a_{t, j})`` over the
    ``m`` (20) attribute embeddings of class ``t``; ``descriptive`` / ``distinctive`` ``[T, m, D]``
    (the original stacks them ``[m, T, D]``: pass ``.transpose(0, 1)``), λ = 0.5 (its ``--alpha``),
    ``s`` the frozen CLIP's logit scale (its clamp to ``[0, 4.6052]`` after each step does not
    change a frozen ln 100). The source model is CLIP's image encoder. The original trains with
    cross-entropy, SGD lr 40, momentum 0.9, cosine over all steps, fp16 autocast.

    Deliberate differences from the original code: the attribute texts (``m`` sentences of at
    least 20 characters drawn per class, with replacement when fewer) and their embeddings are
    the caller's; the data pipeline (bicubic resize to 192, ``RandomResizedCrop``, flip) is the
    caller's; on tied similarities the original's ``torch.sort`` picks an implementation-defined
    order for the gradient, ours sends it to the lower attribute index first.
    """
    mapping = AttributeMapping(descriptive, distinctive, topk=topk, lam=lam, logit_scale=logit_scale, backend=backend)
    return padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, backend=backend)
