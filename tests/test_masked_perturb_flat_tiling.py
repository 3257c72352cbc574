"""The CUDA flat forward's tiling (csrc/masked_perturb/flat_tiling.h: the odd-width kernel's block,
thread and pass -> sample and plane positions), executed on the host by tests/cpp/masked_perturb_flat_tiling.cpp:
every output element of a launch written exactly once, each group's window slots inside its block's
window and its first element 16-byte aligned, for VEC 4 and 8 over planes and batches at and around
the block edges (Elsayed's 3 x 223 x 225 included); and the flat backward's tiling
(flat_backward_tiling.h) by tests/cpp/masked_perturb_flat_backward_tiling.cpp."""
from __future__ import annotations

import shutil

import pytest

from cpp_host import build_and_run


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_flat_forward_tiling_on_the_host(tmp_path):
    build_and_run(tmp_path, "masked_perturb_flat_tiling")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_flat_backward_tiling_on_the_host(tmp_path):
    """csrc/masked_perturb/flat_backward_tiling.h (the odd-width backward, cuda_flat_backward.cu): every
    grad_out element read exactly once from 16-byte aligned groups inside its warp's slice, each lane's
    positions fed the elements of those positions, each partial slot written once per block, every plane
    position finished once with the batch sum of its elements (VEC 4 and 8, Elsayed's 3 x 223 x 225 included)."""
    build_and_run(tmp_path, "masked_perturb_flat_backward_tiling")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_batch_shared_forward_batch_tiling_on_the_host(tmp_path):
    """csrc/masked_perturb/batch_tiling.h (the batch-shared CUDA forward's S samples per thread, e.g.
    AutoVP's window gather with S = 2): every sample stored exactly once, every read inside the batch
    (VEC 4 and 8, S 1 and 2, B 1 .. 70)."""
    build_and_run(tmp_path, "masked_perturb_batch_tiling")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_window_forward_mask_cell_on_the_host(tmp_path):
    """csrc/masked_perturb/window_tiling.h (the bilinear window forward's 4 rows x VEC columns per
    thread, SMM's per-sample mask read once per thread): when one_mask_cell(s, VEC) holds, every
    position of every thread's footprint lies in the thread's mask cell, and it holds for exactly
    the scales s where no footprint crosses a cell edge (VEC 4 and 8, s 1 .. 40, SMM's 224 x 224 at
    s = 8 included)."""
    build_and_run(tmp_path, "masked_perturb_window_tiling")
