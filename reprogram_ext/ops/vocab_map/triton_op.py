"""Triton backend of vocab_map: the ops ``reprogram_ext::vocab_map_{forward,backward}_triton`` with the
schemas and results of the compiled ops (csrc/schemas.cpp). Kernels: ``triton_kernels.py``.

Imported lazily on the first ``backend="triton"`` call (TRITON_INTERPRET must be set before
triton is imported). On CUDA tensors the kernels run on the current stream; on CPU tensors under
the Triton interpreter.

Launch plan: the forward is one fused launch (row tiles x D tiles, an online softmax over all of
V_s inside each program). The backward walks V_s in chunks: per chunk one launch writes
``dz`` (and ``p`` for the embedding gradient) as ``[N, chunk]``; the θ-gradient chunk is then the
deterministic scatter of ``dz`` by each window offset's tokens (``index_add_`` on CPU under the
interpreter, the sorted accumulating ``index_put_`` on CUDA — no float atomics) and ``dE[chunk] = pᵀ g`` one GEMM.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import autograd as registration
from . import triton_kernels as kernels
from .noise import seed_key
from .options import MODES, has_softmax, is_hard

MODE_CODES = {name: code for code, name in enumerate(MODES)}  # softmax 0, gumbel 1, gumbel_hard 2, none 3


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _blocks(D: int, device: torch.device) -> dict:
    if device.type == "cuda":
        return dict(BLOCK_N=32, BLOCK_V=32, BLOCK_D=min(64, max(16, triton.next_power_of_2(D))))
    return dict(BLOCK_N=16, BLOCK_V=32, BLOCK_D=max(16, min(64, triton.next_power_of_2(D))))


def _check(tokens: Tensor, theta: Tensor, embedding: Tensor, tau: float, mode: str, chunk: int) -> None:
    """What would make these kernels silently wrong, checked again for direct callers of the ops."""
    torch._check_value(mode in MODES, lambda: f"vocab_map (triton): mode must be one of {MODES}, got {mode!r}")
    torch._check_value(theta.dim() == 3 and theta.shape[0] % 2 == 1,
                       lambda: f"vocab_map (triton): theta must be [w, V_t, V_s] with odd w, got {tuple(theta.shape)}")
    torch._check_value(embedding.dim() == 2 and embedding.shape[0] == theta.shape[2],
                       lambda: f"vocab_map (triton): embedding must be [V_s={theta.shape[2]}, D], got "
                               f"{tuple(embedding.shape)}")
    torch._check_value(tokens.dim() == 2 and tokens.numel() > 0, lambda: "vocab_map (triton): tokens must be [B, L]")
    torch._check_value(tau > 0 and chunk >= 1,
                       lambda: f"vocab_map (triton): tau > 0 and chunk >= 1, got {tau}, {chunk}")


def vocab_map_forward_triton(tokens: Tensor, theta: Tensor, embedding: Tensor, tau: float, mode: str, seed: int,
                             chunk: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    _check(tokens, theta, embedding, tau, mode, chunk)
    B, L = tokens.shape
    w, V_t, V_s = theta.shape
    N, D = B * L, embedding.shape[1]
    out = theta.new_empty((B, L, D))
    stats = theta.new_empty((N, 2) if has_softmax(mode) else (0,))
    soft = theta.new_empty((N, D) if is_hard(mode) else (0,))
    hard = tokens.new_empty((N,) if is_hard(mode) else (0,))
    blocks = _blocks(D, tokens.device)
    grid = (triton.cdiv(N, blocks["BLOCK_N"]), triton.cdiv(D, blocks["BLOCK_D"]))
    wrap_triton(kernels.vocab_map_forward_kernel)[grid](
        tokens, theta, embedding, out, stats if stats.numel() else out, soft if soft.numel() else out,
        hard if hard.numel() else tokens, N, L, V_t, V_s, D, 1.0 / tau, seed_key(seed), W=w, MODE=MODE_CODES[mode],
        ACC=_acc(theta.dtype), **blocks)
    return out, stats, soft, hard


def _offsets(w: int, L: int):
    """(j, shift, lo, hi) of each window offset whose positions [lo, hi) stay inside the sequence."""
    for j in range(w):
        s = j - w // 2
        lo, hi = max(0, -s), min(L, L - s)
        if lo < hi:
            yield j, s, lo, hi


def _add_rows(dst: Tensor, index: Tensor, src: Tensor) -> None:
    """dst[index[r]] += src[r], deterministically (CUDA: sorted accumulate; CPU: a serial loop)."""
    if dst.is_cuda:
        dst.index_put_((index,), src, accumulate=True)
    else:
        dst.index_add_(0, index, src)


def vocab_map_backward_triton(grad_out: Tensor, tokens: Tensor, theta: Tensor, embedding: Tensor, out: Tensor,
                              stats: Tensor, soft: Tensor, hard_index: Tensor, tau: float, mode: str, seed: int,
                              chunk: int, need_embedding_grad: bool) -> Tuple[Tensor, Tensor]:
    _check(tokens, theta, embedding, tau, mode, chunk)
    B, L = tokens.shape
    w, V_t, V_s = theta.shape
    N, D = B * L, embedding.shape[1]
    g = grad_out.reshape(N, D).to(theta.dtype).contiguous()
    grad_theta = torch.zeros_like(theta)
    need_p = need_embedding_grad and not is_hard(mode)
    grad_e = (torch.zeros_like(embedding) if is_hard(mode) else torch.empty_like(embedding)) if need_embedding_grad \
        else embedding.new_empty((0,))
    if has_softmax(mode):
        soft_out = soft if is_hard(mode) else out.reshape(N, D)
        delta = (g * soft_out).sum(1).contiguous()
    else:
        delta = g.new_empty((0,))
    blocks = _blocks(D, tokens.device)
    offsets = list(_offsets(w, L))
    for v0 in range(0, V_s, chunk):
        width = min(chunk, V_s - v0)
        dz = theta.new_empty((N, width))
        p = theta.new_empty((N, width) if need_p else (0,))
        grid = (triton.cdiv(N, blocks["BLOCK_N"]), triton.cdiv(width, blocks["BLOCK_V"]))
        wrap_triton(kernels.vocab_map_backward_chunk_kernel)[grid](
            tokens, theta, embedding, g, stats if stats.numel() else g, delta if delta.numel() else g, dz,
            p if need_p else dz, N, L, V_t, V_s, D, v0, width, 1.0 / tau, seed_key(seed), W=w, MODE=MODE_CODES[mode],
            NEED_P=need_p, ACC=_acc(theta.dtype), **blocks)
        dz3 = dz.view(B, L, width)
        for j, s, lo, hi in offsets:
            _add_rows(grad_theta[j, :, v0:v0 + width], tokens[:, lo + s:hi + s].reshape(-1),
                      dz3[:, lo:hi].reshape(-1, width))
        if need_p:
            torch.mm(p.t(), g, out=grad_e[v0:v0 + width])
    if need_embedding_grad and is_hard(mode):
        _add_rows(grad_e, hard_index, g)
    return grad_theta, grad_e


def forward_op():
    return torch.ops.reprogram_ext.vocab_map_forward_triton


def _define_ops() -> None:
    """Defines the two ops: ``torch.library.triton_op`` when the kernels are traceable (GPU), else
    (TRITON_INTERPRET=1) opaque ``custom_op``s with the same bodies and the compiled ops' fake kernels."""
    traceable = isinstance(kernels.vocab_map_forward_kernel, triton.runtime.JITFunction)
    define = torch.library.triton_op if traceable else torch.library.custom_op
    for name, fn, fake in (("vocab_map_forward", vocab_map_forward_triton, registration.fake_forward),
                           ("vocab_map_backward", vocab_map_backward_triton, registration.fake_backward)):
        op = define(f"reprogram_ext::{name}_triton", mutates_args=())(fn)
        if not traceable:
            op.register_fake(fake)
    registration.register_autograd("reprogram_ext::vocab_map_forward_triton",
                                   torch.ops.reprogram_ext.vocab_map_backward_triton)


_define_ops()
