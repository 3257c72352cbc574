"""BLM / BLM+, Bayesian-guided label mapping (Cai et al. 2024): the ``presets.blm`` constructor."""
from __future__ import annotations

from typing import Optional

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from .recipe import IMAGENET_MEAN, IMAGENET_STD, Recipe, padding_recipe
from .source import takes_source


@takes_source()
def blm(num_target: int, *, input_size: Size = 32, output_size: Size = 224, num_source: int = 1000,
        plus: bool = False, topk: Optional[int] = None, laplace: float = 1.0, channels: int = 3, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, backend: str = "auto") -> Recipe:
    """BLM / BLM+ (Cai et al. 2024; tmlr-group/BayesianLM ``mapping.py``, ``reprogramming.py``).

    Input: ILM-VP's padding prompt ``N(pad(x) + sigmoid(θ) ⊙ M)`` (``PaddingVR``: the image and the
    mask's hole at ``int((H - h + 1) / 2)``, θ = 0 at start). Output:
    ``omega = bayesian_mapping(D, laplace)``: ``P = D / (D.sum(1) + λ)``, ``omega = P / P.sum(0)``, with
    ``D`` the argmax counts (BLM) or the summed top-``topk`` probabilities (BLM+) of the epoch;
    output ``out = logits @ omega``, ``omega`` re-estimated after every epoch. Defaults as the
    original's ``cfg.py``: ``λ = 1``, and for BLM+ ``topk = int(0.15 · T)`` (at least 1; the original's
    ``int(len(class_names) · topk_ratio)``, which would be 0 below 7 classes).

    Deliberate differences: a target column of ``P`` that sums to 0 (no sample of that class counted,
    e.g. with ``λ = 0`` and never-predicted sources) gives ``ω = 0`` where the original divides 0/0
    (NaN); ``torch.topk``'s order among tied probabilities is implementation-defined (both codes use it);
    the original gathers the counts in a separate pass before each epoch (``Reprogrammer`` gathers them
    while training, or ``LabelMapping.fit`` on a pre-pass, as the original).
    """
    if plus:
        topk = max(1, int(0.15 * num_target)) if topk is None else topk
        mapping = LabelMapping(num_source, num_target, "bayesian_plus", topk=topk, laplace=laplace, backend=backend)
    else:
        mapping = LabelMapping(num_source, num_target, "bayesian", laplace=laplace, backend=backend)
    return padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, backend=backend)
