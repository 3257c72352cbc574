"""Properties specific to the Triton backend of masked_perturb (the shared behaviour is tested for
every backend in test_masked_perturb.py): the chunked batch reduction order of the backward, float64
arithmetic, the accuracy of the kernels' own tanh, and the op's guard against CPU tensors without
the interpreter. Triton cases run where backend_params generates them (the interpreter process,
or a GPU); the guard, the forward's launch plan (batch chunks, grid) and the grid-axis refusals run in the
normal process.
"""
from __future__ import annotations

import pytest
import torch

from backend_params import INTERPRET, backend_device_params
from reprogram_ext import masked_perturb

TRITON = [p for p in backend_device_params(include_reference=False) if p.values[0][0] == "triton"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _norm_identity(channels, device):
    return torch.stack([torch.zeros(channels, device=device), torch.ones(channels, device=device)])


if TRITON:

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("batch", [5, 10])
    def test_backward_sums_each_chunk_in_sample_order(bd, batch):
        """grad_delta = sum over chunks (torch.sum) of the float32 sample-order sums inside each chunk
        of reduction_chunks(), bit for bit, and the same on a second run."""
        from reprogram_ext.ops.masked_perturb import triton_op as tk

        _, device = bd
        C, H, W = 3, 64, 128  # 24576 positions: reduction_chunks gives 3 chunks of several samples
        x = torch.rand(batch, C, 12, 12, device=device)
        delta = torch.randn(1, C, H, W, device=device)
        mask = torch.rand(1, 1, H, W, device=device)
        g = torch.randn(batch, C, H, W, device=device)
        norm = _norm_identity(C, device)
        args = (g, x, delta, mask, [4, 9], norm, [12, 12], "none", "none", "add", "none", None, 1, [True, False, False])
        grad_delta = tk.backward_op()(*args)[0]
        chunks = tk.backward_chunks(batch, C * H * W, 1, torch.device(device))
        assert 1 < chunks < batch  # several chunks, several samples in a chunk
        partials = []
        for j in range(chunks):
            b0, b1 = batch * j // chunks, batch * (j + 1) // chunks
            acc = torch.zeros(C, H, W, device=device)
            for b in range(b0, b1):
                acc = acc + g[b] * mask[0]
            partials.append(acc)
        expected = torch.stack(partials).sum(0, keepdim=True)
        assert torch.equal(grad_delta, expected)
        assert torch.equal(tk.backward_op()(*args)[0], grad_delta)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("activation", ["none", "tanh", "sigmoid"])
    def test_float64_is_computed_in_float64(bd, activation):
        """The forward to float64 precision; the gradients to the float32 precision of the backward op's
        partials (float32 by the op schema, as for the C++ op)."""
        _, device = bd
        kw = dict(activation=activation, blend="replace", resize=(9, 11), offset=[(1, -2), (4, 3)], clamp=(-0.4, 1.3),
                  mask_scale=2, normalize="none")
        x = torch.rand(3, 1, 7, 8, dtype=torch.float64, device=device, requires_grad=True)
        d = torch.randn(3, 13, 12, dtype=torch.float64, device=device, requires_grad=True)
        m = torch.rand(3, 1, 7, 6, dtype=torch.float64, device=device, requires_grad=True)
        out = masked_perturb(x, d, m, backend="triton", **kw)
        ref = masked_perturb(x, d, m, backend="reference", **kw)
        gout = torch.randn_like(out)
        grads = torch.autograd.grad(out, (x, d, m), gout)
        ref_grads = torch.autograd.grad(ref, (x, d, m), gout)
        assert out.dtype == torch.float64 and all(g.dtype == torch.float64 for g in grads)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-6)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_tanh_within_a_few_ulp(bd, dtype):
        """The kernels' tanh (series near 0, exp formula elsewhere) against torch.tanh, including tiny
        arguments where a plain (1 - e) / (1 + e) loses all relative precision."""
        _, device = bd
        tiny = torch.logspace(-30, 0.5, 300, dtype=torch.float64)
        d = torch.cat([torch.linspace(-10, 10, 4001, dtype=torch.float64), tiny, -tiny]).to(dtype).to(device)
        out = masked_perturb(torch.zeros(1, 1, 1, 1, dtype=dtype, device=device), d.view(1, 1, -1),
                             activation="tanh", offset=(0, 0), backend="triton").view(-1)
        want = torch.tanh(d.double())
        ulps = ((out.double() - want).abs() / (want.abs() * torch.finfo(dtype).eps)).max().item()
        assert ulps <= 8, ulps

    @pytest.mark.parametrize("bd", TRITON)
    def test_direct_op_rejects_bad_arguments(bd):
        from reprogram_ext.ops.masked_perturb import triton_op as tk

        _, device = bd
        norm = _norm_identity(3, device)
        x, delta = torch.rand(2, 3, 4, 4, device=device), torch.rand(1, 3, 6, 6, device=device)
        options = ([4, 4], "none", "none", "add", "none", None, 1)
        with pytest.raises(ValueError, match="x must be"):
            tk.forward_op()(x[0], delta, None, [0, 0], norm, *options)
        with pytest.raises(ValueError, match="mask .* does not broadcast"):
            tk.forward_op()(x, delta, torch.rand(1, 1, 5, 6, device=device), [0, 0], norm, *options)
        with pytest.raises(ValueError, match="offsets"):
            tk.forward_op()(x, delta, None, [0, 0, 1], norm, *options)
        with pytest.raises(TypeError, match="x must have delta's dtype"):
            tk.forward_op()(x.double(), delta, None, [0, 0], norm, *options)


if not INTERPRET:

    def test_cpu_tensors_need_the_interpreter():
        """Outside TRITON_INTERPRET=1 the Triton op refuses CPU tensors with a message saying what to do."""
        from reprogram_ext.ops.masked_perturb import triton_op as tk

        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            tk.forward_op()(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 6, 6), None, [1, 1], _norm_identity(3, "cpu"),
                            [4, 4], "none", "none", "add", "none", None, 1)

    @pytest.mark.parametrize("batch, per_sample, bank", [(1, 294, 1), (17, 294, 1), (64, 294, 1), (256, 32, 1),
                                                         (100000, 1, 1), (64, 1, 40000)])
    def test_forward_chunks_cover_the_batch_without_empty_chunks(batch, per_sample, bank):
        """The forward's chunks of s samples: chunk j holds [j s, min((j + 1) s, B)), so chunks x s >= B and
        the last chunk is not empty; bank entries x chunks fit one grid axis; the GPU gets enough programs."""
        from reprogram_ext.ops.masked_perturb import triton_op as tk
        from reprogram_ext.ops.masked_perturb.backends import TRITON_GRID_AXIS_LIMIT

        chunks, per_chunk = tk.forward_chunks(batch, per_sample, torch.device("meta"), bank)
        assert chunks * per_chunk >= batch > (chunks - 1) * per_chunk
        assert 1 <= bank * chunks <= TRITON_GRID_AXIS_LIMIT
        if bank == 1:  # enough programs: at least half the target where the batch has the samples
            assert chunks * per_sample >= min(batch * per_sample, tk.FORWARD_TARGET_PROGRAMS) // 2

    def test_forward_grid_is_blocks_channels_chunks():
        """The planned forward launch (meta tensors, the GPU plan): grid (blocks of H*W x V, C, chunks), the bank
        entry fastest on axis 0 (the V programs of one block of x side by side)."""
        from reprogram_ext.ops.masked_perturb import triton_op as tk

        meta = dict(device="meta")
        x, delta, norm = torch.empty(17, 3, 31, 29, **meta), torch.empty(4, 3, 223, 225, **meta), torch.empty(2, 3, **meta)
        _, launch = tk.plan_forward(x, delta, None, [96, 98], norm, [31, 29], "none", "tanh", "add", "after", None, 1,
                                    True)
        blocks = -(-223 * 225 // launch.args["BLOCK"])
        assert launch.grid == (blocks * 4, 3, launch.args["chunks"])
        assert launch.args["V"] == 4
        assert launch.programs == blocks * 3 * 4 * launch.args["chunks"]

    def test_triton_refuses_more_channels_or_bank_entries_than_a_grid_axis():
        """Channels and bank entries are axes of the Triton forward's grid (at most 65535 each)."""
        from reprogram_ext.ops.masked_perturb.backends import triton_limits

        wide = torch.empty(1, 65536, 2, 2, device="meta")
        assert "65536 channels" in triton_limits(wide[:, :1], wide, None)
        assert triton_limits(wide[:, :1], wide[:, :65535], None) is None
        bank = torch.empty(65536, 1, 2, 2, device="meta")
        assert "bank of 65536" in triton_limits(bank[:1], bank, None, bank=True)
        assert triton_limits(bank[:1], bank, None) is None  # not a bank: 65536 per-sample deltas are rows, not programs

    @pytest.mark.parametrize("width, mask_scale, dtype, group", [(224, 8, torch.float32, 4), (44, 8, torch.float32, 4),
                                                                 (224, 8, torch.bfloat16, 8), (224, 4, torch.bfloat16, 1),
                                                                 (30, 4, torch.float32, 1), (224, 2, torch.float32, 1),
                                                                 (44, 8, torch.float64, 2)])
    def test_forward_reads_a_per_sample_mask_once_per_group(width, mask_scale, dtype, group):
        """MASK_GROUP: a thread's positions (16 bytes) when W and mask_scale are multiples of it (each aligned
        group then lies in one mask cell), else 1; test_smm (W = 44, mask_scale 8) runs the grouped path."""
        from reprogram_ext.ops.masked_perturb import triton_op as tk

        meta = dict(device="meta")
        cells = -(-width // mask_scale)
        x, delta = torch.empty(4, 3, 8, 8, dtype=dtype, **meta), torch.empty(1, 3, 16, width, dtype=dtype, **meta)
        norm = torch.empty(2, 3, dtype=torch.float64 if dtype == torch.float64 else torch.float32, **meta)
        for mask, want in ((torch.empty(4, 1, -(-16 // mask_scale), cells, dtype=dtype, **meta), group),
                           (torch.empty(1, 1, -(-16 // mask_scale), cells, dtype=dtype, **meta), 1)):
            _, launch = tk.plan_forward(x, delta, mask, [0, 0], norm, [16, width], "bilinear", "none", "add",
                                        "before", None, mask_scale, False)
            assert launch.args["MASK_GROUP"] == want
