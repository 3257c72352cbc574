"""The Triton launches of masked_perturb that the ahead-of-time checks compile for sm_80 / sm_90
(tests/test_triton_aot.py): each entry is one real launch planned on meta tensors. Imported only by
the checks, never by the op."""
from __future__ import annotations

import torch

from ...aot import AotKernel
from .args import canonicalize
from .triton_cell_backward import masked_perturb_cell_backward_kernel
from .triton_kernels import masked_perturb_backward_kernel, masked_perturb_forward_kernel
from .triton_op import plan_backward, plan_forward


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
        entries.append(AotKernel(f"forward_{name}", masked_perturb_forward_kernel, launch.args, True, launch.num_warps))
        x, delta = case[0], case[1]
        channels = delta.shape[1] if delta.shape[1] != 1 else x.shape[1]
        rows = x.shape[0] * (delta.shape[0] if case[-1] else 1)  # a bank's output has V * B rows
        grad_out = t(rows, channels, *delta.shape[2:], dtype=delta.dtype)
        _, launch = plan_backward(grad_out, *case[:-1], needs, case[-1])
        # float64 (2 positions per thread) is not held to the 128-bit access check
        vector_io = delta.dtype != torch.float64
        entries.append(AotKernel(f"backward_{name}", masked_perturb_backward_kernel, launch.args, vector_io,
                                 launch.num_warps))
    return entries + cell_backward_kernels() + benchmark_kernels()


def cell_backward_kernels() -> list:
    """Launches of the mask-cell backward (triton_cell_backward.py; delta and mask gradients, blend add): SMM's
    per-sample mask [64, 1, 28, 28] at mask_scale 8 on 224 x 224 in fp32 and bf16, and a shared 3-channel mask
    at mask_scale 4 in fp16 ("cell_backward_<case>")."""
    def t(*shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device="meta")

    def smm(dtype):
        return (t(64, 3, 32, 32, dtype=dtype), t(1, 3, 224, 224, dtype=dtype), t(64, 1, 28, 28, dtype=dtype), [0, 0],
                t(2, 3), [224, 224], "bilinear", "none", "add", "before", None, 8, False)

    shared_fp16 = (t(32, 3, 224, 224, dtype=torch.float16), t(1, 3, 224, 224, dtype=torch.float16),
                   t(1, 3, 56, 56, dtype=torch.float16), [0, 0], t(2, 3), [224, 224], "none", "sigmoid", "add",
                   "after", None, 4, False)
    entries = []
    for name, case in (("smm_fp32", smm(torch.float32)), ("smm_bf16", smm(torch.bfloat16)),
                       ("shared_mask_s4_fp16", shared_fp16)):
        delta = case[1]
        grad_out = t(case[0].shape[0], 3, *delta.shape[2:], dtype=delta.dtype)
        _, launch = plan_backward(grad_out, *case[:-1], [True, True, False], case[-1])
        assert launch.kernel is masked_perturb_cell_backward_kernel, name
        # 128-bit loads and stores: footprint rows of 8 x 4 bytes (fp32) or 8 x 2 (bf16); s = 4 in fp16: 8 bytes
        entries.append(AotKernel(f"cell_backward_{name}", launch.kernel, launch.args, name.startswith("smm"),
                                 launch.num_warps))
    return entries


IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
ILMVP = dict(C=3, out=(224, 224), activation="sigmoid", normalize="after", norm=IMAGENET)
# The cases of bench/cases_masked_perturb.py (same names), as (B, x spatial size, user options): the
# user-level call the benchmark makes, canonicalised by the op's own front end.
BENCHMARK_CASES = {
    "ilmvp_cifar32_b64": dict(ILMVP, B=64, size=(32, 32), offset=(96, 96)),
    "ilmvp_cifar32_b256": dict(ILMVP, B=256, size=(32, 32), offset=(96, 96)),
    "ilmvp_128_b64": dict(ILMVP, B=64, size=(128, 128), offset=(48, 48)),
    "ilmvp_128_b256": dict(ILMVP, B=256, size=(128, 128), offset=(48, 48)),
    "autovp_resize192_b64": dict(ILMVP, B=64, size=(32, 32), resize=(192, 192), offset=(16, 16)),
    "smm_b64": dict(ILMVP, B=64, size=(32, 32), resize=(224, 224), offset=(0, 0), activation="none",
                    normalize="before", mask=(64, 1, 28, 28), mask_scale=8),
    "v2s_b32": dict(B=32, C=1, size=(1000,), out=(16000,), offset=[(k * 2000,) for k in range(8)],
                    activation="none", normalize="none", norm={}),
    "elsayed_odd_b17": dict(ILMVP, B=17, size=(31, 29), out=(223, 225), offset=(96, 98), activation="tanh"),
    "bank_ilmvp_128_v8_b64": dict(ILMVP, B=64, size=(128, 128), offset=(48, 48), bank=8),
}


def _meta(t):
    """t's shape and strides on the meta device (None stays None)."""
    return None if t is None else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def benchmark_launches(name: str, dtype=torch.float32) -> tuple:
    """(forward Launch, backward Launch) of benchmark case `name` (BENCHMARK_CASES), planned exactly as
    the op plans them on CUDA tensors: the front end canonicalises CPU tensors without storage
    (torch.empty), whose shapes and strides are then moved to the meta device. The backward asks for
    the gradients the benchmark trains: delta, and the mask where it is per sample (SMM)."""
    case = BENCHMARK_CASES[name]
    B, C, out, V = case["B"], case["C"], case["out"], case.get("bank", 0)
    x = torch.empty((B, C, *case["size"]), dtype=dtype)
    delta = torch.empty((V, C, *out) if V else (C, *out), dtype=dtype)
    mask = torch.empty(case.get("mask", out), dtype=dtype)
    cp = canonicalize(x, delta, mask, out_size=None, resize=case.get("resize"), resize_mode="bilinear",
                      offset=case["offset"], activation=case["activation"], blend="add", normalize=case["normalize"],
                      mean=case["norm"].get("mean"), std=case["norm"].get("std"), clamp=None,
                      mask_scale=case.get("mask_scale", 1), out_dtype=None, bank=bool(V))
    args = [_meta(cp.x), _meta(cp.delta), _meta(cp.mask)]
    norm = _meta(cp.norm)
    _, forward = plan_forward(*args, *cp.options.op_args(norm))
    H, W = cp.delta.shape[2:]
    grad_out = torch.empty(((V or 1) * B, cp.channels, H, W), dtype=dtype, device="meta")
    needs = [True, "mask" in case, False]
    _, backward = plan_backward(grad_out, *args, *cp.options.backward_args(norm, needs))
    return forward, backward


def benchmark_kernels() -> list:
    """The forward and backward launch of every benchmark case, fp32 ("bench_<case>_fwd" / "_bwd"):
    the launches whose SASS bench/notes/triton_masked_perturb.md turns into per-case predictions."""
    entries = []
    for name in BENCHMARK_CASES:
        forward, backward = benchmark_launches(name)
        entries.append(AotKernel(f"bench_{name}_fwd", masked_perturb_forward_kernel, forward.args, False, forward.num_warps))
        entries.append(AotKernel(f"bench_{name}_bwd", backward.kernel or masked_perturb_backward_kernel, backward.args,
                                 False, backward.num_warps))
    return entries
