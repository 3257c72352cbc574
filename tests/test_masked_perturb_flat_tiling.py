"""The CUDA flat forward's tiling (csrc/masked_perturb/flat_tiling.h: the odd-width kernel's block,
thread and pass -> sample and plane positions), executed on the host by tests/cpp/masked_perturb_flat_tiling.cpp:
every output element of a launch written exactly once, each group's window slots inside its block's
window and its first element 16-byte aligned, for VEC 4 and 8 over planes and batches at and around
the block edges (Elsayed's 3 x 223 x 225 included)."""
from __future__ import annotations

import shutil

import pytest

from cpp_host import build_and_run


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_flat_forward_tiling_on_the_host(tmp_path):
    build_and_run(tmp_path, "masked_perturb_flat_tiling")
