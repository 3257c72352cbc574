"""``Recipe`` (the trainable layers of one method) and the helpers the preset modules share."""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from torch import nn

from ..nn.label_mapping import LabelMapping
from ..nn.prompts import PaddingPrompt
from ..nn.reprogrammer import Reprogrammer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _RecipeLayers(NamedTuple):
    input_transform: nn.Module
    output_mapping: LabelMapping


class Recipe(_RecipeLayers):
    """The trainable layers of one method, ``(input_transform, output_mapping)``, and its ``loss``.

    A 2-tuple (``prompt, mapping = recipe``). ``recipe.loss(output, target) -> scalar`` is the
    original's training loss on the mapped output with its regularisers (Voice2Series: cross-entropy
    plus an L2 penalty on the program; BAR: its focal loss); ``None`` means plain
    ``F.cross_entropy(output, target)``.
    """

    def __new__(cls, input_transform: nn.Module, output_mapping: LabelMapping, loss: Optional[Callable] = None):
        self = super().__new__(cls, input_transform, output_mapping)
        self.loss = loss
        return self

    def reprogrammer(self, model: nn.Module) -> Reprogrammer:
        """``Reprogrammer(model, input_transform, output_mapping)``: freezes ``model``."""
        return Reprogrammer(model, self.input_transform, self.output_mapping)


def padding_recipe(activation, mapping: LabelMapping, input_size, output_size, channels, mean, std, resize=None,
                   backend="auto") -> Recipe:
    prompt = PaddingPrompt(input_size, output_size, channels=channels, activation=activation, mean=mean, std=std,
                           resize=resize, backend=backend)
    return Recipe(prompt, mapping)
