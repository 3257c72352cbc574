"""WARP, Hambardzumyan, Khachatrian & May 2021, "WARP: Word-level Adversarial ReProgramming"
(YerevaNN/WARP: ``arp/injector.py``, ``arp/tokenizers.py``, ``arp/pretrained_mlm.py``,
``arp/poolers.py``, ``configs/warp.jsonnet``, README's "Training WARP" command).

The original, read from that repository:
- prompts are learned word embeddings substituted for placeholder tokens (``ArpInjector``:
  ``embeddings[input == id] = prompt``); the template is a list split at ``null`` into the tokens
  before the first segment, between the segments and after them, wrapped in the model's special
  tokens (``<s> … </s>`` / ``[CLS] … [SEP]``). README's WARP: 5 prompts, text, 5 prompts,
  ``<mask>``, 5 prompts, (second text), 5 prompts — 20 prompts;
- prompt initialisation ``prompt_better_init``: ``"<mask>"`` (README) copies the [MASK] token's
  embedding; ``true``: N(mean, std) of the embedding matrix; ``false``: N(0, 1);
- the encoder is frozen (``train_parameters: "only_prompts"``, ``eval_mode: true``: dropout off);
- the output: the last hidden state at the [MASK] position through the masked-LM head's transform
  (``on_logits: "pre_decoder_layer_norm"``: dense, GELU, LayerNorm), then a trained linear
  classifier with bias (``classifier_bias: true``) whose rows are the class embeddings, initialised
  from verbalizer tokens' output embeddings (``classifier_init``) or at random (``null``).

Here: ``EmbeddingPrompt`` (template ``["cls", 5, "input", 5, "mask", 10, "sep"]`` for one text:
README's layout with the empty second segment) and ``ClassEmbeddingHead`` (``label_map``'s dense
form), joined by ``WarpReprogrammer``. Deliberate differences: one text segment (a pair is given as
one input with its separator inside); the original's ``reorder_optimized`` permutation (moving the
mask to position 1, with position ids kept) is an efficiency device that changes no result and is
not reproduced; ``classifier_init=None`` draws the class embeddings as ``nn.Linear``'s default.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

from ..nn.embedding_prompt import ClassEmbeddingHead, EmbeddingPrompt

TEMPLATE = ("cls", 5, "input", 5, "mask", 10, "sep")
PROMPT_INITS = ("mask", "stats", "normal")


def mlm_transform(model: nn.Module) -> Optional[nn.Module]:
    """The masked-LM head's transform before its decoder (dense, activation, LayerNorm) of a
    transformers BERT-style (``cls.predictions.transform``) or RoBERTa-style (``lm_head``) model."""
    cls = getattr(model, "cls", None)
    if cls is not None and hasattr(getattr(cls, "predictions", None), "transform"):
        return cls.predictions.transform
    head = getattr(model, "lm_head", None)
    if head is not None and hasattr(head, "dense") and hasattr(head, "layer_norm"):
        return nn.Sequential(head.dense, nn.GELU(), head.layer_norm)
    return None


class WarpReprogrammer(nn.Module):
    """``head(model(prompt(embed(input_ids))).hidden_states[-1], mask_positions)`` with the model frozen.

    ``forward(input_ids [B, L], attention_mask [B, L] or None)``: the texts' token ids without
    special tokens (right-padded; the template adds them), -> class logits ``[B, T]``.
    """

    def __init__(self, model: nn.Module, prompt: EmbeddingPrompt, head: ClassEmbeddingHead) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.input_transform = prompt
        self.output_mapping = head

    def train(self, mode: bool = True) -> "WarpReprogrammer":
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        embeds = self.model.get_input_embeddings()(input_ids)
        prompted = self.input_transform(embeds, attention_mask)
        out = self.model(inputs_embeds=prompted.inputs_embeds, attention_mask=prompted.attention_mask,
                         output_hidden_states=True)
        return self.output_mapping(out.hidden_states[-1], prompted.mask_positions)


class WarpRecipe(NamedTuple):
    """WARP's trainable layers; ``reprogrammer(model)`` joins them around the frozen model."""

    input_transform: EmbeddingPrompt
    output_mapping: ClassEmbeddingHead

    def reprogrammer(self, model: nn.Module) -> WarpReprogrammer:
        return WarpReprogrammer(model, self.input_transform, self.output_mapping)


def warp(model: nn.Module, num_target: int, *, mask_token_id: int, cls_token_id: Optional[int] = None,
         sep_token_id: Optional[int] = None, template: Sequence = TEMPLATE,
         class_init: Optional[Sequence[int]] = None, prompt_init: str = "mask",
         generator: Optional[torch.Generator] = None, backend: str = "auto") -> WarpRecipe:
    """WARP's recipe for a transformers masked-LM ``model`` (see the module docstring).

    ``mask_token_id`` / ``cls_token_id`` / ``sep_token_id``: the tokenizer's special ids (the
    template's ``"mask"``, ``"cls"``, ``"sep"`` items are those rows of the word embeddings);
    ``class_init``: one verbalizer token id per class (their output embeddings start the class
    embeddings) or None; ``prompt_init``: ``"mask"`` / ``"stats"`` / ``"normal"``
    (``prompt_better_init`` ``"<mask>"`` / ``true`` / ``false``).
    """
    if prompt_init not in PROMPT_INITS:
        raise ValueError(f"warp: prompt_init must be one of {PROMPT_INITS}, got {prompt_init!r}")
    words = model.get_input_embeddings().weight.detach()
    ids = {"mask": mask_token_id, "cls": cls_token_id, "sep": sep_token_id}
    fixed = {}
    for name in {item for item in template if isinstance(item, str) and item != "input"}:
        if ids.get(name) is None:
            raise ValueError(f"warp: the template uses {name!r}: give {name}_token_id")
        fixed[name] = words[ids[name]]
    prompt = EmbeddingPrompt(words.shape[1], template, fixed=fixed, generator=generator,
                             init_vector=words[mask_token_id] if prompt_init == "mask" else None,
                             init_from=words if prompt_init == "stats" else None)
    D = words.shape[1]
    if class_init is not None:
        if len(class_init) != num_target:
            raise ValueError(f"warp: class_init must hold one token id per class ({num_target}), got {len(class_init)}")
        out_words = model.get_output_embeddings().weight.detach()
        classes = out_words[torch.as_tensor(list(class_init), dtype=torch.int64)]
    else:  # nn.Linear(D, T)'s default initialisation
        bound = 1.0 / math.sqrt(D)
        classes = torch.empty(num_target, D).uniform_(-bound, bound, generator=generator)
    head = ClassEmbeddingHead(classes, transform=mlm_transform(model), bias=True, backend=backend)
    if class_init is None:
        with torch.no_grad():
            head.bias.uniform_(-1.0 / math.sqrt(D), 1.0 / math.sqrt(D), generator=generator)
    return WarpRecipe(prompt, head)
