"""Benchmark cases of ``tokens_to_canvas`` (docs/ops/tokens_to_canvas.md; notes: bench/notes/tokens_to_canvas.md).

Setting: Neekhara et al. 2022 — B = 64 sequences of L = 512 tokens (BERT's padded length) drawn as
16 x 16 tanh patches on the 24 x 24 cells of a 384 x 384 RGB canvas (cells past L repeat the last
token), a base image + 0.2 * std * patch, clamped to [0, 1], normalised; the table trained. Tables of
V = 4 rows (DNA: A, C, G, T) and V = 30k rows (a BERT vocabulary, random ids).

Bytes the fused op must move (its minimum), float32:
  forward : write the output [B, 3, 384, 384] (113 MB) + read the tokens, the base image (1.8 MB,
            shared) and the table rows in use (V = 4: 12 KB; V = 30k: ~20k distinct rows, ~60 MB);
  backward: read grad_out (113 MB) + the same inputs (the clamp needs v) + write grad_table
            [V, 3, 16, 16] (V = 30k: 92 MB, mostly zeros).
"""
from __future__ import annotations

import torch

import reprogram_ext

from .case_types import Case, CaseInstance, CaseUnavailable, grad_backward, op_impls
from .utils import tensor_bytes

SIZES = {"v4": 4, "v30k": 30000}
BATCH, LENGTH, GRID, PATCH = 64, 512, 24, 16
TINY = dict(batch=3, length=5, grid=3, patch=4)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _build(vocab: int, batch: int, length: int, grid: int, patch: int):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        op = getattr(reprogram_ext, "tokens_to_canvas", None)
        if op is None:
            raise CaseUnavailable("reprogram_ext.tokens_to_canvas is not in this build")
        g = torch.Generator().manual_seed(0)
        size = grid * patch
        tokens = torch.randint(0, vocab, (batch, length), generator=g).to(device)
        table = torch.randn((vocab, 3, patch, patch), generator=g).to(device, dtype).requires_grad_(True)
        base = torch.rand((3, size, size), generator=g).to(device, dtype)
        weight = [0.2 * s for s in STD]

        def call(tokens, table, base, *, backend):
            return op(tokens, table, grid=grid, base=base, patch_weight=weight, clamp=(0.0, 1.0), mean=MEAN, std=STD,
                      backend=backend)

        out_shape = (batch, 3, size, size)
        grad_out = torch.randn(out_shape, generator=g).to(device, dtype)
        impls = op_impls(call, (tokens, table, base), grad_backward([table], grad_out), device)
        cells = grid * grid
        used = int(torch.unique(tokens).numel())
        rows = tensor_bytes((used, 3, patch, patch), dtype)
        small = tensor_bytes(tokens.shape, tokens.dtype) + tensor_bytes(base.shape, dtype) + rows
        out = tensor_bytes(out_shape, dtype)
        instance = CaseInstance(impls, out + small, out + small + tensor_bytes(table.shape, torch.float32),
                                out_shape=out_shape, out_dtype=dtype)
        instance.notes.append(f"{used} distinct tokens of V={vocab} over {batch}x{cells} cells")
        return instance

    return build


def cases(sizes: str = "default") -> list:
    result = []
    for key, vocab in SIZES.items():
        shape = TINY if sizes == "tiny" else dict(batch=BATCH, length=LENGTH, grid=GRID, patch=PATCH)
        params = dict(B=shape["batch"], L=shape["length"], grid=shape["grid"], P=shape["patch"], V=vocab)
        result.append(Case("tokens_to_canvas", f"tokens_{key}_b64",
                           f"Neekhara 2022: {vocab}-token table, 24x24 cells of 16x16 on a 384x384 canvas",
                           params, _build(min(vocab, 50) if sizes == "tiny" else vocab, **shape),
                           headline=True, tier="default"))
    return result
