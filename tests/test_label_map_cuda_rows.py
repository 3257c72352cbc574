"""The CUDA label_map kernels' row mechanics, executed on the host: tests/cpp/label_map_cuda_rows.cpp
compiles csrc/label_map/cuda_rows.cuh and cuda_grad_row.cuh (the lane partition of a row, the online
log-sum-exp and its butterfly merge, the gradient-row writer) with g++ and runs them over simulated
row groups of several sizes, alignments and lane counts against direct formulas; and
tests/cpp/label_map_divide.cpp runs the kernels' division (csrc/label_map/divide.h) on the host."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from torch.utils.cpp_extension import include_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_and_run(tmp_path, name: str) -> None:
    """g++ tests/cpp/<name>.cpp against csrc/, run it: it exits 0 and prints "all passed"."""
    exe = tmp_path / name
    cmd = ["g++", "-std=c++20", "-O1", "-I", os.path.join(ROOT, "csrc"),
           *[f"-I{p}" for p in include_paths()], os.path.join(ROOT, "tests", "cpp", f"{name}.cpp"),
           "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "all passed" in run.stdout, run.stdout[-4000:]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cuda_row_mechanics_on_the_host(tmp_path):
    _build_and_run(tmp_path, "label_map_cuda_rows")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cuda_division_on_the_host(tmp_path):
    """reciprocal_refined with seeds 2^-22 off (worse than the hardware's): 1/x within 1 ulp over the
    whole float / double exponent range, a * (1/b) within 1.5 ulp of a / b, 0 / inf / nan right."""
    _build_and_run(tmp_path, "label_map_divide")
