"""``VocabMapping``: the input side of text reprogramming through ``vocab_map`` (docs/ops/vocab_map.md).

Target token ids ``[B, L]`` -> source-model input embeddings ``[B, L, D]``:
``out = p(z) @ E`` with ``z[b, i] = Σ_j θ[j, tokens[b, i + j − w//2]] (+ bias)``, ``E`` the source
model's (frozen) token embeddings, ``p`` softmax / Gumbel-softmax at temperature ``tau`` / identity.
Neekhara et al. 2019 (a width-w convolution over one-hot target tokens, Gumbel-softmax, a bias);
R2DL (Vinod et al. 2020: w = 1, mode "none": each target embedding a learned combination of the
source embeddings).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..ops.vocab_map.options import MODES


class VocabMapping(nn.Module):
    """``vocab_map(tokens, θ (+ bias at the window centre), E, tau, mode)`` with trainable ``θ [w, V_t, V_s]``.

    ``embedding [V_s, D]``: the source model's input embeddings, kept as a buffer (frozen) unless
    ``train_embedding=True`` (then a parameter). ``bias=True`` adds a trained ``[V_s]`` bias to every
    position's ``z`` (a convolution's bias: added to the centre offset's θ row, which every position
    has). ``eval_mode``: the mode used in eval mode (None: ``mode``); Neekhara's rewriter takes
    Gumbel-softmax in training and softmax at ``eval_tau`` in eval. θ and bias start from
    ``nn.Conv1d``'s default initialisation (uniform in ±1/√(V_t·w)), or zeros with ``init="zeros"``.
    """

    def __init__(self, num_tokens: int, embedding: torch.Tensor, *, window: int = 1, mode: str = "softmax",
                 tau: float = 1.0, bias: bool = False, eval_mode: Optional[str] = None,
                 eval_tau: Optional[float] = None,
                 train_embedding: bool = False, init: str = "conv", backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(embedding, torch.Tensor) or embedding.dim() != 2:
            raise ValueError(f"VocabMapping: embedding must be [V_s, D], got "
                             f"{getattr(embedding, 'shape', type(embedding).__name__)}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"VocabMapping: window must be an odd positive int, got {window!r}")
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"VocabMapping: num_tokens (V_t) must be a positive int, got {num_tokens!r}")
        for name, m in (("mode", mode), ("eval_mode", eval_mode)):
            if m is not None and m not in MODES:
                raise ValueError(f"VocabMapping: {name} must be one of {MODES}, got {m!r}")
        if init not in ("conv", "zeros"):
            raise ValueError(f"VocabMapping: init must be 'conv' or 'zeros', got {init!r}")
        V_s = embedding.shape[0]
        dtype = embedding.dtype if embedding.dtype in (torch.float32, torch.float64) else torch.float32
        bound = 1.0 / math.sqrt(num_tokens * window)  # nn.Conv1d's default: kaiming_uniform(a=√5) = U(±1/√fan_in)
        theta = torch.empty(window, num_tokens, V_s, dtype=dtype)
        if init == "conv":
            theta.uniform_(-bound, bound)
        else:
            theta.zero_()
        self.theta = nn.Parameter(theta)
        self.bias = nn.Parameter(torch.empty(V_s, dtype=dtype).uniform_(-bound, bound) if init == "conv"
                                 else torch.zeros(V_s, dtype=dtype)) if bias else None
        E = embedding.detach().to(dtype).clone()
        if train_embedding:
            self.embedding = nn.Parameter(E)
        else:
            self.register_buffer("embedding", E)
        self.mode, self.tau = mode, float(tau)
        self.eval_mode, self.eval_tau = eval_mode, eval_tau
        self.backend = backend
        self.generator: Optional[torch.Generator] = None

    @property
    def window(self) -> int:
        return self.theta.shape[0]

    def extra_repr(self) -> str:
        w, V_t, V_s = self.theta.shape
        return (f"num_tokens={V_t}, num_source_tokens={V_s}, dim={self.embedding.shape[1]}, window={w}, "
                f"mode={self.mode!r}, tau={self.tau}, bias={self.bias is not None}, eval_mode={self.eval_mode!r}")

    def effective_theta(self) -> torch.Tensor:
        """θ with the bias added to the centre offset's rows (θ itself without a bias)."""
        if self.bias is None:
            return self.theta
        centre = self.window // 2
        rows = [self.theta[j] + self.bias if j == centre else self.theta[j] for j in range(self.window)]
        return torch.stack(rows)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        from ..ops.vocab_map import vocab_map

        mode, tau = self.mode, self.tau
        if not self.training and self.eval_mode is not None:
            mode = self.eval_mode
            tau = self.eval_tau if self.eval_tau is not None else tau
        return vocab_map(tokens, self.effective_theta(), self.embedding, tau=tau, mode=mode, generator=self.generator,
                         backend=self.backend)
