"""The Triton launches of tokens_to_canvas that the ahead-of-time checks compile for sm_80 / sm_90
(tests/test_triton_aot.py, .ci/check_gpu_code.py): each entry is one launch planned on meta tensors
with the launcher's own argument builder. Imported only by the checks, never by the op."""
from __future__ import annotations

import torch

from ...aot import AotKernel
from .triton_kernels import (tokens_to_canvas_canvas_grad_kernel, tokens_to_canvas_forward_kernel,
                             tokens_to_canvas_table_grad_kernel)
from .triton_op import NUM_WARPS, _arguments, _block


def aot_kernels() -> list:
    """Neekhara 2022 (B = 64, 24 x 24 cells of 16², base image, clamp, normalise; fp32 and bf16) and a
    program-with-mask case (per-sample base, sigmoid, fp32)."""
    meta = torch.device("meta")

    def t(*shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device=meta)

    entries = []
    for name, dtype in (("neekhara_fp32", torch.float32), ("neekhara_bf16", torch.bfloat16)):
        cells, table, base = t(64, 576, dtype=torch.int64), t(30000, 3, 16, 16, dtype=dtype), t(1, 3, 384, 384, dtype=dtype)
        args = _arguments(cells, table, None, None, base, t(4, 3), [24, 24, 0, 0], [384, 384], "tanh", "after",
                          [0.0, 1.0])
        block = _block(meta)
        entries.append(AotKernel(f"forward_{name}", tokens_to_canvas_forward_kernel,
                                 dict(args, out_ptr=t(64, 3, 384, 384, dtype=dtype), BLOCK=block), False, NUM_WARPS))
        grad_table = t(30000, 3, 16, 16)
        entries.append(AotKernel(f"table_grad_{name}", tokens_to_canvas_table_grad_kernel,
                                 dict(args, grad_ptr=t(64, 3, 384, 384, dtype=dtype),
                                      order_ptr=t(64 * 576, dtype=torch.int64), start_ptr=t(30001, dtype=torch.int64),
                                      grad_table_ptr=grad_table, PBLOCK=256), False, NUM_WARPS))
    cells, table = t(8, 16, dtype=torch.int64), t(4, 3, 8, 8)
    program, mask, base = t(1, 3, 40, 40), t(1, 1, 40, 40), t(8, 3, 40, 40)
    args = _arguments(cells, table, program, mask, base, t(4, 3), [4, 4, 4, 4], [40, 40], "sigmoid", "after",
                      [-1.0, 1.0])
    entries.append(AotKernel("canvas_grad_program_base_fp32", tokens_to_canvas_canvas_grad_kernel,
                             dict(args, grad_ptr=t(8, 3, 40, 40), grad_program_ptr=t(1, 3, 40, 40),
                                  grad_base_ptr=t(8, 3, 40, 40), B=8, BLOCK=_block(meta)), False, NUM_WARPS))
    return entries
