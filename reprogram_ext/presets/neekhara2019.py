"""Neekhara et al. 2019, "Adversarial Reprogramming of Text Classification Neural Networks"
(paarthneekhara/rnn_adversarial_reprogramming, the Gumbel-softmax ("white-box") variant:
``seq_rewriter_gumbel.py``, ``train_adversarial_gumbel.py``, ``model_classifier.py``).

The original, read from that repository:
- the target sequence is padded with token 0 (``F.pad``) or cut to the source model's sequence
  length (``target_sequence_length``);
- the rewriter is ``nn.Conv1d(V_t, V_s, kernel_size=filter_width, padding=filter_width // 2)``
  (with its bias, PyTorch's default initialisation) over the one-hot target tokens (an identity
  ``nn.Embedding``): ``logits[b, i, s] = bias[s] + Σ_j W[s, tokens[b, i + j − w//2], j]``, zero
  padding at the ends; ``filter_width`` defaults to 5;
- training: ``F.gumbel_softmax(logits, tau=temp)`` (soft); eval: ``F.softmax(logits)`` (τ = 1);
- the temperature anneals per epoch: ``temp = max(temp_max − (temp_max − temp_min)/epochs_to_anneal
  · epoch, temp_min)`` with temp_max 2.0, temp_min 0.01, epochs_to_anneal 15;
- the source classifier embeds the probabilities as ``probs @ char_embedding.weight`` (then its own
  tanh and LSTM), and its logits are trained with ``CrossEntropyLoss`` against the target labels
  taken as source classes: the identity label mapping (target t = source t).

Here: ``VocabMapping`` with ``θ[j, t, s] = W[s, t, j]`` and the bias added to the centre offset (exactly
the convolution: the centre tap is inside the sequence at every position), mode "gumbel" in
training and "softmax" at τ = 1 in eval, then ``@ embedding``; ``LabelMapping(method="identity")``.
Deliberate differences: the Gumbel noise comes from vocab_map's counter-based generator (the same
Gumbel(0, 1) distribution, other random numbers than ``F.gumbel_softmax``'s); the temperature is
set by ``input_transform.set_epoch(epoch)`` (the original computes it in its training loop); the
original's REINFORCE variant (``seq_rewriter.py``) is not reproduced.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.label_mapping import LabelMapping
from ..nn.vocab_mapping import VocabMapping

FILTER_WIDTH = 5
TEMP_MAX, TEMP_MIN, EPOCHS_TO_ANNEAL = 2.0, 0.01, 15.0


def annealed_temperature(epoch: int, temp_max: float = TEMP_MAX, temp_min: float = TEMP_MIN,
                         epochs_to_anneal: float = EPOCHS_TO_ANNEAL) -> float:
    """The original's schedule: ``max(temp_max − (temp_max − temp_min)/epochs_to_anneal · epoch, temp_min)``."""
    slope = (temp_max - temp_min) / epochs_to_anneal
    return max(temp_max - slope * epoch, temp_min)


class SequenceRewriter(nn.Module):
    """Neekhara's rewriter: pad (token 0) / cut to ``seq_length``, then ``VocabMapping`` (Gumbel-softmax
    in training at the annealed temperature, softmax at τ = 1 in eval)."""

    def __init__(self, mapping: VocabMapping, seq_length: Optional[int], temp_max: float, temp_min: float,
                 epochs_to_anneal: float) -> None:
        super().__init__()
        self.mapping = mapping
        self.seq_length = seq_length
        self.schedule = (temp_max, temp_min, epochs_to_anneal)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> float:
        """Sets and returns the training temperature of ``epoch`` (the original's annealing)."""
        self.mapping.tau = annealed_temperature(epoch, *self.schedule)
        return self.mapping.tau

    def extra_repr(self) -> str:
        return f"seq_length={self.seq_length}, schedule={self.schedule}"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.seq_length is not None:
            L = tokens.shape[1]
            tokens = F.pad(tokens, (0, self.seq_length - L)) if L < self.seq_length else tokens[:, :self.seq_length]
        return self.mapping(tokens)


def neekhara2019(num_target: int, *, num_tokens: int, embedding: torch.Tensor, num_source: int,
                 seq_length: Optional[int] = None, filter_width: int = FILTER_WIDTH, temp_max: float = TEMP_MAX,
                 temp_min: float = TEMP_MIN, epochs_to_anneal: float = EPOCHS_TO_ANNEAL, backend: str = "auto"):
    """Neekhara 2019's recipe: ``Recipe(SequenceRewriter, LabelMapping identity)``.

    ``num_target``: target classes; ``num_tokens``: the target vocabulary size V_t;
    ``embedding [V_s, D]``: the source model's input embeddings (frozen); ``num_source``: source
    classes; ``seq_length``: the source model's sequence length (None: keep the input length). The
    source model passed to ``recipe.reprogrammer(model)`` takes the ``[B, L, D]`` embeddings.
    """
    from . import Recipe  # the package's Recipe (imported here: this module is imported by the package)

    mapping = VocabMapping(num_tokens, embedding, window=filter_width, mode="gumbel", tau=temp_max, bias=True,
                           eval_mode="softmax", eval_tau=1.0, backend=backend)
    rewriter = SequenceRewriter(mapping, seq_length, temp_max, temp_min, epochs_to_anneal)
    return Recipe(rewriter, LabelMapping(num_source, num_target, "identity", backend=backend))
