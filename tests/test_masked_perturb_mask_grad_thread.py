"""The old per-sample mask-cell CUDA kernel's thread code (csrc/masked_perturb/mask_grad_thread.h, the
body of masked_perturb_mask_grad_kernel, and the gathers of kernel_gathers.h it calls), executed on the
host by tests/cpp/masked_perturb_mask_grad.cpp for every cell of small problems: each cell bit for bit
equal to the CPU kernel's sum of the element mask gradients over its footprint, in the CPU's order
(rows left to right from 0, then top to bottom), over mask_scale 1 .. 9 with H, W not multiples of it,
the 128-bit and scalar layouts, int32 and int64 index math, float / double / half / bfloat16 (x also uint8), clamp,
blend replace, per-sample / per-channel / shared delta, and nearest / bilinear / several copies."""
from __future__ import annotations

import shutil

import pytest

from cpp_host import build_and_run


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_mask_grad_thread_code_on_the_host(tmp_path):
    build_and_run(tmp_path, "masked_perturb_mask_grad")
