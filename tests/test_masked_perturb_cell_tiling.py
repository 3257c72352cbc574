"""The fused CUDA backward's tiling for a per-sample mask coarser than the canvas
(csrc/masked_perturb/cell_tiling.h: masked_perturb_cell_backward_kernel's row, cell and delta passes),
executed on the host by tests/cpp/masked_perturb_cell_tiling.cpp: every grad_out element read exactly
once by the thread of its footprint row, every shared row / partial slot written once and read for the
right cell row / position, every mask cell and delta position written once, and the cell and batch
sums of integer-valued data exact -- at SMM's benchmark shape (B 64, 3 x 224 x 224, mask_scale 8) and
at batches, heights and widths around the chunk, footprint and strip edges, for mask_scale 4, 8, 16.
And the kernel's thread code itself (csrc/masked_perturb/cell_backward_thread.h: prologue, row pass,
then after the barrier the cell and delta passes), run on the host by
tests/cpp/masked_perturb_cell_backward.cpp: cells bit for bit in the CPU kernel's order, cells and delta
gradients against the formula in double, over the kernel's options."""
from __future__ import annotations

import shutil

import pytest

from cpp_host import build_and_run


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cell_backward_tiling_on_the_host(tmp_path):
    build_and_run(tmp_path, "masked_perturb_cell_tiling")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cell_backward_thread_code_on_the_host(tmp_path):
    build_and_run(tmp_path, "masked_perturb_cell_backward")
