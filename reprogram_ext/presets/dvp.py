"""DVP (Cai et al. 2025, tmlr-group/DecoupledVP): the ``presets.dvp`` constructor."""
from __future__ import annotations

import torch

from ..nn.description_mapping import DescriptionMapping
from ..nn.layer_args import Size
from ..nn.prompt_bank import PaddingPromptBank
from .clip_constants import CLIP_LOGIT_SCALE, CLIP_MEAN, CLIP_STD
from .recipe import Recipe
from .source import takes_source


@takes_source()
def dvp(descriptions: torch.Tensor, *, input_size: Size = 192, output_size: Size = 224, topk: int = 3,
        channels: int = 3, mean=CLIP_MEAN, std=CLIP_STD, logit_scale: float = CLIP_LOGIT_SCALE,
        backend: str = "auto") -> Recipe:
    """Decoupled visual prompts (DVP-cse): one padding prompt per description group into CLIP,
    merged by the probabilistic reweighting matrix, as tmlr-group/DecoupledVP's code does
    (``experiments/fs_dvp_cse.py``, ``methods/vp.py``, ``tools.py``; tmlr-group/DecoupledVP could not
    be read from here, so these were read in the first author's repository caichengyi/DecoupledVP).

    Input (``nn.PaddingPromptBank``, V of its ``PaddingVR``): ``x_v = N(pad(x) + sigmoid(δ_v) ⊙ M)``
    for each group ``v``, the 192² image at ``int((224 − 192 + 1)/2) = 16``, ``δ_v = 0`` at the
    start, CLIP's normalisation; one ``masked_perturb(bank=True)`` call, output ``[V·B, 3, 224, 224]``.

    Output (``nn.DescriptionMapping``): ``fx[b, (t, v, j)] = exp(s)·cos(f(x_v)_b, e_{v, t, j})`` with
    ``descriptions [V, T, m, D]`` (V = 3 groups of generated causes, m = 20 per class, CLIP text
    embeddings), then ``out = fx @ ω_PRM``. ``ω`` starts at ``1/(V·m)`` on each class's own
    descriptions (``initialize_prm``) and after every epoch becomes, per class, the frequency with
    which its training samples had each description among their ``topk`` (k = 3) most similar
    (``calculate_prm``); the counts come from the training forward passes (``Reprogrammer`` calls
    ``update``; ``end_epoch()`` recomputes). The original's first epoch only estimates ``ω`` (no
    update of the prompts): run it with the model in training mode under ``torch.no_grad()``.
    The original trains with cross-entropy on ``out``, SGD lr 40, momentum 0.9, cosine over all
    steps (one optimizer per prompt, the same as one SGD on the bank), fp16 autocast.

    Deliberate differences from the original code: a class without training samples keeps the
    uniform ``1/(V·m)`` (the original divides 0 by 0, and sizes ``ω`` from the largest label seen);
    the description texts and their embeddings are the caller's; torch.topk's order on tied
    similarities is implementation-defined in both; the DVP-cls variant (k-means clusters of the
    descriptions, one prompt per cluster, summed masked logits) is not built.
    """
    mapping = DescriptionMapping(descriptions, topk=topk, logit_scale=logit_scale, backend=backend)
    prompt = PaddingPromptBank(input_size, output_size, num_prompts=mapping.num_groups, channels=channels,
                               mean=mean, std=std, backend=backend)
    return Recipe(prompt, mapping)
