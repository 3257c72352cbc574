"""Voice2Series (Yang et al. 2021, huckiyang/Voice2Series-Reprogramming): the ``presets.voice2series`` constructor."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..nn.label_mapping import LabelMapping
from ..nn.prompts import TimeSeriesPrompt
from .recipe import Recipe


def segment_offsets(input_length: int, output_length: int, segments: int) -> list:
    """The original's ``SegZeroPadding1D``: copy ``s`` at ``s · seg_len · L``, ``seg_len = (N // L) // segments``."""
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"voice2series: segments must be a positive int, got {segments!r}")
    seg_len = (output_length // input_length) // segments
    if seg_len < 1:
        raise ValueError(f"voice2series: segments={segments} copies of input_length={input_length} do not fit in "
                         f"output_length={output_length} (need segments <= {output_length // input_length})")
    return [s * seg_len * input_length for s in range(segments)]


def program_penalty(prompt: TimeSeriesPrompt, weight: float) -> torch.Tensor:
    """The original's Keras ``regularizers.l2(weight)`` on the program: ``weight · Σ θ²``."""
    return weight * prompt.delta.pow(2).sum()


def voice2series(num_target: int, *, input_length: int, num_source: int, output_length: int = 16000,
                 segments: int = 1, copies: Optional[int] = None, k: int = 1, mapping: str = "identity",
                 dropout: float = 0.4, l2: float = 0.05, apply_mask: bool = False, channels: int = 1,
                 generator: Optional[torch.Generator] = None, backend: str = "auto") -> Recipe:
    """Voice2Series (Yang et al. 2021; huckiyang/Voice2Series-Reprogramming ``ts_model.py``): ``tile(x) + dropout(θ)``.

    Input (the original's ``SegZeroPadding1D`` + ``ARTLayer``): ``segments`` copies of the length-``L``
    series at ``s · seg_len · L`` (``seg_len = (16000 // L) // segments``, ``--seg``, default 1: one copy
    at 0) on the 16000-sample canvas, plus the program ``θ [1, 16000]`` through dropout
    (``p = dropout``, the ``ARTLayer`` default 0.4 — ``WARTmodel`` never passes ``--dr`` on) **over
    the whole canvas**: the original builds a mask but never applies it in ``call()``. ``θ`` starts
    Glorot-uniform, ``U(±sqrt(6 / (16000 + 1)))``. ``apply_mask=True`` multiplies by the mask (0 on
    the copies), ``copies=n`` instead places ``n`` back-to-back copies centred (this package's older
    layout).

    Output: ``multi_mapping``, ``out[:, t] = mean_j softmax(logits)[:, index[t, j]]`` with the
    contiguous sources ``t·k .. t·k+k-1`` (``mapping="identity"``; ``"random"`` draws them).
    ``recipe.loss(out, target)``: Keras' categorical cross-entropy of ``out`` (which renormalises
    ``out`` over the targets: ``F.cross_entropy(log(out), target)``, what
    ``mapped_cross_entropy(..., pre="softmax")`` computes fused from the logits) plus the L2 penalty
    ``l2 · Σ θ²`` (``program_penalty``; Keras ``regularizers.l2(0.05)``).

    Deliberate differences: dropout is applied in training mode only (Keras' ``K.dropout`` in
    ``call()`` also drops at inference); Keras clips the renormalised output to ``[1e-7, 1 - 1e-7]``
    before the log, we do not; the original trains only ``--mod 1`` with this mapping (``--mod 0``
    scores the first ``T`` source classes directly).
    """
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not 0 <= l2 < float("inf"):
        raise ValueError(f"voice2series: l2 must be a non-negative number, got {l2!r}")
    if copies is None:
        offsets, layout = segment_offsets(input_length, output_length, segments), {}
    else:
        offsets, layout = None, {"copies": copies}
    prompt = TimeSeriesPrompt(input_length, output_length, channels=channels, offsets=offsets, init="uniform",
                              init_scale=math.sqrt(6.0 / (output_length + 1)), dropout=dropout,
                              prompt_over_input=not apply_mask, backend=backend, **layout)
    out_map = LabelMapping(num_source, num_target, mapping, k=k, pre="softmax", reduce="mean",
                           **({"generator": generator} if mapping == "random" else {}), backend=backend)

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(torch.log(output), target) + program_penalty(prompt, l2)

    return Recipe(prompt, out_map, loss)
