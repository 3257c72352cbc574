"""The Triton launches of vocab_map that the ahead-of-time checks compile for sm_80 / sm_90
(tests/test_triton_aot.py). Imported only by the checks, never by the ops."""
from __future__ import annotations

import torch
import triton.language as tl

from ...aot import AotKernel
from . import triton_kernels as kernels


def aot_kernels() -> list:
    """The CUDA launch specialisations of triton_op.py (float32, the GPU tile sizes), at the benchmark's size."""
    def p(dtype=torch.float32):
        return torch.empty(0, dtype=dtype, device="meta")

    i64 = p(torch.int64)
    sizes = dict(N=2048, L=128, V_t=64, V_s=32000, D=768, inv_tau=2.0, key=12345)
    tiles = dict(W=5, BLOCK_N=32, BLOCK_V=32, BLOCK_D=64, ACC=tl.float32)
    return [
        AotKernel("vocab_map_forward_gumbel", kernels.vocab_map_forward_kernel,
                  dict(tokens_ptr=i64, theta_ptr=p(), emb_ptr=p(), out_ptr=p(), stats_ptr=p(), soft_ptr=p(),
                       hard_ptr=i64, **sizes, MODE=1, **tiles)),
        AotKernel("vocab_map_backward_chunk_gumbel", kernels.vocab_map_backward_chunk_kernel,
                  dict(tokens_ptr=i64, theta_ptr=p(), emb_ptr=p(), g_ptr=p(), stats_ptr=p(), delta_ptr=p(), dz_ptr=p(),
                       p_ptr=p(), **sizes, v0=0, width=4096, MODE=1, NEED_P=False, **tiles)),
    ]
