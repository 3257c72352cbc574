"""BAR, black-box adversarial reprogramming (Tsai et al. 2020, yunyuntsai/Black-box-Adversarial-Reprogramming).

The ``presets.bar`` constructor (white-box form: the gradient comes from autograd), the original's
frequency-based multi-label mapping (``bar_frequency_index``) and its focal loss (``focal_loss``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size, spatial_size
from ..blackbox.bar import bar_focal_loss, bar_frequency_mapping
from ..nn.prompts import PaddingPrompt
from .recipe import Recipe
from .source import takes_source


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 4.0, alpha: float = 0.8) -> torch.Tensor:
    """The original's ``multi_focal_loss(4, 0.8, y, p)`` on mapped probabilities ``probs [B, T]``, batch-summed.

    ``p = clip(probs, 1e-7, 1 - 1e-7)``, per class ``y_t = y·p + (1 - y)(1 - p)``,
    ``α_t = y·α + (1 - y)(1 - α)``, ``fl = α_t (1 - y_t)^γ (-log y_t)``, averaged over the ``T``
    classes and summed over the batch (the original's ``tf.gradients`` of the per-sample losses):
    ``blackbox.bar.bar_focal_loss(..., reduction="sum")``.
    """
    return bar_focal_loss(probs, target, gamma, alpha, reduction="sum")


def bar_frequency_index(probs: torch.Tensor, target: torch.Tensor, num_target: int, k: int = 6,
                        top: int = 30) -> torch.Tensor:
    """The original's multi-label mapping (``mapping_func.freq_idx_search`` + ``freq_mapping``): ``index [T, k]``.

    From source probabilities ``probs [N, S]`` of a pass over the training data (before training):
    for each target class ``c``, ``A_c[s]`` = the mean of ``probs[n, s]`` over the class-``c``
    samples whose top-``top`` sources include ``s`` (0 if none); ``L_c`` = the ``top`` sources with the
    largest ``A_c`` (descending). Source ``s`` at rank ``i`` of ``L_c`` is kept for ``c`` unless another
    class ranks it earlier, or at the same rank with an ``A`` at least as large (the original's rule
    for its two classes, applied to every pair). Each class keeps its first ``k`` kept sources;
    their list, class after class, is then read as a ``[k, T]`` array (the original's
    ``reshape([B, mlm_num, 2])``), so target ``t`` averages ``flat[j·T + t]``, ``j < k`` — for
    ``T > 1`` that mixes the classes' lists, exactly as the original does:
    ``blackbox.bar.bar_frequency_mapping(..., layout="original")``.
    """
    return bar_frequency_mapping(probs, target, num_target, k=k, top=top, layout="original")


def glorot_scale(output_size) -> float:
    """TF's default ``glorot_uniform`` bound for the original's ``[1, H, W, 3]`` program, ``sqrt(6 / (H·W + 3·H))``.
    """
    H, W = output_size
    return math.sqrt(6.0 / (H * W + 3 * H))


@takes_source()
def bar(num_target: int, *, input_size: Size = 200, output_size: Size = 299, num_source: int = 1000, k: int = 6,
        channels: int = 3, mean=None, std=None, activation: str = "tanh", prompt_over_input: bool = True,
        mapping: str = "random", generator: Optional[torch.Generator] = None, backend: str = "auto",
        black_box: bool = False, **black_box_options):
    """BAR (Tsai et al. 2020; yunyuntsai/Black-box-Adversarial-Reprogramming ``adv_reprogramming.py``), white-box form.

    Input: ``pad(x) + tanh(W ⊙ M)``: a ``200 x 200`` (grey, repeated to 3 channels) input at
    ``ceil(299/2) - 100 = 50`` in a ``299 x 299`` canvas. The original's ``utils.gen_mask()`` returns
    all ones (its loop that would clear the inner triangle never runs), so the program covers the
    input too: ``prompt_over_input=True`` reproduces that, ``False`` clears it over the input. The
    original also computes ``(X - 0.5) / 0.5`` per channel but feeds the network the un-normalised
    sum (the normalised channels are discarded), so by default nothing is normalised (``mean``/``std``
    normalise afterwards when given). ``W`` starts Glorot-uniform (TF's default for its ``[1, 299,
    299, 3]`` variable, ``glorot_scale``).

    Output: ``k = 6`` sources per target, ``out[:, t] = mean_j softmax(logits)[:, index[t, j]]``
    (train with ``recipe.loss``, or ``mapped_cross_entropy(..., pre="softmax")``). The original picks
    the sources from a pass over the training data: ``bar_frequency_index(probs, target, T)``, then
    ``recipe.output_mapping.index.copy_(...)``; until then the ``mapping="random"`` sources stand in.
    ``recipe.loss(out, target)``: the original's focal loss (``focal_loss``, γ = 4, α = 0.8).
    ``black_box=True`` returns ``presets.bar_black_box(...)`` with these arguments and its own options
    (``q``, ``beta``, ``lr``, ``loss``, ``clip``, ...): the original trained through queries only.

    Deliberate differences: the original's source model is a 1001-class slim Inception-v3 whose
    softmax is taken over 1001 classes before the background class is dropped; here the softmax is
    over the model's own classes. Its optimiser (zeroth-order estimates) is not part of this
    white-box preset. BlackVIP's re-implementation (changdaeoh/BlackVIP ``trainers/reprogramming.py``,
    ``visual_prompters.PROGRAM``) differs: a CLIP source model with its text head as the mapping,
    ``sigmoid(W) ⊙ M`` with ``M = 0`` over the input (placed at ``frame//2 - size//2``), ``W ~ N(0, 1)``,
    CLIP's mean/std applied after the sum, and its own ``FocalLoss``; see docs/methods/bar.md.
    """
    if black_box:  # the original's zeroth-order training: presets.bar_black_box (q, beta, lr, loss, clip, ...)
        from .blackbox import bar_black_box

        return bar_black_box(num_target, input_size=input_size, output_size=output_size, num_source=num_source,
                             k=k, channels=channels, mean=mean, std=std, activation=activation,
                             prompt_over_input=prompt_over_input, generator=generator, backend=backend,
                             **({"mapping": mapping} if mapping != "random" else {}), **black_box_options)
    if black_box_options:
        raise TypeError(f"bar: {sorted(black_box_options)} are options of black_box=True only")
    size = spatial_size(input_size, "input_size", "bar", 2)
    out = spatial_size(output_size, "output_size", "bar", 2)
    prompt = PaddingPrompt(size, out, channels=channels, activation=activation, mean=mean, std=std,
                           prompt_over_input=prompt_over_input, init="uniform", init_scale=glorot_scale(out),
                           backend=backend)
    out_map = LabelMapping(num_source, num_target, mapping, k=k, pre="softmax", reduce="mean",
                           **({"generator": generator} if mapping == "random" else {}), backend=backend)
    return Recipe(prompt, out_map, focal_loss)
