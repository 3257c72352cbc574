"""``DescriptionMapping``: DVP's output mapping, description similarities merged by its reweighting matrix."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .label_mapping import _label_map  # label_map, imported late
from .text_features import check_text_features


class DescriptionMapping(nn.Module):
    """DVP (Cai et al. 2025): ``out[b, t] = Σ_{v, j} ω[t, (v, j)] · exp(s)·cos(f_{v, b}, e_{v, t, j})``.

    ``descriptions [V, T, m, D]``: for each of the V description groups (one prompt each), m
    description embeddings per target class (L2-normalised, kept as a buffer). The input is the
    source model's features of the V prompted copies of the batch, ``[V·B, D]`` program-major (as
    ``PaddingPromptBank`` flattens them); group ``v``'s features meet only group ``v``'s
    descriptions. ``s = logit_scale`` is fixed (a frozen CLIP's, ln 100). The merge is
    ``label_map(sims, index, weight, reduce="sum")`` with class ``t``'s ``V·m`` similarities
    (ordered group-major, then description) as its group.

    ``ω`` (buffer ``weight [T, V·m]``, DVP's probabilistic reweighting matrix) starts uniform,
    ``1/(V·m)``. ``update(features, target)`` counts, for each sample of class ``y``, its ``topk``
    most similar descriptions among class ``y``'s ``V·m`` (``counts[y, i] += 1``); ``end_epoch()``
    (``remap()``) sets ``ω[t] = counts[t] / Σ counts[t]`` and clears the counts; a class without
    samples keeps the uniform ``1/(V·m)``. ``Reprogrammer`` calls ``update`` in its training pass.
    """

    def __init__(self, descriptions: torch.Tensor, *, topk: int = 3, logit_scale: float = math.log(100.0),
                 backend: str = "auto") -> None:
        super().__init__()
        name = type(self).__name__
        check_text_features(descriptions, "descriptions", name, "[V, T, m, D]", ndim=4)
        V, T, m, D = descriptions.shape
        if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= V * m:
            raise ValueError(f"{name}: topk must be an int in [1, V·m={V * m}], got {topk!r}")
        if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) or not math.isfinite(logit_scale):
            raise ValueError(f"{name}: logit_scale must be a finite float (log space), got {logit_scale!r}")
        self.num_groups, self.num_target, self.num_descriptions, self.dim = V, T, m, D
        self.topk, self.logit_scale, self.backend = topk, float(logit_scale), backend
        device = descriptions.device
        self.register_buffer("descriptions", F.normalize(descriptions.detach(), dim=-1).reshape(V, T * m, D).clone())
        self.register_buffer("index", torch.arange(T * V * m, device=device).view(T, V * m))
        self.register_buffer("weight", torch.full((T, V * m), 1.0 / (V * m), device=device))
        # Counts of the epoch [T, V·m]: a plain attribute, not a buffer (DDP would overwrite buffers).
        self.counts = torch.zeros(T, V * m, device=device)

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T·V·m]``: ``exp(s)·cos`` of each group's features with its class descriptions."""
        V, T, m = self.num_groups, self.num_target, self.num_descriptions
        if features.dim() != 2 or features.shape[1] != self.dim or features.shape[0] % V:
            raise ValueError(f"{type(self).__name__}: features must be [V·B, D] with V={V}, D={self.dim}, "
                             f"got {tuple(features.shape)}")
        f = math.exp(self.logit_scale) * F.normalize(features, dim=-1).view(V, -1, self.dim)  # DVP's order
        sims = torch.bmm(f, self.descriptions.to(f.dtype).transpose(1, 2))
        return sims.view(V, -1, T, m).permute(1, 2, 0, 3).reshape(-1, T * V * m)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sims = self.similarities(features)
        return _label_map()(sims, self.index, self.weight.to(sims.dtype), reduce="sum", backend=self.backend)

    @torch.no_grad()
    def update(self, features: torch.Tensor, target: torch.Tensor) -> None:
        """Count each sample's ``topk`` most similar descriptions of its own class."""
        T, Vm = self.num_target, self.num_groups * self.num_descriptions
        own = self.similarities(features).view(-1, T, Vm)[torch.arange(target.shape[0], device=target.device), target]
        chosen = own.topk(self.topk, dim=1).indices  # [B, k]
        self.counts = self.counts.to(own.device)
        flat = (target.view(-1, 1) * Vm + chosen).reshape(-1)
        self.counts.view(-1).index_add_(0, flat, torch.ones(flat.shape, device=own.device))

    def remap(self) -> bool:
        """``ω[t] = counts[t] / Σ counts[t]`` (classes without counts keep ``1/(V·m)``); clears the counts."""
        counts = self.counts.double()  # DVP divides in float64 (numpy), then rounds to float32
        total = counts.sum(1, keepdim=True)
        prm = torch.where(total > 0, counts / total.clamp(min=1), torch.full_like(counts, 1.0 / counts.shape[1]))
        self.weight.copy_(prm.to(self.weight.device, self.weight.dtype))
        self.counts.zero_()
        return True

    def end_epoch(self) -> bool:
        """DVP re-estimates ``ω`` after every epoch: ``remap()``."""
        return self.remap()

    def extra_repr(self) -> str:
        return (f"num_groups={self.num_groups}, num_target={self.num_target}, "
                f"num_descriptions={self.num_descriptions}, dim={self.dim}, topk={self.topk}, "
                f"logit_scale={self.logit_scale:.4f}, backend={self.backend!r}")
