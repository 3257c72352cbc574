"""Benchmark cases of ``vocab_map`` (docs/ops/vocab_map.md): Neekhara 2019's rewriter in training.

Setting (Neekhara et al. 2019, paarthneekhara/rnn_adversarial_reprogramming): window w = 5 (its
``filter_width`` default), mode "gumbel" (its training path), a character-level target vocabulary of
V_t = 64 tokens (its Names / character datasets hold about that many symbols), θ trained, the
source embedding frozen. B·L = 2048 rows (16 sequences of 128 tokens).

- ``vocab_map_neekhara_32k`` (the issue's size, ``--all`` or ``--cases 'vocab_map_*32k'``):
  V_s = 32000, D = 768 — about 200 GFLOP per fwd+bwd, several seconds a call on 2 CPU cores;
- ``vocab_map_neekhara_2k`` (the default run): V_s = 2048, D = 256 — the same rows and window,
  47x fewer FLOPs (the eager reference's int64 noise over [N, V_s] alone takes seconds per call
  on 2 busy cores at V_s = 8192, too long for the default run's time budget).

FLOPs (multiply-adds x 2) the op must do: forward ``p @ E``: 2·N·V_s·D; backward (θ only):
``dp = g Eᵀ``: 2·N·V_s·D — 4·N·V_s·D per fwd+bwd (6·N·V_s·D with the embedding's gradient). The
windowed gathers, the noise and the softmax are O(N·V_s·w) on top. The machine's GEMM rate is
measured in the same process on ``[N, chunk] @ [chunk, D]`` (the op's own product shape) and the
targets report the fraction of it the op's fwd+bwd reaches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

import reprogram_ext

from .case_types import Case, CaseInstance, CaseUnavailable, grad_backward, op_impls
from .utils import tensor_bytes

WINDOW, TARGET_VOCAB, BATCH, LENGTH, TAU = 5, 64, 16, 128, 0.5


@dataclass(frozen=True)
class VocabSize:
    batch: int
    length: int
    window: int
    target_vocab: int
    source_vocab: int
    dim: int

    @property
    def rows(self) -> int:
        return self.batch * self.length

    @property
    def flops_fwdbwd(self) -> int:
        return 4 * self.rows * self.source_vocab * self.dim


SIZES = {
    "2k": (VocabSize(BATCH, LENGTH, WINDOW, TARGET_VOCAB, 2048, 256), "default size: V_s = 2048, D = 256", "default"),
    "32k": (VocabSize(BATCH, LENGTH, WINDOW, TARGET_VOCAB, 32000, 768), "the issue's size: V_s = 32000, D = 768",
            "extended"),
}
TINY = VocabSize(2, 7, 3, 5, 53, 6)

# Measured GEMM rate (GFLOP/s) per case name, filled when the case is built; read by bench/targets.py.
GEMM_GFLOPS: dict = {}
FLOPS: dict = {}


def measure_gemm_gflops(size: VocabSize, device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of ``torch.mm([N, chunk], [chunk, D])`` with vocab_map's default chunk: the best of
    repeated calls within ``seconds`` (a machine's attainable rate on this product shape)."""
    from reprogram_ext.ops.vocab_map.options import default_chunk

    chunk = default_chunk(size.rows, size.source_vocab)
    a = torch.randn(size.rows, chunk, device=device, dtype=dtype)
    b = torch.randn(chunk, size.dim, device=device, dtype=dtype)
    out = torch.empty(size.rows, size.dim, device=device, dtype=dtype)
    best = float("inf")
    begin = time.perf_counter()
    while time.perf_counter() - begin < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size.rows * chunk * size.dim / best / 1e9


def _build(name: str, size: VocabSize):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        vocab_map = getattr(reprogram_ext, "vocab_map", None)
        if vocab_map is None:
            raise CaseUnavailable("reprogram_ext.vocab_map is not in this build")
        if dtype not in (torch.float32, torch.float64):
            raise CaseUnavailable(f"vocab_map takes float32 / float64, not {dtype}")
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, size.target_vocab, (size.batch, size.length), generator=g).to(device)
        bound = 1.0 / (size.target_vocab * size.window) ** 0.5
        theta = ((torch.rand(size.window, size.target_vocab, size.source_vocab, generator=g) * 2 - 1) * bound)
        theta = theta.to(device, dtype).requires_grad_(True)
        embedding = torch.randn(size.source_vocab, size.dim, generator=g).to(device, dtype)
        grad_out = torch.randn(size.batch, size.length, size.dim, generator=g).to(device, dtype)

        def call(tokens, theta, embedding, *, backend):
            return vocab_map(tokens, theta, embedding, tau=TAU, mode="gumbel", seed=1234, backend=backend)

        impls = op_impls(call, (tokens, theta, embedding), grad_backward([theta], grad_out), device)
        GEMM_GFLOPS[name] = measure_gemm_gflops(size, device, dtype)
        FLOPS[name] = size.flops_fwdbwd
        theta_bytes = tensor_bytes(theta.shape, dtype)
        emb_bytes = tensor_bytes(embedding.shape, dtype)
        out_bytes = tensor_bytes(grad_out.shape, dtype)
        instance = CaseInstance(impls, bytes_fwd=theta_bytes + emb_bytes + out_bytes,
                                bytes_bwd=2 * theta_bytes + emb_bytes + 2 * out_bytes)
        instance.notes.append(f"{size.flops_fwdbwd / 1e9:.1f} GFLOP per fwd+bwd (4·N·V_s·D); measured GEMM rate "
                              f"{GEMM_GFLOPS[name]:.1f} GFLOP/s on [N, chunk] @ [chunk, D]")
        return instance

    return build


def cases(sizes: str = "default") -> list:
    result = []
    for key, (size, models, tier) in SIZES.items():
        name = f"vocab_map_neekhara_{key}"
        if sizes == "tiny":
            size = TINY
        params = dict(B=size.batch, L=size.length, w=size.window, V_t=size.target_vocab, V_s=size.source_vocab,
                      D=size.dim, mode="gumbel", tau=TAU)
        result.append(Case("vocab_map", name, f"Neekhara 2019 rewriter (w=5, Gumbel-softmax, V_t=64), {models}",
                           params, _build(name, size), headline=key == "32k", tier=tier))
    return result
