"""The Triton launches of label_map / mapped_cross_entropy that the ahead-of-time checks compile for
sm_80 / sm_90 (tests/test_triton_aot.py). Imported only by the checks, never by the ops."""
from __future__ import annotations

import torch
import triton.language as tl

from ...aot import AotKernel
from . import triton_kernels as kernels


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
                       HAS_SCALE=True, BLOCK_E=1024, ACC=tl.float32)),
    ]
