"""The CUDA label_map kernels' row mechanics, executed on the host: tests/cpp/label_map_cuda_rows.cpp
compiles csrc/label_map/cuda_rows.cuh and cuda_grad_row.cuh (the lane partition of a row, the online
log-sum-exp and its butterfly merge, the gradient-row writer) with g++ and runs them over simulated
row groups of several sizes, alignments and lane counts against direct formulas."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from torch.utils.cpp_extension import include_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cuda_row_mechanics_on_the_host(tmp_path):
    exe = tmp_path / "label_map_cuda_rows"
    cmd = ["g++", "-std=c++20", "-O1", "-I", os.path.join(ROOT, "csrc"),
           *[f"-I{p}" for p in include_paths()], os.path.join(ROOT, "tests", "cpp", "label_map_cuda_rows.cpp"),
           "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "all passed" in run.stdout, run.stdout[-4000:]
