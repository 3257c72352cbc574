"""The Triton launches of label_map / mapped_cross_entropy that the ahead-of-time checks compile for
sm_80 / sm_90 (tests/test_triton_aot.py). Imported only by the checks, never by the ops."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...aot import AotKernel
from . import triton_kernels as kernels
from .options import ce_needs_lse
from .triton_op import _blocks, scatter_warps


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
                       REDUCE="mean", PRE="softmax", BLOCK_S=1024, **tile)),
        AotKernel("label_map_forward_topk_mean", kernels.label_map_forward_kernel,
                  dict(x_ptr=p(), index_ptr=i64, weight_ptr=p(), out_ptr=p(), stats_ptr=p(), **dict(row, topk=3),
                       REDUCE="mean", PRE="none", BLOCK_S=1024,
                       **dict(tile, HAS_W=False, SELECT_TOP=True, BLOCK_T=64))),
        AotKernel("label_map_coefficients", kernels.label_map_coefficients_kernel,
                  dict(grad_out_ptr=p(), x_ptr=p(), index_ptr=i64, weight_ptr=p(), stats_ptr=p(), a_ptr=p(),
                       gw_ptr=p(), **row, REDUCE="max", PRE="softmax", WEIGHT_GRAD=True, **tile)),
        AotKernel("mapped_ce_softmax", kernels.mapped_ce_kernel,
                  dict(ce, EPS=0.1, REDUCE="mean", PRE="softmax", NEED_LSE=False, WEIGHT_GRAD=False, BLOCK_S=1024,
                       **tile)),
        AotKernel("mapped_ce_weight_grad", kernels.mapped_ce_kernel,
                  dict(ce, EPS=0.0, REDUCE="sum", PRE="log_softmax", NEED_LSE=True, WEIGHT_GRAD=True, BLOCK_S=1024,
                       **tile)),
        AotKernel("dense_fill", kernels.dense_fill_kernel,
                  dict(x_ptr=p(torch.float16), stats_ptr=p(), coef_ptr=p(), grad_ptr=p(torch.float16), S=32000,
                       STATS_STRIDE=2, DENSE=True, BLOCK_S=1024, ACC=tl.float32), vector_io=True),
        AotKernel("scatter_sorted", kernels.scatter_sorted_kernel,
                  dict(a_ptr=p(), scale_ptr=p(), sorted_src_ptr=i64, perm_ptr=i64, grad_ptr=p(), S=32000, TK=800,
                       HAS_SCALE=True, BLOCK_E=1024, ACC=tl.float32), num_warps=scatter_warps(1024)),
    ]


# The cases of bench/cases_label_map.py: (rows B, sources S, targets T, entries per target K), fp32, no weight.
BENCHMARK_SIZES = {"in1k_to10": (256, 1000, 10, 10), "in1k_to100": (256, 1000, 100, 10),
                   "vocab32k": (2048, 32000, 100, 8)}


def _gradient_writer(name: str, p, i64, S: int, T: int, K: int, dense: bool, stats_stride: int, scale: bool) -> list:
    """The two launches of triton_op._write_gradient: the dense fill ([row, block] programs) and the
    per-row scatter of the summed coefficients."""
    return [
        AotKernel(f"{name}_fill", kernels.dense_fill_kernel,
                  dict(x_ptr=p(), stats_ptr=p(), coef_ptr=p(), grad_ptr=p(), S=S, STATS_STRIDE=stats_stride,
                       DENSE=dense, BLOCK_S=_blocks(S, 1, 1, torch.device("cuda"))["BLOCK_S"], ACC=tl.float32)),
        AotKernel(f"{name}_scatter", kernels.scatter_sorted_kernel,
                  dict(a_ptr=p(), scale_ptr=p(), sorted_src_ptr=i64, perm_ptr=i64, grad_ptr=p(), S=S, TK=T * K,
                       HAS_SCALE=scale, BLOCK_E=triton.next_power_of_2(T * K), ACC=tl.float32),
                  num_warps=scatter_warps(triton.next_power_of_2(T * K))),
    ]


def benchmark_kernels() -> list:
    """Every launch of the benchmark cases (fp32, one program per row unless noted), as triton_op launches
    them on CUDA tensors: "bench_<case>_fwd" (the row kernel), "_coef" (label_map backward's per-row
    coefficients), "_fill" / "_scatter" (the gradient writer). bench/notes/label_map.md turns their SASS
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
                                          **sizes, **flags, **blocks)))
            entries.append(AotKernel(f"{name}_coef", kernels.label_map_coefficients_kernel,
                                     dict(grad_out_ptr=p(), x_ptr=p(), index_ptr=i64, weight_ptr=p(), stats_ptr=p(),
                                          a_ptr=p(), gw_ptr=p(), **sizes, **flags, WEIGHT_GRAD=False,
                                          BLOCK_T=blocks["BLOCK_T"], BLOCK_K=blocks["BLOCK_K"])))
            entries += _gradient_writer(name, p, i64, S, T, K, pre != "none", 2, False)
        name = f"bench_mapped_ce_softmax_{key}"
        dense = ce_needs_lse("softmax", "mean", False)
        entries.append(AotKernel(f"{name}_fwd", kernels.mapped_ce_kernel,
                                 dict(x_ptr=p(), target_ptr=i64, index_ptr=i64, weight_ptr=p(), scale_ptr=p(),
                                      stats_ptr=p(), loss_ptr=p(), a_ptr=p(), dense_ptr=p(), ignore_index=-100,
                                      **sizes, EPS=0.0, REDUCE="mean", PRE="softmax", HAS_W=False, SELECT_TOP=False,
                                      NEED_LSE=dense, WEIGHT_GRAD=False, ACC=tl.float32, **blocks)))
        entries += _gradient_writer(name, p, i64, S, T, K, dense, 3 if dense else 0, True)
    return entries
