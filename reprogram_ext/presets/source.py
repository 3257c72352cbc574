"""What a preset needs to know about its source model, read from timm and transformers models.

``describe_source(model, processor=None)`` returns the canvas size, the normalisation and the
number of source classes of:
  - a timm model: its ``pretrained_cfg`` (``input_size`` ``(C, H, W)``, ``mean``, ``std``), the
    classes from ``model.num_classes`` (what the head outputs; ``pretrained_cfg["num_classes"]``
    describes the checkpoint, which differs after ``num_classes=`` or ``reset_classifier``); a
    fixed-size timm ViT built with ``img_size=`` reports ``patch_embed.img_size``, the size it accepts;
  - a Hugging Face transformers vision model: ``config.image_size`` (or ``config.vision_config``'s
    for CLIP-style models), ``config.num_labels`` for ``*ForImageClassification`` models only (every
    config carries a default ``num_labels``), and mean/std from ``processor``'s ``image_mean`` /
    ``image_std`` when a processor is given (an image processor, or a processor holding one as
    ``.image_processor``); ``do_normalize=False`` means no normalisation.
Anything it cannot tell is ``None`` and the preset keeps its own default.
"""
from __future__ import annotations

import functools
import inspect
from typing import NamedTuple, Optional, Tuple

from torch import nn

# Marks "the processor says: do not normalise" apart from "unknown" (None).
NO_NORMALIZATION = "none"


class SourceInfo(NamedTuple):
    """``image_size`` ``(H, W)``, per-channel ``mean`` / ``std`` (or ``NO_NORMALIZATION``), ``num_classes``."""

    image_size: Optional[Tuple[int, int]] = None
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    num_classes: Optional[int] = None


def _pair(size) -> Tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)[-2:]


def _timm_source(model: nn.Module) -> SourceInfo:
    cfg = model.pretrained_cfg
    size = _pair(cfg["input_size"]) if cfg.get("input_size") else None
    patch_embed = getattr(model, "patch_embed", None)
    if cfg.get("fixed_input_size") and getattr(patch_embed, "img_size", None) is not None:
        size = _pair(patch_embed.img_size)
    classes = getattr(model, "num_classes", cfg.get("num_classes"))
    mean, std = cfg.get("mean"), cfg.get("std")
    return SourceInfo(size, tuple(mean) if mean else None, tuple(std) if std else None,
                      int(classes) if classes else None)


def _processor_normalization(processor):
    image_processor = getattr(processor, "image_processor", processor)
    if getattr(image_processor, "do_normalize", True) is False:
        return NO_NORMALIZATION, NO_NORMALIZATION
    mean, std = getattr(image_processor, "image_mean", None), getattr(image_processor, "image_std", None)
    if mean is None or std is None:
        raise ValueError(f"source: processor {type(processor).__name__} has no image_mean / image_std")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _transformers_source(model: nn.Module, processor) -> SourceInfo:
    config = model.config
    size = getattr(config, "image_size", None)
    if size is None and getattr(config, "vision_config", None) is not None:
        size = getattr(config.vision_config, "image_size", None)
    classes = config.num_labels if type(model).__name__.endswith("ForImageClassification") else None
    mean, std = _processor_normalization(processor) if processor is not None else (None, None)
    return SourceInfo(_pair(size) if size is not None else None, mean, std, classes)


def describe_source(model: nn.Module, processor=None) -> SourceInfo:
    """The ``SourceInfo`` of a timm or transformers model (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"source must be a timm or transformers nn.Module, got {type(model).__name__}")
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        if processor is not None:
            raise ValueError("source: processor= is for transformers models; a timm model's pretrained_cfg "
                             "holds its mean and std")
        return _timm_source(model)
    if getattr(model, "config", None) is not None and hasattr(model.config, "to_dict"):
        return _transformers_source(model, processor)
    raise TypeError(f"source: {type(model).__name__} is neither a timm model (no pretrained_cfg) nor a "
                    "transformers model (no config); pass the sizes, mean, std and num_source explicitly")


def source_defaults(info: SourceInfo, canvas_arg: str, accepted) -> dict:
    """Keyword arguments of a preset taken from ``info``: the canvas size as ``canvas_arg``,
    ``mean``/``std`` (``None`` for no normalisation) and ``num_source``, limited to ``accepted``."""
    known = {canvas_arg: info.image_size, "num_source": info.num_classes, "mean": info.mean, "std": info.std}
    known = {k: (None if v == NO_NORMALIZATION else v) for k, v in known.items() if v is not None}
    return {k: v for k, v in known.items() if k in accepted}


def takes_source(canvas_arg: str = "output_size"):
    """Decorator: the preset also takes ``source=`` (and ``processor=``); arguments given explicitly win."""

    def wrap(preset):
        accepted = set(inspect.signature(preset).parameters)

        @functools.wraps(preset)
        def with_source(*args, source: Optional[nn.Module] = None, processor=None, **kwargs):
            if source is None:
                if processor is not None:
                    raise ValueError(f"{preset.__name__}: processor= needs source=")
                return preset(*args, **kwargs)
            defaults = source_defaults(describe_source(source, processor), canvas_arg, accepted)
            return preset(*args, **{**defaults, **kwargs})

        signature = inspect.signature(preset)
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in ("source", "processor")]
        params = list(signature.parameters.values())
        keywords = [p for p in params if p.kind == p.VAR_KEYWORD]  # **options stays last
        params = [p for p in params if p.kind != p.VAR_KEYWORD]
        with_source.__signature__ = signature.replace(parameters=params + extra + keywords)
        return with_source

    return wrap
