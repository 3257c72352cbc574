"""The CUDA label_map kernels' row mechanics, executed on the host: tests/cpp/label_map_cuda_rows.cpp
compiles csrc/label_map/cuda_rows.cuh and cuda_grad_row.cuh (the lane partition of a row, the online
log-sum-exp and its butterfly merge, the gradient-row writer) with g++ and runs them over simulated
row groups of several sizes, alignments and lane counts against direct formulas; and
tests/cpp/label_map_divide.cpp runs the kernels' division (csrc/label_map/divide.h) on the host."""
from __future__ import annotations

import shutil

import pytest

from cpp_host import build_and_run as _build_and_run


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cuda_row_mechanics_on_the_host(tmp_path):
    _build_and_run(tmp_path, "label_map_cuda_rows")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cuda_division_on_the_host(tmp_path):
    """reciprocal_refined with seeds 2^-22 off (worse than the hardware's): 1/x within 1 ulp over the
    whole float / double exponent range, a * (1/b) within 1.5 ulp of a / b, 0 / inf / nan right."""
    _build_and_run(tmp_path, "label_map_divide")
