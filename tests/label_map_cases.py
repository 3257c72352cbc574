"""Inputs shared by the label_map and mapped_cross_entropy tests: index layouts and helpers that
run a public function on a (backend, device) pair."""
from __future__ import annotations

import torch

import reprogram_ext as rx
# every option the ops define is tested; the reduces with a topk parameter (topk_mean: no weight) in
# their own tests (test_label_map.py / test_mapped_cross_entropy.py "topk_mean" sections)
from reprogram_ext.ops.label_map.options import PLAIN_REDUCES as REDUCES
from reprogram_ext.ops.label_map.options import PRES, TOPK_REDUCES
LAYOUTS = ("sparse", "ragged", "duplicate")  # (dense is the index=None form)
# pre x reduce x layout x weighted; the dense form has no reduce and always has a weight.
COMBINATIONS = [(pre, reduce, layout, weighted) for pre in PRES for reduce in REDUCES for layout in LAYOUTS
                for weighted in (False, True)] + [(pre, "mean", "dense", True) for pre in PRES]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_index(layout: str, S: int, T: int, K: int, generator: torch.Generator) -> torch.Tensor:
    """int64 [T, K] source classes for a layout:
    sparse    distinct sources, every group full;
    ragged    distinct sources, groups of 1..K entries (-1 pads the rest, in any position);
    duplicate sources repeated inside a group and across groups."""
    if layout == "duplicate":
        index = torch.randint(0, max(2, S // 4), (T, K), generator=generator)
        index[0, -1] = index[0, 0]  # twice in one group
        if T > 1:
            index[1, 0] = index[0, 0]  # and in another group
        return index
    assert T * K <= S, "distinct layouts need T*K <= S"
    index = torch.randperm(S, generator=generator)[: T * K].reshape(T, K)
    if layout == "ragged":
        sizes = torch.randint(1, K + 1, (T,), generator=generator)
        for t in range(T):
            keep = torch.randperm(K, generator=generator)[: sizes[t]]
            pad = torch.ones(K, dtype=torch.bool)
            pad[keep] = False
            index[t, pad] = -1
    return index


def gradcheck_inputs(rows: int, reduce: str, device):
    """float64 (logits [rows, 11], index [3, 3] ragged with duplicates, weight [3, 3]) for
    gradcheck; for max, logits with a unique maximum in every group (differentiable there)."""
    g = gen(5)
    x = torch.randn(rows, 11, generator=g, dtype=torch.float64)
    if reduce == "max":
        x = torch.arange(rows * 11, dtype=torch.float64).reshape(rows, 11) / 9 + 0.01 * x
    index = torch.tensor([[0, 3, -1], [3, 3, 7], [10, -1, 2]])
    w = torch.rand(3, 3, generator=g, dtype=torch.float64) + 0.5
    return x.to(device).requires_grad_(True), index.to(device), w.to(device).requires_grad_(True)


def topk_mean_oracle(logits: torch.Tensor, index: torch.Tensor, topk: int, pre: str = "none") -> torch.Tensor:
    """topk_mean written out in float64 loops: per target, its valid entries ranked by logit
    (descending, nan first, equal logits by position), the mean of pre(logit) over the first topk."""
    x = logits.double().reshape(-1, logits.shape[-1])
    v = {"none": x, "softmax": torch.softmax(x, -1), "log_softmax": torch.log_softmax(x, -1)}[pre]
    out = torch.empty(x.shape[0], index.shape[0], dtype=torch.float64)
    for n in range(x.shape[0]):
        for t in range(index.shape[0]):
            entries = [(k, int(s)) for k, s in enumerate(index[t].tolist()) if s >= 0]
            entries.sort(key=lambda e: (0 if x[n, e[1]].isnan() else 1, -x[n, e[1]].nan_to_num(0).item(), e[0]))
            out[n, t] = sum(v[n, s] for _, s in entries[:topk]) / topk
    return out.reshape(*logits.shape[:-1], index.shape[0])


def on(device, *tensors):
    return tuple(None if t is None else t.to(device) for t in tensors)


def grads(out: torch.Tensor, inputs, upstream: torch.Tensor | None = None):
    """d(out * upstream).sum() / d inputs (None entries skipped)."""
    live = [t for t in inputs if t is not None and t.requires_grad]
    return torch.autograd.grad(out, live, upstream if upstream is not None else torch.ones_like(out))


def forward_ops(backend: str):
    """(label_map_forward, mapped_cross_entropy_forward) op objects of a kernel backend."""
    from reprogram_ext.ops.label_map.api import _ops

    return _ops(backend)


def assert_low_precision_close(out, pt, ref32, atol):
    """The fp16/bf16 rule: |out - ref32| <= 2 |pt - ref32| + atol, pt = reference in low precision."""
    out, pt, ref32 = out.double(), pt.double(), ref32.double()
    err = (out - ref32).abs()
    bound = 2 * (pt - ref32).abs() + atol
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item():.3g}"


def assert_close_relative(got, want, rtol=1e-5, floor=1e-6):
    """|got - want| <= rtol * (|want| + max|want|) + floor, max over the finite entries: 1e-5
    relative to the tensor's own scale, so entries that cancel to ~0 are judged against the
    magnitudes they were computed from."""
    got, want = got.double(), want.double()
    finite = want[torch.isfinite(want)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale + floor, equal_nan=True)


def assert_compiled_matches_eager(step, inputs):
    """torch.compile(step, fullgraph=True) gives eager's value and input gradients."""
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    value = compiled(*inputs)
    g = torch.autograd.grad(value, inputs)
    value_e = step(*inputs)
    g_e = torch.autograd.grad(value_e, inputs)
    torch.testing.assert_close(value, value_e)
    for a, b in zip(g, g_e):
        torch.testing.assert_close(a, b)


LOW_ATOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

__all__ = ["rx", "PRES", "REDUCES", "TOPK_REDUCES", "topk_mean_oracle", "LAYOUTS", "COMBINATIONS", "gen", "gradcheck_inputs", "make_index", "on",
           "grads", "forward_ops", "assert_low_precision_close", "assert_close_relative",
           "assert_compiled_matches_eager", "LOW_ATOL"]
