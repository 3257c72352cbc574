"""R2DL, Vinod, Chen & Das 2020, "Reprogramming Language Models for Molecular Representation
Learning" (arXiv 2012.03460). Code: riavinod/r2dl-proteins (``train_r2dl.py``,
``class_mapping_utils.py``); it does not run as published (undefined names, e.g. ``iter``,
``ksvd_iter``, ``args.base_dataset``; ``create_label_mapping`` indexes an int), so this preset
follows the paper where the code cannot be read as a program, and the code's evident intent where
it can:

- input: each target token's embedding is a learned combination of the source vocabulary's
  embeddings, ``V_t = Θ V_s`` (``Θ [V_t, V_s]``): ``vocab_map`` with window w = 1 and mode
  "none", ``out[b, i] = Θ[tokens[b, i]] @ E_s``;
- output: ``create_label_mapping``'s many-to-one map, target class t takes the sources
  ``t, t + T, t + 2T, …`` (``m_per_class`` of them, handed out round-robin), aggregated by the
  mean of the source logits (``get_mapped_logits`` with ``theshold_f="mean"``; "max" also allowed).

Deliberate differences: Θ is trained by gradient descent on the task loss; the paper's sparse
coding of Θ (k-SVD dictionary learning with an ℓ1 / ε constraint) is not reproduced —
``input_transform.l1_penalty()`` gives ``Σ|Θ|`` for a LASSO-style term added to the loss; the
code's sign-of-gradient step after ``optimizer.step()`` (which has no effect on that step) is not
reproduced.
"""
from __future__ import annotations

import torch

from ..nn.label_mapping import LabelMapping
from ..nn.vocab_mapping import VocabMapping


class TokenDictionary(VocabMapping):
    """R2DL's input transform: ``Θ[tokens] @ E_s`` (``VocabMapping`` with w = 1, mode "none")."""

    def l1_penalty(self) -> torch.Tensor:
        """``Σ |Θ|``: the sparsity term of the paper's objective."""
        return self.theta.abs().sum()


def round_robin_index(num_target: int, per_class: int) -> torch.Tensor:
    """index ``[T, m]`` with ``index[t, r] = r·T + t`` (``create_label_mapping``'s intent)."""
    return torch.arange(per_class * num_target).view(per_class, num_target).t().contiguous()


def r2dl(num_target: int, *, num_tokens: int, embedding: torch.Tensor, num_source: int, per_class: int = 1,
         reduce: str = "mean", backend: str = "auto"):
    """R2DL's recipe: ``Recipe(TokenDictionary, LabelMapping)`` (see the module docstring).

    ``num_tokens``: the target vocabulary size V_t; ``embedding [V_s, D]``: the source model's token
    embeddings (frozen); ``num_source``: source classes; ``per_class``: source classes per target.
    """
    from . import Recipe  # the package's Recipe (imported here: this module is imported by the package)

    if reduce not in ("mean", "max"):
        raise ValueError(f"r2dl: reduce must be 'mean' or 'max' (get_mapped_logits' theshold_f), got {reduce!r}")
    transform = TokenDictionary(num_tokens, embedding, window=1, mode="none", backend=backend)
    mapping = LabelMapping(num_source, num_target, "identity", k=per_class, reduce=reduce, backend=backend)
    mapping.index.copy_(round_robin_index(num_target, per_class))
    return Recipe(transform, mapping)
