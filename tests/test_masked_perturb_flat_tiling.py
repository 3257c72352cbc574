"""The CUDA flat forward's tiling (csrc/masked_perturb/flat_tiling.h: the odd-width kernel's block,
thread and pass -> sample and plane positions), executed on the host by tests/cpp/masked_perturb_flat_tiling.cpp:
every output element of a launch written exactly once, each group's window slots inside its block's
window and its first element 16-byte aligned, for VEC 4 and 8 over planes and batches at and around
the block edges (Elsayed's 3 x 223 x 225 included); the 16-bit forward's store of the groups that
cross a plane's end (flat_clipped_store.h) by tests/cpp/masked_perturb_flat_clipped_store.cpp; and the
flat backward's tiling (flat_backward_tiling.h) by tests/cpp/masked_perturb_flat_backward_tiling.cpp."""
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
    """csrc/masked_perturb/window_tiling.h (the per-thread bilinear window forward's VEC x VEC tile,
    SMM's per-sample mask read once per thread, the rows' three-row source window): when
    one_mask_cell(s, VEC) holds, every position of every tile lies in the thread's mask cell, and it
    holds for exactly the scales s where no tile crosses a cell edge (s 1 .. 40); every row inside the
    copy has window_rows' weights equal to linear_tap's and its taps in the window rows it picks, for
    every upscale that bilinear_window_fits for VEC rows, failing for sizes that do not fit (VEC 4
    and 8; SMM's 32 -> 224 and 224 x 224 at s = 8 included)."""
    build_and_run(tmp_path, "masked_perturb_window_tiling")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_bank_forward_tiling_on_the_host(tmp_path):
    """csrc/masked_perturb/bank_tiling.h (the CUDA prompt-bank forward, cuda_bank_forward.cu: one launch for
    all V programs, each thread reusing its sample's x for every program): every element of the
    [V * B, C, H, W] output stored exactly once with the activation of its own program and position, every
    x read inside the batch, the shared-memory slots of a group contiguous and 16-byte aligned (V 1 .. 17,
    B 1 .. 64, VEC 4 and 8, one- and several-channel delta)."""
    build_and_run(tmp_path, "masked_perturb_bank_tiling")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_flat_forward_clipped_store_on_the_host(tmp_path):
    """csrc/masked_perturb/flat_clipped_store.h (the 16-bit flat forward's store of the groups that cross a
    plane's end: packed into 4 words, unpacked by funnel shifts after the passes), run for every thread
    of every block of fp16 and bf16 launches (odd and even planes, Elsayed's 3 x 223 x 225): every output
    element written exactly once with its value's bits, nothing outside the plane touched, every
    misalignment at both plane ends and every pass count exercised."""
    build_and_run(tmp_path, "masked_perturb_flat_clipped_store")
