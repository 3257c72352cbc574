"""Fake (meta) kernels of the label_map / mapped_cross_entropy ops, and autograd of the Triton ones.

The backward of each forward op is its registered backward op (compiled or Triton):
``label_map_backward`` / ``mapped_cross_entropy_backward`` return the logits gradient and the
sparse weight gradient. The forward ops' auxiliary outputs (label_map's ``row_lse``;
mapped_cross_entropy's ``unit_grad`` and ``dense``) are saved for them and have no gradient.
The backward ops are not differentiable: with create_graph=True the backward raises.
"""
from __future__ import annotations

import torch

from .args import accumulation_dtype
from .options import ce_needs_lse, map_needs_lse


def _acc_empty(logits: torch.Tensor, *shape) -> torch.Tensor:
    return logits.new_empty(shape, dtype=accumulation_dtype(logits.dtype))


def fake_label_map_forward(logits, index, weight, reduce, pre, topk=0):
    N = logits.shape[0]
    return logits.new_empty((N, index.shape[0])), _acc_empty(logits, *((N, 2) if map_needs_lse(pre) else (0,)))


def fake_label_map_backward(grad_out, logits, index, weight, row_lse, reduce, pre, need_weight_grad, topk=0,
                            forward_out=None):
    need_w = need_weight_grad and weight is not None
    return torch.empty_like(logits), _acc_empty(logits, *(index.shape if need_w else (0,)))


def fake_ce_forward(logits, target, index, weight, reduce, pre, label_smoothing, ignore_index, topk=0):
    N = logits.shape[0]
    dense = (N, 3) if ce_needs_lse(pre, reduce, weight is not None) else (0,)
    return _acc_empty(logits, N), _acc_empty(logits, N, *index.shape), _acc_empty(logits, *dense)


def fake_ce_backward(grad_loss, logits, target, index, weight, unit_grad, dense, reduce, pre, label_smoothing,
                     ignore_index, need_weight_grad, topk=0):
    need_w = need_weight_grad and weight is not None
    return torch.empty_like(logits), _acc_empty(logits, *(index.shape if need_w else (0,)))


def no_double_backward(op: str) -> str:
    """The refusal of create_graph=True (the backward ops are not differentiable); the same text as
    csrc/label_map/autograd.cpp."""
    return (f"{op}: higher-order gradients are not supported (the backward was asked to build a graph, "
            "create_graph=True); use backend=\"reference\" for double backward")


def _refuse_graph(op: str) -> None:
    if torch.is_grad_enabled():  # create_graph=True: the backward op is not differentiable
        raise RuntimeError(no_double_backward(op))


def _weight_grad(gw, weight, needed):
    return gw if needed and weight is not None else None


def _label_map_setup(ctx, inputs, output):
    logits, index, weight, reduce, pre, *topk = inputs
    ctx.reduce, ctx.pre, ctx.topk = reduce, pre, (topk or [0])[0]
    ctx.set_materialize_grads(False)  # no zero tensors for the auxiliary outputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(logits, index, weight, output[1])


def make_label_map_backward(backward_op):
    def backward(ctx, grad_out, _grad_row_lse):
        if grad_out is None:  # the output took no part in the loss
            return (None,) * 6
        _refuse_graph("label_map")
        logits, index, weight, row_lse = ctx.saved_tensors
        need_w = weight is not None and ctx.needs_input_grad[2]
        grad, gw = backward_op(grad_out.contiguous(), logits, index, weight, row_lse, ctx.reduce, ctx.pre, need_w,
                               ctx.topk)
        return grad, None, _weight_grad(gw, weight, need_w), None, None, None

    return backward


def _ce_setup(ctx, inputs, output):
    logits, target, index, weight, reduce, pre, label_smoothing, ignore_index, *topk = inputs
    ctx.options = (reduce, pre, label_smoothing, ignore_index)
    ctx.topk = (topk or [0])[0]
    ctx.set_materialize_grads(False)  # no zero tensors for the auxiliary outputs
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(logits, target, index, weight, output[1], output[2])


def make_ce_backward(backward_op):
    def backward(ctx, grad_loss, _grad_unit, _grad_dense):
        if grad_loss is None:  # the loss took no part in the result
            return (None,) * 9
        _refuse_graph("mapped_cross_entropy")
        logits, target, index, weight, unit_grad, dense = ctx.saved_tensors
        need_w = weight is not None and ctx.needs_input_grad[3]
        grad, gw = backward_op(grad_loss.contiguous(), logits, target, index, weight, unit_grad, dense, *ctx.options,
                               need_w, ctx.topk)
        return grad, None, None, _weight_grad(gw, weight, need_w), None, None, None, None, None

    return backward


def register_fakes(namespace: str = "reprogram_ext") -> None:
    """Fake kernels of the compiled ops (Triton ops get theirs from torch.library.triton_op)."""
    torch.library.register_fake(f"{namespace}::label_map_forward")(fake_label_map_forward)
    torch.library.register_fake(f"{namespace}::label_map_backward")(fake_label_map_backward)
    torch.library.register_fake(f"{namespace}::mapped_cross_entropy_forward")(fake_ce_forward)
    torch.library.register_fake(f"{namespace}::mapped_cross_entropy_backward")(fake_ce_backward)


def register_autograd(label_map_forward: str, label_map_backward, ce_forward: str, ce_backward) -> None:
    """Autograd of a backend's forward ops (qualified names), backed by its backward ops (op objects)."""
    torch.library.register_autograd(label_map_forward, make_label_map_backward(label_map_backward),
                                    setup_context=_label_map_setup)
    torch.library.register_autograd(ce_forward, make_ce_backward(ce_backward), setup_context=_ce_setup)


def register_compiled() -> None:
    """Fake kernels of the compiled (C++ / CUDA) ops. Their autograd is registered in C++
    (csrc/label_map/autograd.cpp, the same contract as ``register_autograd``): these ops run per
    step on small tensors, where this module's Python wrapper cost as much as the kernels."""
    register_fakes()
