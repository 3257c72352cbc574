"""The Triton launches of masked_perturb that the ahead-of-time checks compile for sm_80 / sm_90
(tests/test_triton_aot.py): each entry is one real launch planned on meta tensors. Imported only by
the checks, never by the op."""
from __future__ import annotations

import torch

from ...aot import AotKernel
from .triton_kernels import masked_perturb_backward_kernel, masked_perturb_forward_kernel
from .triton_op import NUM_WARPS, plan_backward, plan_forward


def aot_kernels() -> list:
    """Launches of both kernels planned on meta tensors for typical workloads (SPEC §1 special cases),
    compiled ahead of time for sm_80 / sm_90 by tests/test_triton_aot.py."""
    def t(*shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device="meta")

    def norm(C, dtype=torch.float32):
        return t(2, C, dtype=dtype)

    # (x, delta, mask, offsets, norm, resized_size, resize_mode, activation, blend, normalize, clamp, mask_scale, bank)
    ilm_vp = (t(256, 3, 32, 32), t(1, 3, 224, 224), t(1, 1, 224, 224), [96, 96], norm(3),
              [32, 32], "none", "sigmoid", "add", "after", None, 1, False)
    # a prompt bank of 8 ILM-VP programs over a batch of 64
    ilm_vp_bank = (t(64, 3, 32, 32), t(8, 3, 224, 224), t(1, 1, 224, 224), [96, 96], norm(3),
                   [32, 32], "none", "sigmoid", "add", "after", None, 1, True)
    bahng_fp16 = (t(64, 3, 224, 224, dtype=torch.float16), t(1, 3, 224, 224, dtype=torch.float16), None, [0, 0],
                  norm(3), [224, 224], "none", "none", "add", "none", None, 1, False)
    smm_bf16 = (t(64, 3, 32, 32, dtype=torch.bfloat16), t(1, 3, 224, 224, dtype=torch.bfloat16),
                t(64, 1, 7, 7, dtype=torch.bfloat16), [0, 0], norm(3), [224, 224], "bilinear", "none", "add", "before",
                None, 32, False)
    v2s_tiles = (t(32, 1, 1, 3000), t(1, 1, 1, 16000), t(1, 1, 1, 16000), [0, 0, 0, 3000, 0, 6000, 0, 9000, 0, 12000,
                 0, 15000], norm(1), [1, 3000], "none", "none", "add", "none", None, 1, False)
    uint8_general = (t(16, 1, 28, 28, dtype=torch.uint8), t(16, 3, 64, 64), t(1, 3, 64, 64), [4, 4], norm(3),
                     [56, 56], "nearest", "tanh", "replace", "after", [0.0, 1.0], 1, False)
    fp64_bilinear = (t(4, 3, 20, 20, dtype=torch.float64), t(1, 3, 48, 48, dtype=torch.float64), None, [3, 5],
                     norm(3, torch.float64), [40, 40], "bilinear", "tanh", "add", "after", [-1.0, 1.0], 1, False)
    cases = (("ilm_vp_fp32", ilm_vp, [True, True, True]), ("ilm_vp_bank_fp32", ilm_vp_bank, [True, False, False]),
             ("bahng_full_canvas_fp16", bahng_fp16, [True, False, False]),
             ("smm_bf16", smm_bf16, [True, True, True]), ("v2s_tiles_fp32", v2s_tiles, [True, True, False]),
             ("uint8_nearest_replace_clamp", uint8_general, [True, True, False]),
             ("bilinear_tanh_fp64", fp64_bilinear, [True, False, True]))
    entries = []
    for name, case, needs in cases:  # delta, out, grad_out and the gradients are contiguous canvases in every case
        _, launch = plan_forward(*case)
        entries.append(AotKernel(f"forward_{name}", masked_perturb_forward_kernel, launch.args, True, NUM_WARPS))
        x, delta = case[0], case[1]
        channels = delta.shape[1] if delta.shape[1] != 1 else x.shape[1]
        rows = x.shape[0] * (delta.shape[0] if case[-1] else 1)  # a bank's output has V * B rows
        grad_out = t(rows, channels, *delta.shape[2:], dtype=delta.dtype)
        _, launch = plan_backward(grad_out, *case[:-1], needs, case[-1])
        # float64 (2 positions per thread) is not held to the 128-bit access check
        vector_io = delta.dtype != torch.float64
        entries.append(AotKernel(f"backward_{name}", masked_perturb_backward_kernel, launch.args, vector_io, NUM_WARPS))
    return entries
