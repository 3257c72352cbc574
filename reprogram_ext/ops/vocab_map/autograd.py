"""Fake (meta) kernels and the autograd of the vocab_map ops, one for every kernel backend: the
compiled ops (``vocab_map_forward`` / ``vocab_map_backward``, CPU and CUDA) and the Triton ones.

The forward's auxiliary outputs (``stats``, ``soft``, ``hard_index``: schemas.cpp) are saved for
the backward op with the inputs and ``out``, and have no gradient. The backward ops are not
differentiable: with create_graph=True the backward raises (the reference backend differentiates
twice).
"""
from __future__ import annotations

import torch

from .options import has_softmax, is_hard


def fake_forward(tokens, theta, embedding, tau, mode, seed, chunk):
    B, L = tokens.shape
    N, D = B * L, embedding.shape[1]
    return (theta.new_empty((B, L, D)), theta.new_empty((N, 2) if has_softmax(mode) else (0,)),
            theta.new_empty((N, D) if is_hard(mode) else (0,)), tokens.new_empty((N,) if is_hard(mode) else (0,)))


def fake_backward(grad_out, tokens, theta, embedding, out, stats, soft, hard_index, tau, mode, seed, chunk,
                  need_embedding_grad):
    return torch.empty_like(theta), (torch.empty_like(embedding) if need_embedding_grad else embedding.new_empty((0,)))


def no_double_backward() -> str:
    return ("vocab_map: higher-order gradients are not supported by the kernel backends (the backward was asked "
            "to build a graph, create_graph=True); use backend=\"reference\" for double backward")


def _setup(ctx, inputs, output):
    tokens, theta, embedding, tau, mode, seed, chunk = inputs
    out, stats, soft, hard_index = output
    ctx.options = (tau, mode, seed, chunk)
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(stats, soft, hard_index)
    ctx.save_for_backward(tokens, theta, embedding, out, stats, soft, hard_index)


def make_backward(backward_op):
    def backward(ctx, grad_out, _grad_stats, _grad_soft, _grad_index):
        if grad_out is None or not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            return (None,) * 7
        if torch.is_grad_enabled():
            raise RuntimeError(no_double_backward())
        tokens, theta, embedding, out, stats, soft, hard_index = ctx.saved_tensors
        need_e = ctx.needs_input_grad[2]
        grad_theta, grad_e = backward_op(grad_out.contiguous(), tokens, theta, embedding, out, stats, soft,
                                         hard_index, *ctx.options, need_e)
        return (None, grad_theta if ctx.needs_input_grad[1] else None, grad_e if need_e else None,
                None, None, None, None)

    return backward


def register_autograd(forward: str, backward_op) -> None:
    """Autograd of a backend's forward op (qualified name), backed by its backward op (op object)."""
    torch.library.register_autograd(forward, make_backward(backward_op), setup_context=_setup)


def register_compiled() -> None:
    """Fake kernels and autograd of the compiled (C++ CPU / CUDA) ops."""
    torch.library.register_fake("reprogram_ext::vocab_map_forward")(fake_forward)
    torch.library.register_fake("reprogram_ext::vocab_map_backward")(fake_backward)
    register_autograd("reprogram_ext::vocab_map_forward", torch.ops.reprogram_ext.vocab_map_backward)
