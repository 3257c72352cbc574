"""Benchmark cases of the black-box (zeroth-order) step (docs/blackbox.md, notes: bench/notes/blackbox.md).

One ZO step's framework work, the source model's time excluded (the queries' losses are fixed numbers):
``forward`` builds the Q query canvases the model would be queried with, ``backward`` turns the Q
losses into the estimate and updates the program. BAR's setting (Tsai et al. 2020): a sigmoid
program W [3, 224, 224] with a mask M (the central region holds the target image, the program
frame around it), sphere directions, b = d, beta = 0.1, ImageNet normalisation,
``N(pad(x) + sigmoid(W + beta u) * M)``, B = 32 target images of 3x64x64, q in {5, 20}.

- fused (``cpu``): ``perturbation_bank`` (directions regenerated from the seed, never stored) and
  ``zo_gradient``, then ``W - lr * g``;
- eager (``reference``): BAR's step in plain PyTorch as its code runs it: q directions drawn with
  ``torch.randn`` and normalised, the Q programs materialised, the Q*B canvases built by broadcast
  ops, the estimate as a [q] x [q, d] product.

Bytes the fused step must move (its minimum): read x, W, M; write the bank [Q, B, 3, 224, 224];
read W again and write the new program (the estimate regenerates its directions from the seed).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .case_types import Case, CaseInstance, CaseUnavailable, Impl
from .utils import tensor_bytes

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BETA, LR, SEED = 0.1, 0.01, 1234


def _inputs(B: int, canvas: int, image: int, device, dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((B, 3, image, image), generator=generator).to(device, dtype)
    W = torch.randn((3, canvas, canvas), generator=generator).to(device, dtype)
    M = torch.ones((canvas, canvas), dtype=dtype, device=device)
    lo = (canvas - image + 1) // 2
    M[lo:lo + image, lo:lo + image] = 0  # the program lives around the placed image
    return x, W, M


def _build(q: int, B: int, canvas: int, image: int):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        try:
            from reprogram_ext import blackbox
        except ImportError as exc:  # pragma: no cover - the package without the blackbox module
            raise CaseUnavailable(f"reprogram_ext.blackbox is not in this build ({exc})") from None
        if dtype != torch.float32:
            raise CaseUnavailable("the ZO step runs in float32 (banks are float32 by contract)")
        x, W, M = _inputs(B, canvas, image, device, dtype)
        d = W.numel()
        losses = torch.rand(q + 1, generator=torch.Generator().manual_seed(1)).to(device)
        opts = dict(activation="sigmoid", mean=MEAN, std=STD)
        mean = torch.tensor(MEAN, device=device).view(1, 1, 3, 1, 1)
        std = torch.tensor(STD, device=device).view(1, 1, 3, 1, 1)
        lo = (canvas - image + 1) // 2
        pads = [lo, canvas - lo - image, lo, canvas - lo - image]

        def fused_forward(backend="cpu"):
            return blackbox.perturbation_bank(x, W, M, q=q, beta=BETA, seed=SEED, backend=backend, **opts)

        def fused_backward(bank, backend="cpu"):
            g = blackbox.zo_gradient(losses, W, seed=SEED, beta=BETA, backend=backend)
            return W - LR * g

        state = {}

        def eager_forward():
            u = torch.randn(q, d, device=device, dtype=dtype)
            u = u / u.norm(dim=1, keepdim=True)
            state["u"] = u
            programs = torch.cat([W.view(1, d), W.view(1, d) + BETA * u]).view(q + 1, 3, canvas, canvas)
            prompt = torch.sigmoid(programs) * M
            placed = F.pad(x, pads)
            canvases = placed.unsqueeze(0) + prompt.unsqueeze(1)  # [Q, B, 3, H, W]
            return (canvases - mean) / std

        def eager_backward(bank):
            diff = (losses[1:] - losses[0]) / BETA
            g = (d / q) * (diff.to(dtype) @ state.pop("u"))
            return W - LR * g.view_as(W)

        impls = [Impl("cpu", "fused", fused_forward, fused_backward),
                 Impl("reference", "eager", eager_forward, eager_backward)]
        Q = q + 1
        bank_shape = (Q, B, 3, canvas, canvas)
        fwd = tensor_bytes(x.shape, dtype) + tensor_bytes(W.shape, dtype) + tensor_bytes(M.shape, dtype) + \
            tensor_bytes(bank_shape, dtype)
        bwd = 2 * tensor_bytes(W.shape, dtype)
        inst = CaseInstance(impls, bytes_fwd=fwd, bytes_bwd=bwd, out_shape=bank_shape, out_dtype=dtype)
        inst.notes.append("fwd = the bank (Q query canvases); bwd = estimate + update; the model's time is excluded")
        return inst

    return build


def cases(sizes: str = "default") -> list:
    tiny = sizes == "tiny"
    out = []
    for q in (5, 20):
        B, canvas, image = (2, 24, 8) if tiny else (32, 224, 64)
        out.append(Case("blackbox_step", f"bar_zo_q{q}_b{B}", "BAR (Tsai 2020) zeroth-order step, sphere RGE",
                        dict(q=q, B=B, canvas=canvas, image=image), _build(q, B, canvas, image),
                        headline=(q == 20), tier="quick" if q == 5 else "default"))
    return out
