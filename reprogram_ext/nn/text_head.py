"""``TextHeadMapping``: CLIP-style output mapping through class text features (Bahng et al., EVP)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial log temperature, ln(1/0.07) ≈ 2.659


class TextHeadMapping(nn.Module):
    """``out = exp(s) · normalize(f) @ normalize(text_features)ᵀ``: image features ``f [*, D]`` -> ``[*, T]``.

    ``text_features [T, D]``: one embedding per target class (e.g. CLIP's text encoder on
    "a photo of a {class}"), L2-normalised once at construction and kept as the buffer
    ``text_features``. ``normalize`` is the L2 normalisation over the last dim (``F.normalize``,
    eps 1e-12).

    ``s`` is the log-space logit scale (CLIP's ``logit_scale`` parameter, ``exp(s)`` the inverse
    temperature): ``logit_scale=None`` learns ``s`` from CLIP's initial ``ln(1/0.07)``; a float fixes
    ``s`` at that value (pass a pretrained CLIP's ``model.logit_scale.item()``, ``ln 100`` ≈ 4.605,
    as Bahng's and EVP's frozen CLIP does). ``learn_scale=`` overrides either default. A learned
    ``s`` is the Parameter ``logit_scale``; a fixed one a buffer of the same name.
    """

    def __init__(self, text_features: torch.Tensor, logit_scale: Optional[float] = None, *,
                 learn_scale: Optional[bool] = None) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(text_features, torch.Tensor) or text_features.dim() != 2 or not text_features.is_floating_point():
            got = (f"{text_features.dtype} tensor of shape {tuple(text_features.shape)}"
                   if isinstance(text_features, torch.Tensor) else type(text_features).__name__)
            raise ValueError(f"{name}: text_features must be a floating tensor [T, D], got {got}")
        if text_features.numel() == 0:
            raise ValueError(f"{name}: text_features must have T >= 1 and D >= 1, got shape {tuple(text_features.shape)}")
        if not torch.isfinite(text_features).all():
            raise ValueError(f"{name}: text_features must be finite")
        if logit_scale is not None and (isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float))
                                        or not math.isfinite(logit_scale)):
            raise ValueError(f"{name}: logit_scale must be None or a finite float (log space), got {logit_scale!r}")
        if learn_scale is not None and not isinstance(learn_scale, bool):
            raise TypeError(f"{name}: learn_scale must be None or a bool, got {learn_scale!r}")
        learn = logit_scale is None if learn_scale is None else learn_scale
        start = torch.tensor(CLIP_INIT_LOGIT_SCALE if logit_scale is None else float(logit_scale),
                             dtype=text_features.dtype, device=text_features.device)
        if learn:
            self.logit_scale = nn.Parameter(start)
        else:
            self.register_buffer("logit_scale", start)
        self.register_buffer("text_features", F.normalize(text_features.detach(), dim=-1).clone())
        self.num_target, self.dim = text_features.shape

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() < 1 or features.shape[-1] != self.dim:
            raise ValueError(f"{type(self).__name__}: features must have shape [*, D={self.dim}], "
                             f"got {tuple(features.shape)}")
        text = self.text_features.to(features.dtype) if features.is_floating_point() else self.text_features
        return self.logit_scale.exp() * (F.normalize(features, dim=-1) @ text.t())

    def extra_repr(self) -> str:
        learned = isinstance(self.logit_scale, nn.Parameter)
        return (f"num_target={self.num_target}, dim={self.dim}, logit_scale={self.logit_scale.item():.4f}, "
                f"learn_scale={learned}")
