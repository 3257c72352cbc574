"""``Recipe`` (the trainable layers of one method) and the helpers the preset modules share."""
from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..nn.label_mapping import LabelMapping
from ..nn.prompts import PaddingPrompt
from ..nn.reprogrammer import Reprogrammer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Recipe(NamedTuple):
    """The trainable layers of one method: ``input_transform`` and ``output_mapping``."""

    input_transform: nn.Module
    output_mapping: LabelMapping

    def reprogrammer(self, model: nn.Module) -> Reprogrammer:
        """``Reprogrammer(model, input_transform, output_mapping)``: freezes ``model``."""
        return Reprogrammer(model, self.input_transform, self.output_mapping)


def padding_recipe(activation, mapping: LabelMapping, input_size, output_size, channels, mean, std, resize=None,
                   backend="auto") -> Recipe:
    prompt = PaddingPrompt(input_size, output_size, channels=channels, activation=activation, mean=mean, std=std,
                           resize=resize, backend=backend)
    return Recipe(prompt, mapping)
