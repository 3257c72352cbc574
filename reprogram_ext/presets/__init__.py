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

from typing import NamedTuple, Optional

import torch
from torch import nn

from ..nn.layer_args import Size, spatial_size
from ..nn.label_mapping import LabelMapping
from ..nn.prompts import AdditivePrompt, PaddingPrompt, TimeSeriesPrompt
from ..nn.reprogrammer import Reprogrammer
from ..nn.sample_specific import SampleSpecificMaskPrompt
from .source import SourceInfo, describe_source, takes_source

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Recipe(NamedTuple):
    """The trainable layers of one method: ``input_transform`` and ``output_mapping``."""

    input_transform: nn.Module
    output_mapping: LabelMapping

    def reprogrammer(self, model: nn.Module) -> Reprogrammer:
        """``Reprogrammer(model, input_transform, output_mapping)``: freezes ``model``."""
        return Reprogrammer(model, self.input_transform, self.output_mapping)


def _padding_recipe(activation, mapping: LabelMapping, input_size, output_size, channels, mean, std, resize=None,
                    backend="auto") -> Recipe:
    prompt = PaddingPrompt(input_size, output_size, channels=channels, activation=activation, mean=mean, std=std,
                           resize=resize, backend=backend)
    return Recipe(prompt, mapping)


@takes_source()
def ilm_vp(num_target: int, *, input_size: Size = 32, output_size: Size = 224, num_source: int = 1000,
           resize: Optional[Size] = None, channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, k: int = 1,
           backend: str = "auto") -> Recipe:
    """ILM-VP (Chen et al. 2023): padding prompt ``N(pad(x) + sigmoid(θ) ⊙ M)`` and iterative label mapping.

    Output: ``out[:, t] = logits[:, index[t]]`` with ``index = frequency_mapping(D, k)`` recomputed
    after every epoch from the counts ``D`` gathered while training (``Reprogrammer.forward(x, target)``
    and ``Reprogrammer.end_epoch()``). ``resize`` enlarges the input before padding.
    """
    mapping = LabelMapping(num_source, num_target, "iterative", k=k, backend=backend)
    return _padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, resize, backend)


@takes_source()
def elsayed(num_target: int, *, input_size: Size = 28, output_size: Size = 224, num_source: int = 1000,
            channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, backend: str = "auto") -> Recipe:
    """Adversarial reprogramming (Elsayed et al. 2019): ``N(pad(x) + tanh(W ⊙ M))``, hard-coded mapping.

    ``tanh(W ⊙ M) = M ⊙ tanh(W)`` for the binary mask since ``tanh(0) = 0``. Output: target ``t`` is
    source class ``t`` (``out = logits[:, :T]``).
    """
    mapping = LabelMapping(num_source, num_target, "identity", backend=backend)
    return _padding_recipe("tanh", mapping, input_size, output_size, channels, mean, std, backend=backend)


@takes_source()
def bar(num_target: int, *, input_size: Size = 28, output_size: Size = 224, num_source: int = 1000, k: int = 1,
        channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, generator: Optional[torch.Generator] = None,
        backend: str = "auto") -> Recipe:
    """Black-box adversarial reprogramming (Tsai et al. 2020): ``N(pad(x) + sigmoid(W) ⊙ M)``.

    Output: random multi-label mapping, ``k`` distinct random sources per target, averaging the source
    probabilities: ``out[:, t] = mean_j softmax(logits)[:, index[t, j]]`` (train with
    ``mapped_cross_entropy(..., pre="softmax")``, the loss on ``log(out)``).
    """
    mapping = LabelMapping(num_source, num_target, "random", k=k, pre="softmax", reduce="mean", generator=generator,
                           backend=backend)
    return _padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, backend=backend)


@takes_source("image_size")
def bahng(num_target: int, *, image_size: Size = 224, kind: str = "pad", prompt_size: int = 30,
          random_location: bool = False, num_source: int = 1000, mapping: str = "identity", channels: int = 3,
          backend: str = "auto") -> Recipe:
    """Visual prompting (Bahng et al. 2022): ``x + M ⊙ δ`` on the already normalised model-size image.

    ``kind="pad"``: a learnable border ``prompt_size`` pixels wide (the paper's default: 30 on 224);
    ``kind="patch"``: a ``prompt_size`` square patch, fixed at the top-left or, with
    ``random_location=True``, at a random location per training step; ``kind="full"``: the whole image.
    Output: ``LabelMapping(method=mapping)`` (Bahng used CLIP's text head; for a classifier the identity).
    """
    prompt = AdditivePrompt(image_size, kind=kind, prompt_size=prompt_size, channels=channels,
                            random_location=random_location, backend=backend)
    return Recipe(prompt, LabelMapping(num_source, num_target, mapping, backend=backend))


@takes_source()
def autovp(num_target: int, *, input_size: Size = 32, output_size: Size = 224, scale: float = 1.0,
           num_source: int = 1000, mapping: str = "linear", k: int = 1, channels: int = 3, mean=IMAGENET_MEAN,
           std=IMAGENET_STD, backend: str = "auto") -> Recipe:
    """AutoVP (Tsao et al. 2024): ``N(pad(resize(x, s·h)) + sigmoid(δ) ⊙ M)`` with input scale ``s``.

    The input is resized to ``round(s·h) x round(s·w)`` and centred. Output ``mapping``: ``"linear"``
    (AutoVP's FullyMap, ``out = logits @ W + b``), or ``"frequency"`` / ``"iterative"`` with ``k``
    sources per target whose logits are averaged (``out[:, t] = mean_j logits[:, index[t, j]]``).
    """
    size = spatial_size(input_size, "input_size", "autovp", 2)
    if not scale > 0:
        raise ValueError(f"autovp: scale must be positive, got {scale!r}")
    resize = tuple(max(1, round(scale * s)) for s in size)
    if mapping == "linear":
        out_map = LabelMapping(num_source, num_target, "linear", bias=True, backend=backend)
    else:
        out_map = LabelMapping(num_source, num_target, mapping, k=k, reduce="mean", backend=backend)
    return _padding_recipe("sigmoid", out_map, size, output_size, channels, mean, std, resize, backend)


@takes_source()
def smm(num_target: int, *, input_size: Size = 32, output_size: Size = 224, mask_scale: int = 8,
        num_source: int = 1000, channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD, k: int = 1,
        backend: str = "auto") -> Recipe:
    """SMM (Cai et al. 2024): ``N(resize(x)) + δ ⊙ up_f(f_mask(N(resize(x))))``, iterative mapping.

    ``f_mask`` is a small ConvNet producing a ``channels``-channel mask at ``1/f`` resolution
    (``f = mask_scale``, 8 for 224 inputs), ``up_f`` patch-wise upsampling. Output: ILM (as ILM-VP).
    """
    prompt = SampleSpecificMaskPrompt(input_size, output_size, channels=channels, mask_scale=mask_scale, mean=mean,
                                      std=std, backend=backend)
    return Recipe(prompt, LabelMapping(num_source, num_target, "iterative", k=k, backend=backend))


@takes_source()
def blm(num_target: int, *, input_size: Size = 32, output_size: Size = 224, num_source: int = 1000,
        plus: bool = False, topk: int = 3, laplace: float = 1.0, channels: int = 3, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, backend: str = "auto") -> Recipe:
    """BLM / BLM+ (Cai et al. 2024): padding prompt and Bayesian-guided label mapping.

    ``omega = bayesian_mapping(D, laplace)``: ``P = D / (D.sum(1) + λ)``, ``omega = P / P.sum(0)``, with
    ``D`` the argmax counts (BLM) or the summed top-``topk`` probabilities (BLM+) of the epoch;
    output ``out = logits @ omega``, ``omega`` re-estimated after every epoch.
    """
    if plus:
        mapping = LabelMapping(num_source, num_target, "bayesian_plus", topk=topk, laplace=laplace, backend=backend)
    else:
        mapping = LabelMapping(num_source, num_target, "bayesian", laplace=laplace, backend=backend)
    return _padding_recipe("sigmoid", mapping, input_size, output_size, channels, mean, std, backend=backend)


def voice2series(num_target: int, *, input_length: int, num_source: int, output_length: int = 16000,
                 copies: int = 1, k: int = 1, mapping: str = "random", channels: int = 1,
                 generator: Optional[torch.Generator] = None, backend: str = "auto") -> Recipe:
    """Voice2Series (Yang et al. 2021): ``tile(x) + M ⊙ θ`` on a 16000-sample canvas, k-to-1 mapping.

    ``copies`` back-to-back copies of the series, centred; ``M = 0`` where they lie. Output:
    ``out[:, t] = mean_j softmax(logits)[:, index[t, j]]`` with ``k`` sources per target (``mapping``:
    ``"random"`` or ``"identity"``, i.e. sources ``t*k .. t*k+k-1``); loss on ``log(out)``.
    """
    prompt = TimeSeriesPrompt(input_length, output_length, channels=channels, copies=copies, backend=backend)
    out_map = LabelMapping(num_source, num_target, mapping, k=k, pre="softmax", reduce="mean",
                           **({"generator": generator} if mapping == "random" else {}), backend=backend)
    return Recipe(prompt, out_map)


__all__ = ["Recipe", "ilm_vp", "elsayed", "bar", "bahng", "autovp", "smm", "blm", "voice2series",
           "IMAGENET_MEAN", "IMAGENET_STD", "SourceInfo", "describe_source"]

# Text presets (SPEC §7), one module each.
from .neekhara2019 import neekhara2019  # noqa: E402
from .r2dl import r2dl  # noqa: E402
from .warp import warp  # noqa: E402

__all__ += ["neekhara2019", "r2dl", "warp"]
