"""The Triton label_map forward's capture (triton_kernels._row_norm_capture, CAPTURE=True): the mapped
logits taken during the row pass instead of gathered after it. Launched directly with small row blocks
(the capture against the gathering kernel, bit for bit under the interpreter: sources on both sides of
row-block and capture-span boundaries, repeated sources, padding and sources outside [0, S), a vocabulary
that is not a multiple of the block or the span, every reduce, fp32 / fp16 rows), and through the public
function at a vocabulary above the launcher's row block (triton_op.captures picks the capture there)
against the reference."""
from __future__ import annotations

import pytest
import torch
from label_map_cases import LOW_ATOL, assert_close_relative, assert_low_precision_close, gen, topk_mean_oracle

import reprogram_ext as rx
from backend_params import backend_device_params
from reprogram_ext.reference import label_map_reference

TRITON = [p for p in backend_device_params(include_reference=False) if p.values[0][0] == "triton"]
REDUCES = ("mean", "sum", "max", "topk_mean")

# S = 203 with 16-source row blocks: 13 blocks, capture spans of CAPTURE_BLOCKS x 16 = 64 sources (the last
# one partial). Rows of the index: sources on both sides of block and span boundaries (15 | 16, 63 | 64,
# 191 | 192), the first and the last source, one source repeated in a group and across groups, padding,
# and sources outside [0, S) (the kernels take them as padding; the front end refuses them before a launch).
S_SMALL, BLOCK_SMALL = 203, 16
INDEX_SMALL = torch.tensor([[0, 15, 16, 63, 64],
                            [202, 191, 192, 202, -1],
                            [5, 5, 5, -1, -1],
                            [16, 0, 202, 100, 101],
                            [-1, 203, 300, -7, 63],
                            [127, 128, 129, 64, 63]])


def _launch(x, index, weight, reduce, pre, capture, block_s, topk=0):
    """label_map_forward_kernel as triton_op launches it, with CAPTURE and BLOCK_S given: (out, stats)."""
    import triton.language as tl

    from reprogram_ext.ops.label_map import triton_kernels as kernels
    from reprogram_ext.ops.label_map import triton_op

    N, S = x.shape
    T, K = index.shape
    blocks = dict(triton_op._blocks(S, T, K, x.device, topk), BLOCK_S=block_s)
    assert T <= blocks["BLOCK_T"]  # the capture's condition: every target in one tile
    out = x.new_empty((N, T))
    stats = torch.empty((N, 2), dtype=torch.float32, device=x.device)
    kernels.label_map_forward_kernel[(N,)](
        x, index, weight if weight is not None else x, out, stats, S, T, K, topk, PRE=pre, HAS_W=weight is not None,
        ACC=tl.float32, CAPTURE=capture, **triton_op._reduce_launch(reduce, topk), **blocks)
    return out, stats


def _assert_same(got, want, device):
    """Bit for bit under the interpreter (the same operations on the same values); on a GPU the two kernels
    are compiled apart, so within a few ulp."""
    if device == "cpu":
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    else:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, equal_nan=True)


if TRITON:

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("pre", ["softmax", "log_softmax"])
    @pytest.mark.parametrize("reduce,weighted", [(r, w) for r in REDUCES for w in (False, True)
                                                 if not (w and r == "topk_mean")])  # topk_mean: no weight
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    def test_capture_equals_the_gathers_after_the_pass(bd, pre, reduce, weighted, dtype):
        device = bd[1]
        x = (4 * torch.randn(3, S_SMALL, generator=gen(1))).to(dtype).to(device)
        index = INDEX_SMALL.to(device)
        weight = (torch.rand(index.shape, generator=gen(2)) + 0.25).to(device) if weighted else None
        topk = 2 if reduce == "topk_mean" else 0
        got = _launch(x, index, weight, reduce, pre, True, BLOCK_SMALL, topk)
        want = _launch(x, index, weight, reduce, pre, False, BLOCK_SMALL, topk)
        for g, w in zip(got, want):
            _assert_same(g, w, device)
        assert torch.isfinite(got[0][:, :4]).all() and torch.isfinite(got[1]).all()

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("S", [64, 65, 203, 256])
    def test_capture_at_every_row_length(bd, S):
        """Rows of exactly one span, one past it, neither, and whole spans: each entry sits in the first or
        last source of a block; the output and row statistics against the reference."""
        device = bd[1]
        sources = sorted({s for b in range(0, S, BLOCK_SMALL) for s in (b, min(b + BLOCK_SMALL, S) - 1)})
        index = torch.tensor(sources + [-1] * (-len(sources) % 4)).reshape(-1, 4)
        x = 3 * torch.randn(2, S, generator=gen(3))
        out, stats = _launch(x.to(device), index.to(device), None, "sum", "log_softmax", True, BLOCK_SMALL)
        assert_close_relative(out.cpu(), label_map_reference(x.double(), index, reduce="sum", pre="log_softmax"))
        lse = torch.logsumexp(x.double(), -1)
        assert_close_relative(stats[:, 0].cpu() + stats[:, 1].cpu(), lse)

    @pytest.mark.parametrize("bd", TRITON)
    def test_capture_keeps_the_row_statistics_of_extreme_rows(bd):
        """Rows of -inf with one finite value, a +inf and a NaN: the capture's row statistics are the
        gathering kernel's (the extra all -inf blocks of the last span change nothing)."""
        device = bd[1]
        x = torch.full((3, S_SMALL), float("-inf"))
        x[0, 190] = 1.5
        x[1] = torch.randn(S_SMALL, generator=gen(4))
        x[1, 17] = float("inf")
        x[2] = torch.randn(S_SMALL, generator=gen(5))
        x[2, 202] = float("nan")
        got = _launch(x.to(device), INDEX_SMALL.to(device), None, "max", "softmax", True, BLOCK_SMALL)
        want = _launch(x.to(device), INDEX_SMALL.to(device), None, "max", "softmax", False, BLOCK_SMALL)
        for g, w in zip(got, want):
            _assert_same(g, w, device)
        assert got[1][0, 0].item() == 1.5 and got[1][0, 1].item() == 0.0

    # ------------------------------------------------------------------ through the public function

    S_BIG = 5000  # above the launcher's row block on every device (4096 under the interpreter, 1024 on CUDA)

    def _big_index(device):
        """Sources at the interpreter's and CUDA's block edges, the first and last source, repeats, padding."""
        index = torch.tensor([[0, 1023, 1024, 4095], [4096, S_BIG - 1, 4095, -1], [7, 7, 4999, 2048],
                              [3000, 4097, -1, -1], [1024, 0, 1023, 4096]])
        return index.to(device)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("pre", ["softmax", "log_softmax"])
    @pytest.mark.parametrize("reduce", REDUCES)
    def test_public_forward_captures_and_matches_the_reference(bd, pre, reduce):
        from reprogram_ext.ops.label_map import triton_op

        device = bd[1]
        index = _big_index(device)
        topk = 2 if reduce == "topk_mean" else None
        blocks = triton_op._blocks(S_BIG, 5, 4, torch.device(device), topk or 0)
        assert triton_op.captures(S_BIG, 5, blocks, pre)
        x = 3 * torch.randn(4, S_BIG, generator=gen(6))
        out = rx.label_map(x.to(device), index, reduce=reduce, pre=pre, topk=topk, backend="triton").cpu()
        if reduce == "topk_mean":
            want = topk_mean_oracle(x, index.cpu(), 2, pre)
        else:
            want = label_map_reference(x.double(), index.cpu(), reduce=reduce, pre=pre)
        assert_close_relative(out, want)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
    def test_public_forward_captures_weighted_fp16(bd, reduce):
        device = bd[1]
        index = _big_index(device)
        x = (3 * torch.randn(4, S_BIG, generator=gen(7))).half()
        w = torch.rand(index.shape, generator=gen(8)) + 0.25
        out = rx.label_map(x.to(device), index, w.to(device), reduce=reduce, pre="softmax", backend="triton").cpu()
        assert out.dtype == torch.float16
        ref32 = label_map_reference(x.float(), index.cpu(), w, reduce=reduce, pre="softmax")
        pt = label_map_reference(x, index.cpu(), w.half(), reduce=reduce, pre="softmax")
        assert_low_precision_close(out, pt, ref32, LOW_ATOL[torch.float16])

    @pytest.mark.parametrize("bd", TRITON)
    def test_public_gradient_after_a_capturing_forward(bd):
        """The backward reads the row statistics that the capturing forward wrote."""
        device = bd[1]
        index = _big_index(device)
        x = 3 * torch.randn(2, S_BIG, generator=gen(9))
        xd = x.to(device).requires_grad_(True)
        out = rx.label_map(xd, index, pre="softmax", backend="triton")
        up = torch.randn(out.shape, generator=gen(10))
        (g,) = torch.autograd.grad(out, xd, up.to(device))
        x64 = x.double().requires_grad_(True)
        (want,) = torch.autograd.grad(label_map_reference(x64, index.cpu(), pre="softmax"), x64, up.double())
        assert_close_relative(g.cpu(), want)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("bad", [S_BIG, -2])
    def test_public_forward_refuses_sources_outside_the_row(bd, bad):
        device = bd[1]
        index = _big_index(device).clone()
        index[1, 3] = bad
        with pytest.raises(ValueError, match="index"):
            rx.label_map(torch.randn(2, S_BIG, device=device), index, pre="softmax", backend="triton")
