"""The Triton launches of label_map / mapped_cross_entropy that the ahead-of-time checks compile for
sm_80 / sm_90 (tests/test_triton_aot.py). Imported only by the checks, never by the ops."""
from __future__ import annotations

import torch
import triton.language as tl

from ...aot import AotKernel
from . import triton_kernels as kernels
from .options import ce_needs_lse
from .triton_op import _blocks, captures, ce_tiling


def aot_kernels() -> list:
    """The kernel variants the ops launch, for ahead-of-time compilation (tests/test_triton_aot.py):
    pointers as meta tensors of the launched dtype, sizes as ints, constexprs as launched."""
    def p(dtype=torch.float32):
        return torch.empty(0, dtype=dtype, device="meta")

    i64 = p(torch.int64)
    row = dict(S=32000, T=100, K=8, topk=0)
    tile = dict(HAS_W=True, SELECT_TOP=False, BLOCK_T=128, BLOCK_K=8, ACC=tl.float32)
    ce = dict(x_ptr=p(torch.bfloat16), target_ptr=i64, index_ptr=i64, weight_ptr=p(), scale_ptr=p(), stats_ptr=p(),
              loss_ptr=p(), a_ptr=p(), dense_ptr=p(), ignore_index=-100, **row)
    return _fixed_kernels(p, i64, row, tile, ce) + benchmark_kernels()


def _fixed_kernels(p, i64, row, tile, ce) -> list:
    return [
        AotKernel("label_map_forward", kernels.label_map_forward_kernel,
                  dict(x_ptr=p(), index_ptr=i64, weight_ptr=p(), out_ptr=p(), stats_ptr=p(), **row,
                       REDUCE="mean", PRE="softmax", CAPTURE=True, BLOCK_S=1024, **tile)),
        AotKernel("label_map_forward_topk_mean", kernels.label_map_forward_kernel,
                  dict(x_ptr=p(), index_ptr=i64, weight_ptr=p(), out_ptr=p(), stats_ptr=p(), **dict(row, topk=3),
                       REDUCE="mean", PRE="none", CAPTURE=False, BLOCK_S=1024,
                       **dict(tile, HAS_W=False, SELECT_TOP=True, BLOCK_T=64))),
        AotKernel("label_map_coefficients", kernels.label_map_coefficients_kernel,
                  dict(grad_out_ptr=p(), x_ptr=p(), index_ptr=i64, weight_ptr=p(), stats_ptr=p(), a_ptr=p(),
                       gw_ptr=p(), dense_ptr=p(), **row, REDUCE="max", PRE="softmax", WEIGHT_GRAD=True, **tile)),
        AotKernel("mapped_ce_softmax", kernels.mapped_ce_kernel,
                  dict(ce, EPS=0.1, REDUCE="mean", PRE="softmax", NEED_LSE=False, WEIGHT_GRAD=False, BLOCK_S=1024,
                       **ce_tiling(row["S"], row["T"], dict(tile, BLOCK_S=1024), False, False), **tile)),
        AotKernel("mapped_ce_log_softmax_capture", kernels.mapped_ce_kernel,
                  dict(ce, EPS=0.0, REDUCE="sum", PRE="log_softmax", NEED_LSE=True, WEIGHT_GRAD=False, BLOCK_S=1024,
                       **ce_tiling(row["S"], row["T"], dict(tile, BLOCK_S=1024), True, False), **tile)),
        AotKernel("mapped_ce_weight_grad", kernels.mapped_ce_kernel,
                  dict(ce, EPS=0.0, REDUCE="sum", PRE="log_softmax", NEED_LSE=True, WEIGHT_GRAD=True, BLOCK_S=1024,
                       **ce_tiling(row["S"], row["T"], dict(tile, BLOCK_S=1024), True, True), **tile)),
        AotKernel("gradient_row_fp16", kernels.gradient_row_kernel,
                  dict(x_ptr=p(torch.float16), dense_ptr=p(), a_ptr=p(), scale_ptr=p(), has_ptr=p(torch.int8),
                       ptr_ptr=p(torch.int32), ent_ptr=p(torch.int32), block_max_ptr=p(torch.int32),
                       grad_ptr=p(torch.float16), S=32000, TK=800, DENSE=True, HAS_SCALE=True, BLOCK_S=1024,
                       ACC=tl.float32), vector_io=True),
    ]


# The cases of bench/cases_label_map.py: (rows B, sources S, targets T, entries per target K), fp32, no weight.
BENCHMARK_SIZES = {"in1k_to10": (256, 1000, 10, 10), "in1k_to100": (256, 1000, 100, 10),
                   "vocab32k": (2048, 32000, 100, 8)}


def _gradient_writer(name: str, p, S: int, T: int, K: int, dense: bool, scale: bool) -> list:
    """The one launch of triton_op._write_gradient: [row, block] programs writing the gradient once."""
    return [
        AotKernel(f"{name}_grad_row", kernels.gradient_row_kernel,
                  dict(x_ptr=p(), dense_ptr=p(), a_ptr=p(), scale_ptr=p(), has_ptr=p(torch.int8),
                       ptr_ptr=p(torch.int32), ent_ptr=p(torch.int32), block_max_ptr=p(torch.int32), grad_ptr=p(),
                       S=S, TK=T * K, DENSE=dense, HAS_SCALE=scale,
                       BLOCK_S=_blocks(S, 1, 1, torch.device("cuda"))["BLOCK_S"], ACC=tl.float32)),
    ]


def benchmark_kernels() -> list:
    """Every launch of the benchmark cases (fp32, one program per row unless noted), as triton_op launches
    them on CUDA tensors: "bench_<case>_fwd" (the row kernel), "_coef" (label_map backward's per-row
    coefficients and D), "_grad_row" (the gradient writer). bench/notes/label_map.md turns their SASS
    into per-case predictions."""
    def p(dtype=torch.float32):
        return torch.empty(0, dtype=dtype, device="meta")

    i64 = p(torch.int64)
    entries = []
    cuda = torch.device("cuda")
    for key, (_, S, T, K) in BENCHMARK_SIZES.items():
        blocks = _blocks(S, T, K, cuda)
        sizes = dict(S=S, T=T, K=K, topk=0)
        for pre in ("softmax", "none") if key == "in1k_to10" else ("softmax",):
            name = f"bench_label_map_{'logits' if pre == 'none' else 'softmax'}_{key}"
            flags = dict(REDUCE="mean", PRE=pre, HAS_W=False, SELECT_TOP=False, ACC=tl.float32)
            entries.append(AotKernel(f"{name}_fwd", kernels.label_map_forward_kernel,
                                     dict(x_ptr=p(), index_ptr=i64, weight_ptr=p(), out_ptr=p(), stats_ptr=p(),
                                          **sizes, **flags, CAPTURE=captures(S, T, blocks, pre), **blocks)))
            entries.append(AotKernel(f"{name}_coef", kernels.label_map_coefficients_kernel,
                                     dict(grad_out_ptr=p(), x_ptr=p(), index_ptr=i64, weight_ptr=p(), stats_ptr=p(),
                                          a_ptr=p(), gw_ptr=p(), dense_ptr=p(), **sizes, **flags, WEIGHT_GRAD=False,
                                          BLOCK_T=blocks["BLOCK_T"], BLOCK_K=blocks["BLOCK_K"])))
            entries += _gradient_writer(name, p, S, T, K, pre != "none", False)
        name = f"bench_mapped_ce_softmax_{key}"
        dense = ce_needs_lse("softmax", "mean", False)
        entries.append(AotKernel(f"{name}_fwd", kernels.mapped_ce_kernel,
                                 dict(x_ptr=p(), target_ptr=i64, index_ptr=i64, weight_ptr=p(), scale_ptr=p(),
                                      stats_ptr=p(), loss_ptr=p(), a_ptr=p(), dense_ptr=p(), ignore_index=-100,
                                      **sizes, EPS=0.0, REDUCE="mean", PRE="softmax", HAS_W=False, SELECT_TOP=False,
                                      NEED_LSE=dense, WEIGHT_GRAD=False, ACC=tl.float32,
                                      **ce_tiling(S, T, blocks, dense, False), **blocks)))
        entries += _gradient_writer(name, p, S, T, K, dense, True)
    return entries
