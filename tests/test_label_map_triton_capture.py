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

    # ------------------------------------------------------------------ mapped_cross_entropy: one tile, capture

    PRES_CE = ("none", "softmax", "log_softmax")

    def _launch_ce(x, target, index, weight, reduce, pre, eps, one_tile, capture, block_s, topk=0, ignore=-100,
                   grad_loss=None, stats=None):
        """mapped_ce_kernel as triton_op launches it, with ONE_TILE / CAPTURE / BLOCK_S given. Forward (no
        grad_loss): (loss, unit_grad, dense); weight-gradient pass (grad_loss, stats = the forward's dense):
        (gw_rows,)."""
        import triton.language as tl

        from reprogram_ext.ops.label_map import triton_kernels as kernels
        from reprogram_ext.ops.label_map import triton_op
        from reprogram_ext.ops.label_map.options import ce_needs_lse

        N, S = x.shape
        T, K = index.shape
        blocks = dict(triton_op._blocks(S, T, K, x.device, topk), BLOCK_S=block_s)
        need_lse = ce_needs_lse(pre, reduce, weight is not None)
        weight_grad = grad_loss is not None
        loss = torch.zeros(N, device=x.device)
        a = torch.zeros(N, T, K, device=x.device)
        dense = torch.zeros(N, 3, device=x.device)
        kernels.mapped_ce_kernel[(N,)](
            x, target, index, weight if weight is not None else x, grad_loss if weight_grad else loss,
            stats if weight_grad else loss, loss, a, dense, S, T, K, ignore, topk, EPS=float(eps), PRE=pre,
            HAS_W=weight is not None, NEED_LSE=need_lse, WEIGHT_GRAD=weight_grad, ONE_TILE=one_tile,
            CAPTURE=capture, ACC=tl.float32, **triton_op._reduce_launch(reduce, topk), **blocks)
        return (a,) if weight_grad else (loss, a, dense)

    CE_CASES = [(pre, r, w) for pre in PRES_CE for r in REDUCES for w in (False, True) if not (w and r == "topk_mean")]

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("pre,reduce,weighted", CE_CASES)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    def test_ce_one_tile_and_capture_equal_the_three_passes(bd, pre, reduce, weighted, dtype):
        """Loss, unit gradient and row constants of the one-tile kernel (and of its capture where the row
        normaliser is needed) against the three-pass kernel; targets include ignore_index; with label
        smoothing; then the weight-gradient pass likewise."""
        from reprogram_ext.ops.label_map.options import ce_needs_lse

        device = bd[1]
        x = (4 * torch.randn(4, S_SMALL, generator=gen(11))).to(dtype).to(device)
        index = INDEX_SMALL[:, :4].clone()
        index[4] = torch.tensor([-1, 203, 63, 64])  # out of range -> padding in the kernels
        index = index.to(device)
        target = torch.tensor([0, 5, -100, 3], device=device)
        weight = (torch.rand(index.shape, generator=gen(12)) + 0.25).to(device) if weighted else None
        topk = 2 if reduce == "topk_mean" else 0
        capture = ce_needs_lse(pre, reduce, weighted)
        got = _launch_ce(x, target, index, weight, reduce, pre, 0.1, True, capture, BLOCK_SMALL, topk)
        want = _launch_ce(x, target, index, weight, reduce, pre, 0.1, False, False, BLOCK_SMALL, topk)
        for g, w in zip(got, want):
            _assert_same(g, w, device)
        assert got[0][2].item() == 0.0 and (got[1][2] == 0).all()  # the ignored row
        assert torch.isfinite(got[0]).all()
        if weighted:
            grad_loss = torch.tensor([0.5, -1.0, 2.0, 0.25], device=device)
            gw = _launch_ce(x, target, index, weight, reduce, pre, 0.1, True, False, BLOCK_SMALL, topk,
                            grad_loss=grad_loss, stats=got[2])
            gw_want = _launch_ce(x, target, index, weight, reduce, pre, 0.1, False, False, BLOCK_SMALL, topk,
                                 grad_loss=grad_loss, stats=got[2])
            _assert_same(gw[0], gw_want[0], device)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("pre,reduce,weighted", [("softmax", "mean", False), ("log_softmax", "sum", False),
                                                     ("log_softmax", "max", True), ("none", "mean", True),
                                                     ("softmax", "topk_mean", False)])
    @pytest.mark.parametrize("smoothing", [0.0, 0.2])
    def test_public_ce_one_tile_matches_the_reference(bd, pre, reduce, weighted, smoothing):
        """mapped_cross_entropy at S = 5000 (one target tile; log_softmax with a varying lse: the capture),
        ignored targets included, loss and logit gradient against the reference in float64."""
        from reprogram_ext.ops.label_map import triton_op
        from reprogram_ext.ops.label_map.options import ce_needs_lse
        from reprogram_ext.reference import mapped_cross_entropy_reference

        device = bd[1]
        index = _big_index(device)
        blocks = triton_op._blocks(S_BIG, 5, 4, torch.device(device), 2 if reduce == "topk_mean" else 0)
        tiling = triton_op.ce_tiling(S_BIG, 5, blocks, ce_needs_lse(pre, reduce, weighted), False)
        assert tiling == dict(ONE_TILE=True, CAPTURE=ce_needs_lse(pre, reduce, weighted))
        x = 3 * torch.randn(4, S_BIG, generator=gen(13))
        target = torch.tensor([4, -100, 0, 2])
        w = torch.rand(index.shape, generator=gen(14)) + 0.25 if weighted else None
        topk = 2 if reduce == "topk_mean" else None
        xd = x.to(device).requires_grad_(True)
        loss = rx.mapped_cross_entropy(xd, target.to(device), index, None if w is None else w.to(device),
                                       reduce=reduce, pre=pre, label_smoothing=smoothing, topk=topk, backend="triton")
        (g,) = torch.autograd.grad(loss, xd)
        x64 = x.double().requires_grad_(True)
        want = mapped_cross_entropy_reference(x64, target, index.cpu(), None if w is None else w.double(),
                                              reduce=reduce, pre=pre, label_smoothing=smoothing, topk=topk or 0)
        (g64,) = torch.autograd.grad(want, x64)
        assert_close_relative(loss.detach().cpu(), want.detach())
        assert_close_relative(g.cpu(), g64)
