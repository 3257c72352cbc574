"""Embedding-space prompts for transformers (WARP, Hambardzumyan et al. 2021) and the class-embedding
output head.

``EmbeddingPrompt`` places learned prompt embeddings ``[P, D]`` and fixed embeddings (the [CLS],
[SEP], [MASK] tokens' rows of the word-embedding matrix) around each sample's tokens in
``inputs_embeds [B, L, D]``, following a template, with per-sample lengths: sample b's
``n_b`` tokens (``attention_mask`` rows, 1s first) become

    out[b] = template items before "input" | inputs_embeds[b, :n_b] | template items after "input" | zeros

with the new attention mask 1 on the ``a + n_b + c`` filled positions (a, c: the numbers of
template tokens before and after the input) and the [MASK] position of each sample returned for
the head. Prompt and input embeddings receive gradients (the prompt is what trains).

``ClassEmbeddingHead``: WARP's verbalizer: the hidden state ``h`` at the [MASK] position, optionally
through the masked-LM head's transform (frozen), scored against learned class embeddings
``W [T, D]``: ``logits = h @ Wᵀ + b`` — ``label_map``'s dense form with ``weight = Wᵀ``.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

TemplateItem = Union[int, str]


class PromptedInputs(NamedTuple):
    """What ``EmbeddingPrompt`` returns: the model's ``inputs_embeds`` and ``attention_mask``, and the
    position of the template's ``"mask"`` token in each sample (``[B]`` int64; -1 without one)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    mask_positions: torch.Tensor


def _check_template(template: Sequence[TemplateItem], fixed: Dict[str, torch.Tensor]) -> None:
    if isinstance(template, (str, bytes)) or not isinstance(template, Sequence) or not template:
        raise TypeError(f"EmbeddingPrompt: template must be a non-empty list of ints (that many learned prompts), "
                        f"'input' and names of fixed embeddings, got {template!r}")
    if sum(1 for item in template if item == "input") != 1:
        raise ValueError(f"EmbeddingPrompt: template must hold 'input' exactly once, got {list(template)}")
    for item in template:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise TypeError(f"EmbeddingPrompt: template items must be ints or strings, got {item!r}")
        if isinstance(item, int) and item < 1:
            raise ValueError(f"EmbeddingPrompt: a prompt count in the template must be >= 1, got {item}")
        if isinstance(item, str) and item != "input" and item not in fixed:
            raise ValueError(f"EmbeddingPrompt: template item {item!r} is neither 'input' nor a fixed embedding "
                             f"(given: {sorted(fixed)})")


class EmbeddingPrompt(nn.Module):
    """Learned prompt embeddings at template positions of ``inputs_embeds`` (WARP).

    ``template``: a list of ``int k`` (k learned prompt vectors, in order), ``"input"`` (the
    sample's tokens, once) and names of ``fixed`` embeddings (``{"cls": [D], "sep": [D], "mask":
    [D]}``, e.g. rows of the model's word embeddings; buffers, not trained). Initial prompts:
    ``init_vector [D]``: every prompt a copy of it (WARP's ``prompt_better_init: "<mask>"``, the
    [MASK] token's embedding); ``init_from`` (an embedding matrix): drawn from N(mean, std) of its
    entries (``prompt_better_init: true``); else N(0, 1) (``false``).

    ``forward(inputs_embeds [B, L, D], attention_mask [B, L] or None)`` -> ``PromptedInputs`` with
    ``inputs_embeds [B, L + K, D]`` (K = the template's non-input tokens), the new
    ``attention_mask`` (the input's dtype, int64 when none was given) and ``mask_positions`` (of the
    fixed item named ``mask_item``).
    """

    def __init__(self, dim: int, template: Sequence[TemplateItem], *, fixed: Optional[Dict[str, torch.Tensor]] = None,
                 init_from: Optional[torch.Tensor] = None, init_vector: Optional[torch.Tensor] = None,
                 mask_item: str = "mask",
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"EmbeddingPrompt: dim must be a positive int, got {dim!r}")
        fixed = dict(fixed or {})
        _check_template(template, fixed)
        for name, vec in fixed.items():
            if not isinstance(vec, torch.Tensor) or tuple(vec.shape) != (dim,):
                raise ValueError(f"EmbeddingPrompt: fixed embedding {name!r} must be a [D={dim}] tensor, got "
                                 f"{getattr(vec, 'shape', type(vec).__name__)}")
        self.dim = dim
        self.template = list(template)
        self.mask_item = mask_item
        self.num_prompts = sum(item for item in self.template if isinstance(item, int))
        names = sorted({item for item in self.template if isinstance(item, str) and item != "input"})
        self.fixed_names = names
        self.register_buffer("fixed", torch.stack([fixed[n].detach().float() for n in names]) if names
                             else torch.zeros(0, dim))
        mean, std = (0.0, 1.0)
        if init_from is not None:
            mean, std = float(init_from.float().mean()), float(init_from.float().std())
        prompt = torch.randn(self.num_prompts, dim, generator=generator) * std + mean
        if init_vector is not None:
            if not isinstance(init_vector, torch.Tensor) or tuple(init_vector.shape) != (dim,):
                raise ValueError(f"EmbeddingPrompt: init_vector must be a [D={dim}] tensor, got "
                                 f"{getattr(init_vector, 'shape', type(init_vector).__name__)}")
            prompt = init_vector.detach().float().expand(self.num_prompts, dim).clone()
        self.prompt = nn.Parameter(prompt)
        # Each template token as (kind, row): kind 0 a prompt row, 1 a fixed row; split at "input".
        tokens, p = [], 0
        for item in self.template:
            if item == "input":
                tokens.append(None)
            elif isinstance(item, int):
                tokens.extend((0, p + r) for r in range(item))
                p += item
            else:
                tokens.append((1, names.index(item)))
        split = tokens.index(None)
        self._before, self._after = tokens[:split], tokens[split + 1:]
        self.num_added = len(self._before) + len(self._after)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, template={self.template}, num_prompts={self.num_prompts}"

    def _table_rows(self, items, fixed_offset: int) -> list:
        return [row if kind == 0 else fixed_offset + row for kind, row in items]

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> PromptedInputs:
        if (not isinstance(inputs_embeds, torch.Tensor) or inputs_embeds.dim() != 3
                or inputs_embeds.shape[2] != self.dim):
            raise ValueError(f"EmbeddingPrompt: inputs_embeds must be [B, L, D={self.dim}], got "
                             f"{getattr(inputs_embeds, 'shape', type(inputs_embeds).__name__)}")
        B, L, D = inputs_embeds.shape
        device = inputs_embeds.device
        if attention_mask is None:
            lengths = torch.full((B,), L, dtype=torch.int64, device=device)
            mask_dtype = torch.int64
        else:
            if tuple(attention_mask.shape) != (B, L):
                raise ValueError(f"EmbeddingPrompt: attention_mask must be [B={B}, L={L}], got "
                                 f"{tuple(attention_mask.shape)}")
            lengths = (attention_mask != 0).sum(1).to(torch.int64)
            mask_dtype = attention_mask.dtype
        a, c = len(self._before), len(self._after)
        L_out = L + a + c
        # One source table: the flattened input rows, then prompts, fixed rows, and a zero row (padding).
        table = torch.cat([inputs_embeds.reshape(B * L, D), self.prompt.to(inputs_embeds.dtype),
                           self.fixed.to(inputs_embeds.dtype), inputs_embeds.new_zeros(1, D)])
        base, zero_row = B * L, table.shape[0] - 1
        before = torch.tensor(self._table_rows(self._before, self.num_prompts), dtype=torch.int64, device=device) + base
        after = torch.tensor(self._table_rows(self._after, self.num_prompts), dtype=torch.int64, device=device) + base
        pos = torch.arange(L_out, device=device)[None, :]  # [1, L_out]
        n = lengths[:, None]  # [B, 1]
        rows = torch.full((B, L_out), zero_row, dtype=torch.int64, device=device)
        if a:
            rows[:, :a] = before
        in_input = (pos >= a) & (pos < a + n)
        rows = torch.where(in_input, torch.arange(B, device=device)[:, None] * L + (pos - a).clamp(0, L - 1), rows)
        if c:
            k = pos - a - n  # index into the after-items
            in_after = (k >= 0) & (k < c)
            rows = torch.where(in_after, after[k.clamp(0, c - 1)], rows)
        embeds = table.index_select(0, rows.reshape(-1)).reshape(B, L_out, D)
        new_mask = (pos < a + n + c).to(mask_dtype)
        return PromptedInputs(embeds, new_mask, self._mask_positions(lengths))

    def _mask_positions(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.mask_item not in self.fixed_names:
            return torch.full_like(lengths, -1)
        row = (1, self.fixed_names.index(self.mask_item))
        if row in self._before:
            return torch.full_like(lengths, self._before.index(row))
        return len(self._before) + lengths + self._after.index(row)


class ClassEmbeddingHead(nn.Module):
    """WARP's output mapping: ``logits = t(h) @ Wᵀ + b`` on the hidden state ``h`` at the [MASK] position.

    ``class_embeddings [T, D]``: the initial class embeddings (WARP: the verbalizer tokens' output
    embeddings), trained; ``transform``: the masked-LM head's transform (dense, GELU, LayerNorm),
    kept frozen, or None; ``bias``: a trained ``[T]`` bias (WARP's ``classifier_bias``, default on).
    ``forward(hidden [B, L, D], mask_positions [B])`` -> ``[B, T]``, the product through ``label_map``'s
    dense form.
    """

    def __init__(self, class_embeddings: torch.Tensor, *, transform: Optional[nn.Module] = None, bias: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(class_embeddings, torch.Tensor) or class_embeddings.dim() != 2:
            raise ValueError(f"ClassEmbeddingHead: class_embeddings must be [T, D], got "
                             f"{getattr(class_embeddings, 'shape', type(class_embeddings).__name__)}")
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())
        self.bias = nn.Parameter(torch.zeros(class_embeddings.shape[0])) if bias else None
        self.transform = transform.requires_grad_(False) if transform is not None else None
        self.backend = backend

    def extra_repr(self) -> str:
        T, D = self.weight.shape
        return f"num_classes={T}, dim={D}, bias={self.bias is not None}, backend={self.backend!r}"

    def forward(self, hidden: torch.Tensor, mask_positions: torch.Tensor) -> torch.Tensor:
        from ..ops.label_map import label_map

        if hidden.dim() != 3 or hidden.shape[2] != self.weight.shape[1]:
            raise ValueError(f"ClassEmbeddingHead: hidden must be [B, L, D={self.weight.shape[1]}], got "
                             f"{tuple(hidden.shape)}")
        if tuple(mask_positions.shape) != (hidden.shape[0],) or bool((mask_positions < 0).any()):
            raise ValueError("ClassEmbeddingHead: mask_positions must be [B] positions >= 0 (the template needs a "
                             "'mask' item)")
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), mask_positions]
        if self.transform is not None:
            h = self.transform(h)
        out = label_map(h, weight=self.weight.t().to(h.dtype), backend=self.backend)
        return out + self.bias.to(out.dtype) if self.bias is not None else out
