"""Neekhara et al. 2022, "Cross-modal Adversarial Reprogramming" (ViTs and CNNs reading text and DNA).

Original code: paarthneekhara/multimodal_rerprogramming (``reprogramming_model.py``,
``ReprogrammingFuntion``; ``reprogramming.py``, the training script). Its input transformation:

- each token id owns a learned patch: ``nn.Embedding(vocab_size, 3 * 16 * 16)`` (init N(0, 1)),
  ``tanh``, viewed as ``[3, 16, 16]``;
- the sequence fills the 24 x 24 cells of a 384 x 384 canvas row by row; cells past the sequence
  repeat its last token; tokens past the last cell are ignored;
- with a base image (given normalised, ``Normalize(mean, std)`` of the resized picture):
  ``v = base + alpha * P`` (alpha = 0.2, in normalised space); without one ``v = P``;
- ``out = N(clamp(N⁻¹(v), 0, 1))``: unnormalise, clamp to [0, 1] in pixel space, renormalise;
- the regulariser ``‖P‖₂ / B`` over the patch canvas (``pert_norm``), weighted by
  ``reg_alpha = 1e-4`` in the loss ``CE(mapped logits) + reg_alpha * pert_norm``;
- output mapping: ``m_per_class`` source classes per target, reduced with ``max`` (default) or
  ``mean``; target ``c`` takes ``labels[c], labels[c + T], labels[c + 2T], ...`` where ``labels``
  is the ascending ``argsort`` of the frozen model's logits on the base image (on
  ``2 * rand(3, H, W) - 1`` drawn after ``torch.manual_seed(42)`` when there is none);
- training: Adam, lr 1e-3, batch size 4.

Here: ``TokenCanvasPrompt`` on ``tokens_to_canvas`` computes the same canvas in pixel space:
``N⁻¹(base_n + alpha P) = base_pixel + (alpha * std_c) P``, so ``base`` is the base image in
pixel space, ``patch_weight = alpha * std_c`` and ``clamp = (0, 1)`` before normalising; without a
base image ``N⁻¹(P) = mean_c + std_c P`` (base = the mean, patch_weight = std).
Deliberate differences:
- the base image is taken as a tensor ``[3, H, W]`` in [0, 1] already at the canvas size (the
  original opens a file and resizes it with PIL); ``base_pixel`` is used as given rather than
  through ``N⁻¹(N(image))``, which equals it up to float rounding;
- the random base of the label ordering is drawn from a ``torch.Generator`` seeded 42 (the same
  numbers as ``torch.manual_seed(42); torch.rand`` on CPU) instead of reseeding the global RNG;
- without ``source_model`` the label ordering is ``range(num_source)`` (``create_label_mapping``'s
  default when given no labels).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..nn.label_mapping import LabelMapping
from ..nn.token_canvas import TokenCanvasPrompt

VIT_MEAN = (0.5, 0.5, 0.5)  # vit_base_patch16_384's normalisation in the original's image_model_configs
VIT_STD = (0.5, 0.5, 0.5)
REG_ALPHA = 1e-4  # the original's default weight of the perturbation norm in the loss


def label_order(source_model: Optional[nn.Module], base_image_normalized: Optional[torch.Tensor], num_source: int,
                img_size: int) -> torch.Tensor:
    """The original's ``get_imagenet_label_list``: source classes by ascending logit on the base image."""
    if source_model is None:
        return torch.arange(num_source)
    if base_image_normalized is None:
        g = torch.Generator().manual_seed(42)
        base_image_normalized = 2 * torch.rand(3, img_size, img_size, generator=g) - 1.0
    param = next(iter(source_model.parameters()), None)
    x = base_image_normalized[None].to(param.device if param is not None else "cpu")
    with torch.no_grad():
        logits = source_model(x)
    logits = getattr(logits, "logits", logits)[0]
    return torch.argsort(logits).cpu()


def class_index(labels: torch.Tensor, num_target: int, m_per_class: int) -> torch.Tensor:
    """The original's ``create_label_mapping``: target c takes labels[c + j * T] for j < m_per_class."""
    j = torch.arange(m_per_class).view(1, -1)
    c = torch.arange(num_target).view(-1, 1)
    return labels[c + j * num_target].long()


def neekhara2022(num_target: int, *, vocab_size: int, num_source: int = 1000, img_size: int = 384,
                 patch_size: int = 16, base_image: Optional[torch.Tensor] = None, alpha: float = 0.2,
                 mean: Sequence[float] = VIT_MEAN, std: Sequence[float] = VIT_STD, m_per_class: int = 1,
                 label_reduction: str = "max", source_model: Optional[nn.Module] = None,
                 backend: str = "auto"):
    """Cross-modal reprogramming (Neekhara et al. 2022): token patches on a grid, clamped in pixel space.

    ``out = N(clamp(base + alpha * std * tanh(table[token of cell]), 0, 1))`` on an
    ``img_size // patch_size`` square grid of ``patch_size``² cells (24 x 24 of 16² by default);
    without ``base_image``: ``N(clamp(mean + std * tanh(...), 0, 1))``. ``base_image``: ``[3,
    img_size, img_size]`` in [0, 1] (pixel space). Output: ``max`` (or ``mean``) over
    ``m_per_class`` source classes per target, ordered from ``source_model``'s logits on the base
    image (see the module docstring). Loss as the original:
    ``F.cross_entropy(out, y) + REG_ALPHA * recipe.input_transform.perturbation_norm(tokens)``.
    """
    from . import Recipe

    if img_size % patch_size:
        raise ValueError(f"neekhara2022: img_size={img_size} must be a multiple of patch_size={patch_size}")
    if label_reduction not in ("max", "mean"):
        raise ValueError(f"neekhara2022: label_reduction must be 'max' or 'mean', got {label_reduction!r}")
    grid = img_size // patch_size
    std_v = [float(v) for v in std] * (3 if len(std) == 1 else 1)  # Python floats: exact in float64
    mean_v = [float(v) for v in mean] * (3 if len(mean) == 1 else 1)
    std_t, mean_t = torch.tensor(std_v), torch.tensor(mean_v)
    if base_image is not None:
        if tuple(base_image.shape) != (3, img_size, img_size):
            raise ValueError(f"neekhara2022: base_image must be [3, {img_size}, {img_size}] in [0, 1], "
                             f"got {list(base_image.shape)}")
        base, weight = base_image, [alpha * v for v in std_v]
    else:
        base, weight = torch.tensor(mean_v, dtype=torch.float64).view(3, 1, 1), std_v  # broadcast over the canvas
    prompt = TokenCanvasPrompt(vocab_size, patch_size, grid, channels=3, activation="tanh", pad="repeat_last",
                               base=base, patch_weight=weight, clamp=(0.0, 1.0), mean=mean, std=std, init="randn",
                               truncate=True, backend=backend)
    normalized = None if base_image is None else (base_image - mean_t.view(3, 1, 1)) / std_t.view(3, 1, 1)
    labels = label_order(source_model, normalized, num_source, img_size)
    mapping = LabelMapping(num_source, num_target, "identity", k=m_per_class, reduce=label_reduction,
                           backend=backend)
    mapping.index.copy_(class_index(labels, num_target, m_per_class).to(mapping.index.device))
    return Recipe(prompt, mapping)
