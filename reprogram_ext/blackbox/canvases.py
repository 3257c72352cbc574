"""The query canvases of one zero-order step, for any input transformation.

Two ways, one set of directions (those of ``perturbation_bank`` for the step's seed):

- ``PromptBank`` — a masked-perturb prompt layer (``PaddingPrompt``, ``TimeSeriesPrompt``,
  ``AdditivePrompt`` of kind ``"full"`` / ``"pad"``) whose only trainable parameter is ``delta``:
  θ = ``delta`` and the Q canvases ``[Q, B, C, *S]`` are one fused ``perturbation_bank`` call with the
  layer's own options (x read once, directions never stored).
- ``ParameterBank`` — any other module (BlackVIP's coordinator, an SMM mask network, a patch prompt):
  θ = its trainable parameters flattened to ``[1, d]``; the perturbed vectors are θ + β·u_j (or
  θ ± β·u_j, in the bank's order) with the bank's directions (``zo_directions``), and canvas j is the
  module run with vector j (``torch.func.functional_call``).

Either way ``theta`` is the tensor the estimate is made for, and ``zo_gradient(losses, theta, ...)``
with the same seed regenerates the same directions.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from torch.func import functional_call

from ..nn.layer_args import check_input
from ..nn.prompts import AdditivePrompt, PaddingPrompt, TimeSeriesPrompt


def _bank():
    from . import perturbation_bank, zo_directions  # the bank's public functions (blackbox/__init__.py)

    return perturbation_bank, zo_directions


def _prompt_options(layer: nn.Module) -> Optional[dict]:
    """``masked_perturb`` options of a prompt layer's forward, or None when the layer is not one of them."""
    common = dict(activation=getattr(layer, "activation", None), backend=getattr(layer, "backend", "auto"))
    if type(layer) is PaddingPrompt:
        return dict(common, resize=layer.resize, resize_mode=layer.resize_mode, offset=layer.offset,
                    normalize="after", mean=layer.mean, std=layer.std, clamp=layer.clamp)
    if type(layer) is AdditivePrompt and layer.kind != "patch":
        return dict(common, offset=(0, 0), normalize="after", mean=layer.mean, std=layer.std, clamp=layer.clamp)
    if type(layer) is TimeSeriesPrompt:
        return dict(common, offset=[(o,) for o in layer.offsets], normalize="none")
    return None


def _trainable(module: nn.Module) -> List[tuple]:
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


class PromptBank:
    """Fused canvases of a prompt layer: ``perturbation_bank(x, delta, mask, ...)`` with its options."""

    def __init__(self, layer: nn.Module, options: dict) -> None:
        self.layer, self.options = layer, options
        self.params = [layer.delta]

    @property
    def theta(self) -> torch.Tensor:
        return self.layer.delta.detach()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, TimeSeriesPrompt):
            x = x.unsqueeze(1) if x.dim() == 2 else x
            check_input(x, (self.layer.input_length,), type(self.layer).__name__)
        else:
            size = self.layer.input_size if isinstance(self.layer, PaddingPrompt) else self.layer.image_size
            check_input(x, size, type(self.layer).__name__)
        return x

    def canvases(self, x: torch.Tensor, queries: range, *, q: int, beta: float, seed: int,
                 directions: str, antithetic: bool) -> torch.Tensor:
        """Canvases ``[len(queries), B, C, *S]`` of a block of the step's queries (one fused bank call)."""
        return _bank()[0](self._prepare(x), self.theta, self.layer.mask, q=q, beta=beta, seed=seed,
                          directions=directions, antithetic=antithetic, queries=queries, **self.options)

    def set_grad(self, grad: torch.Tensor) -> None:
        self.layer.delta.grad = grad.to(self.layer.delta.dtype).reshape(self.layer.delta.shape)


class ParameterBank:
    """Canvases of any module from perturbed copies of its flattened trainable parameters."""

    def __init__(self, module: nn.Module) -> None:
        named = _trainable(module)
        if not named:
            raise ValueError(f"BlackBoxReprogrammer: the input transformation {type(module).__name__} has no "
                             "trainable parameters (requires_grad=True) to optimise")
        self.module = module
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]

    @property
    def theta(self) -> torch.Tensor:
        """The trainable parameters flattened into one row ``[1, d]`` (float32 unless they are float64)."""
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in self.params) else torch.float32
        return torch.cat([p.detach().reshape(-1).to(dtype) for p in self.params]).unsqueeze(0)

    def vectors(self, queries: range, *, q: int, beta: float, seed: int, directions: str,
                antithetic: bool) -> torch.Tensor:
        """The parameter vectors of the listed queries ``[len(queries), d]``, in the bank's order: query 0
        θ and query j θ + β·u_j; antithetic: query 2(j−1) θ + β·u_j and 2(j−1)+1 θ − β·u_j."""
        theta = self.theta
        u = _bank()[1](theta.shape[1:], seed=seed, q=q, directions=directions, dtype=theta.dtype, device=theta.device)
        if antithetic:
            vectors = torch.stack([theta[0] + beta * u, theta[0] - beta * u], dim=1).reshape(2 * q, -1)
        else:
            vectors = torch.cat([theta, theta[0] + beta * u])
        return vectors[queries.start:queries.stop]

    def _unflatten(self, vector: torch.Tensor) -> dict:
        out, start = {}, 0
        for name, p in zip(self.names, self.params):
            out[name] = vector[start:start + p.numel()].reshape(p.shape).to(p.dtype)
            start += p.numel()
        return out

    def canvases(self, x: torch.Tensor, queries: range, **kwargs) -> torch.Tensor:
        vectors = self.vectors(queries, **kwargs)
        with torch.no_grad():
            return torch.stack([functional_call(self.module, self._unflatten(v), (x,)) for v in vectors])

    def set_grad(self, grad: torch.Tensor) -> None:
        for p, g in zip(self.params, self._unflatten(grad.reshape(-1)).values()):
            p.grad = g


def canvas_source(transform: nn.Module):
    """The fused ``PromptBank`` when ``transform`` is a prompt layer training only ``delta``, else a ``ParameterBank``."""
    options = _prompt_options(transform)
    if options is not None and [n for n, _ in _trainable(transform)] == ["delta"]:
        return PromptBank(transform, options)
    return ParameterBank(transform)


__all__ = ["PromptBank", "ParameterBank", "canvas_source"]
