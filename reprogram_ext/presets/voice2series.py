"""Voice2Series (Yang et al. 2021): the ``presets.voice2series`` constructor."""
from __future__ import annotations

from typing import Optional

import torch

from ..nn.label_mapping import LabelMapping
from ..nn.prompts import TimeSeriesPrompt
from .recipe import Recipe


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
