"""``AttributeMapping``: AttrVR's output mapping, top-k-mean similarity to per-class attribute texts."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .label_mapping import _label_map  # label_map, imported late
from .text_features import check_text_features


class AttributeMapping(nn.Module):
    """AttrVR (Cai et al. 2025): ``out = λ·score(DesAttr) + (1 − λ)·score(DistAttr)`` on image features.

    ``score(A)[b, t] = mean of the k largest of exp(s)·<f̂_b, â_{t, j}>, j < m`` with ``f̂`` the
    L2-normalised image features ``[*, D]`` and ``â`` the L2-normalised attribute embeddings
    ``descriptive`` / ``distinctive`` ``[T, m, D]`` (m attribute descriptions per class, e.g. CLIP's
    text encoder on LLM-written sentences), kept as buffers. The top-k mean is
    ``label_map(reduce="topk_mean", topk=k)`` over the ``2·T`` groups of ``m`` similarities (both
    attribute sets in one call); the gradient goes to the k chosen similarities (ties: the lower
    attribute index first). ``s = logit_scale`` is fixed (a frozen CLIP's, ln 100).
    """

    def __init__(self, descriptive: torch.Tensor, distinctive: torch.Tensor, *, topk: int = 3, lam: float = 0.5,
                 logit_scale: float = math.log(100.0), backend: str = "auto") -> None:
        super().__init__()
        name = type(self).__name__
        for arg, feats in (("descriptive", descriptive), ("distinctive", distinctive)):
            check_text_features(feats, arg, name, "[T, m, D]", ndim=3)
        if descriptive.shape != distinctive.shape:
            raise ValueError(f"{name}: descriptive and distinctive must have the same shape [T, m, D], got "
                             f"{tuple(descriptive.shape)} and {tuple(distinctive.shape)}")
        T, m, D = descriptive.shape
        if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= m:
            raise ValueError(f"{name}: topk must be an int in [1, m={m}], got {topk!r}")
        for arg, value, low, high in (("lam", lam, 0.0, 1.0), ("logit_scale", logit_scale, -math.inf, math.inf)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
                    low <= value <= high):
                raise ValueError(f"{name}: {arg} must be a finite float in [{low}, {high}], got {value!r}")
        self.num_target, self.num_attributes, self.dim = T, m, D
        self.topk, self.lam, self.logit_scale, self.backend = topk, float(lam), float(logit_scale), backend
        both = torch.cat([descriptive.detach(), distinctive.detach()]).reshape(2 * T * m, D)
        self.register_buffer("attributes", F.normalize(both, dim=-1).clone())  # [2·T·m, D], rows (set, t, j)
        self.register_buffer("index", torch.arange(2 * T * m, device=both.device).view(2 * T, m))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() < 1 or features.shape[-1] != self.dim:
            raise ValueError(f"{type(self).__name__}: features must have shape [*, D={self.dim}], "
                             f"got {tuple(features.shape)}")
        # (exp(s)·f̂) @ âᵀ, in AttrVR's order of operations
        sims = (math.exp(self.logit_scale) * F.normalize(features, dim=-1)) @ self.attributes.to(features.dtype).t()
        scores = _label_map()(sims, self.index, reduce="topk_mean", topk=self.topk, backend=self.backend)
        descriptive, distinctive = scores.split(self.num_target, dim=-1)
        return descriptive * self.lam + distinctive * (1 - self.lam)

    def extra_repr(self) -> str:
        return (f"num_target={self.num_target}, num_attributes={self.num_attributes}, dim={self.dim}, "
                f"topk={self.topk}, lam={self.lam}, logit_scale={self.logit_scale:.4f}, backend={self.backend!r}")
