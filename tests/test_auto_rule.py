"""backend="auto" per op and input class (ops/<op>/backends.py, docs/backends.md "How auto chooses").

The rules are pure functions of (device type, input class), so the CUDA branch is checked here
without a GPU: no tensor is made on a CUDA device (the canonical forms are built on CPU tensors and
asked for the "cuda" order by name).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from reprogram_ext import _extension
from reprogram_ext.backend_registry import AUTO_ORDER, CUDA_FIRST, TRITON_FIRST, order_by_class, resolve_backend
from reprogram_ext.ops.label_map import backends as label_map_backends
from reprogram_ext.ops.masked_perturb import backends as perturb_backends
from reprogram_ext.ops.masked_perturb.args import canonicalize as canonical_perturb
from reprogram_ext.ops.perturbation_bank import backends as bank_backends
from reprogram_ext.ops.tokens_to_canvas import backends as tokens_backends
from reprogram_ext.ops.vocab_map import backends as vocab_backends

# The documented table (docs/backends.md): op -> class -> order on CUDA tensors.
DOCUMENTED = {
    "masked_perturb": (perturb_backends, {"vector": CUDA_FIRST, "bilinear_fp32": CUDA_FIRST, "bilinear": TRITON_FIRST,
                                         "odd_width": TRITON_FIRST}),
    "label_map": (label_map_backends, {"sparse": CUDA_FIRST, "dense": CUDA_FIRST}),
    "vocab_map": (vocab_backends, {"noise": TRITON_FIRST, "plain": CUDA_FIRST}),
    "tokens_to_canvas": (tokens_backends, {"any": CUDA_FIRST}),
}


@pytest.mark.parametrize("op", sorted(DOCUMENTED))
def test_order_per_class_is_the_documented_one(op):
    module, table = DOCUMENTED[op]
    assert module.CUDA_ORDER == table
    for cls, order in table.items():
        assert order_by_class("cuda", module.CUDA_ORDER, cls) == order
        assert order_by_class("cpu", module.CUDA_ORDER, cls) is None  # AUTO_ORDER["cpu"]: cpu, then reference
        assert order_by_class("meta", module.CUDA_ORDER, cls) is None
        assert order[-1] == "reference" and sorted(order) == ["cuda", "reference", "triton"]
    with pytest.raises(KeyError):
        order_by_class("cuda", module.CUDA_ORDER, "no such class")


def test_docs_table_states_the_same_orders():
    """Each (op, class) row of docs/backends.md's auto table names the order the code returns."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "backends.md").read_text()
    for op, (_, table) in DOCUMENTED.items():
        for cls, order in table.items():
            row = re.search(rf"^\| `{op}` \| `{cls}` [^|]*\| ([^|]+) \|", text, re.M)
            assert row is not None, (op, cls)
            assert re.findall(r"`(\w+)`", row.group(1)) == list(order), (op, cls, row.group(1))


def _perturb(x, delta, **kw):
    opts = dict(out_size=None, resize=None, resize_mode="nearest", offset=None, activation="sigmoid", blend="add",
                normalize="after", mean=None, std=None, clamp=None, mask_scale=1, out_dtype=None)
    opts.update(kw)
    return canonical_perturb(x, delta, None, **opts)


def test_masked_perturb_input_classes_from_the_canonical_form():
    ilm_vp = _perturb(torch.rand(2, 3, 32, 32), torch.randn(3, 224, 224))
    assert perturb_backends.auto_order(ilm_vp, "cuda") == CUDA_FIRST
    assert perturb_backends.auto_order(ilm_vp, "cpu") is None
    autovp = _perturb(torch.rand(2, 3, 32, 32), torch.randn(3, 224, 224), resize=192, resize_mode="bilinear")
    assert perturb_backends.auto_order(autovp, "cuda") == CUDA_FIRST
    autovp_half = _perturb(torch.rand(2, 3, 32, 32), torch.randn(3, 224, 224, dtype=torch.float16), resize=192,
                           resize_mode="bilinear")
    assert perturb_backends.auto_order(autovp_half, "cuda") == TRITON_FIRST
    nearest = _perturb(torch.rand(2, 3, 32, 32), torch.randn(3, 224, 224), resize=192, resize_mode="nearest")
    assert perturb_backends.auto_order(nearest, "cuda") == CUDA_FIRST
    elsayed = _perturb(torch.rand(2, 3, 31, 29), torch.randn(3, 223, 225))
    assert perturb_backends.auto_order(elsayed, "cuda") == TRITON_FIRST
    # VEC = 16 / element size: a width of 228 is 4-aligned (float32) but not 8-aligned (float16)
    assert perturb_backends.input_class("none", 228, 4) == "vector"
    assert perturb_backends.input_class("none", 228, 2) == "odd_width"
    assert perturb_backends.input_class("none", 226, 8) == "vector"
    assert perturb_backends.input_class("bilinear", 224, 4) == "bilinear_fp32"
    assert perturb_backends.input_class("bilinear", 224, 2) == "bilinear"
    assert perturb_backends.input_class("bilinear", 224, 8) == "bilinear"


def test_bank_takes_masked_perturbs_rule():
    class Bank:  # only .perturb is read by the rule
        perturb = _perturb(torch.rand(2, 3, 32, 32), torch.randn(3, 223, 225))

    assert bank_backends.auto_order(Bank(), "cuda") == TRITON_FIRST
    assert bank_backends.auto_order(Bank(), "cpu") is None


def test_label_map_and_vocab_map_classes():
    from reprogram_ext.ops.label_map.args import canonicalize as canonical_label_map

    sparse = canonical_label_map("label_map", torch.randn(2, 10), torch.arange(4).unsqueeze(1), None, "mean", "none")
    dense = canonical_label_map("label_map", torch.randn(2, 10), None, torch.randn(10, 3), "mean", "none")
    assert label_map_backends.auto_order(sparse, "cuda") == CUDA_FIRST
    assert label_map_backends.auto_order(dense, "cuda") == CUDA_FIRST
    assert label_map_backends.auto_order(sparse, "cpu") is None
    assert [vocab_backends.input_class(m) for m in ("softmax", "gumbel", "gumbel_hard", "none")] == \
        ["plain", "noise", "noise", "plain"]


def test_registry_still_refuses_what_cannot_run():
    """The op's order only changes the walk; a backend that is unavailable or refuses is passed by,
    and an explicit request of it still raises, naming the reason."""
    cuda = torch.device("cuda")
    op = "masked_perturb_forward"
    has_cuda_kernel = _extension.has_kernel(op, "CUDA")
    triton_runs = _extension.triton_available()  # CUDA tensors: the interpreter variable plays no part
    for order in (CUDA_FIRST, TRITON_FIRST):
        expected = next(name for name in order if {"cuda": has_cuda_kernel, "triton": triton_runs}.get(name, True))
        assert resolve_backend("auto", cuda, op, None, order) == expected
        refuses_triton = lambda name: "too big" if name == "triton" else None  # noqa: E731
        assert resolve_backend("auto", cuda, op, refuses_triton, order) == ("cuda" if has_cuda_kernel else "reference")
    # explicit: not installed -> RuntimeError (checked first); installed but refusing -> ValueError
    exc, word = (ValueError, "cannot take these inputs: too big") if triton_runs else (RuntimeError, "not available")
    with pytest.raises(exc, match=f"backend='triton' {word}"):
        resolve_backend("triton", cuda, op, refuses_triton, TRITON_FIRST)
    if not has_cuda_kernel:
        with pytest.raises(RuntimeError, match="backend='cuda' is not available"):
            resolve_backend("cuda", cuda, op, None, CUDA_FIRST)
    # CPU tensors: the rules return None, so the device's order stands and triton is never picked
    assert resolve_backend("auto", torch.device("cpu"), op, None, None) in AUTO_ORDER["cpu"]
