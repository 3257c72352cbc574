"""``Reprogrammer``: a frozen source model between a trainable input transformation and label mapping."""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import nn


def _logits_of(output) -> torch.Tensor:
    """The logits tensor of a model's output: the tensor itself, or an output object's ``.logits``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"Reprogrammer: the model returned {type(output).__name__}; expected a tensor of source "
                    "logits or an output object with a .logits tensor")


class Reprogrammer(nn.Module):
    """``output_mapping(model(input_transform(x)))`` with the source ``model`` frozen.

    The model's parameters get ``requires_grad = False`` and the model stays in eval mode even when
    ``.train()`` is called (BatchNorm statistics and dropout stay as trained), so only the added layers
    learn and the model's parameters and buffers are never changed by training. Gradients still flow
    through the model to the input transformation.

    The model may return a tensor or an output object with a ``.logits`` tensor (Hugging Face
    transformers models); the logits are used.

    ``forward(x, target)`` in training mode also hands the source logits to
    ``output_mapping.update(logits, target)`` (when the mapping has one), so data-driven label mappings
    gather their counts during the training pass itself.
    """

    def __init__(self, model: nn.Module, input_transform: nn.Module, output_mapping: nn.Module) -> None:
        super().__init__()
        for name, module in (("model", model), ("input_transform", input_transform), ("output_mapping", output_mapping)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"Reprogrammer: {name} must be an nn.Module, got {type(module).__name__}")
        self.model = model.requires_grad_(False).eval()
        self.input_transform = input_transform
        self.output_mapping = output_mapping

    def train(self, mode: bool = True) -> "Reprogrammer":
        super().train(mode)
        self.model.eval()
        return self

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``model(input_transform(x))``: the source-class scores of the reprogrammed input (the
        ``.logits`` of an output object)."""
        return _logits_of(self.model(self.input_transform(x)))

    def forward(self, x: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        logits = self.source_logits(x)
        update = getattr(self.output_mapping, "update", None)
        if self.training and target is not None and callable(update):
            update(logits.detach(), target)
        return self.output_mapping(logits)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters that train: those of the input transformation and label mapping needing grad."""
        for module in (self.input_transform, self.output_mapping):
            yield from (p for p in module.parameters() if p.requires_grad)

    def end_epoch(self) -> bool:
        """Forward to ``output_mapping.end_epoch()`` when it has one; returns whether the mapping changed."""
        end = getattr(self.output_mapping, "end_epoch", None)
        return bool(end()) if callable(end) else False
