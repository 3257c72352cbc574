"""Build and run a host C++ test of tests/cpp/ (GPU kernels' index and row code run on the CPU)."""
from __future__ import annotations

import os
import subprocess

from torch.utils.cpp_extension import include_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_and_run(tmp_path, name: str) -> None:
    """g++ tests/cpp/<name>.cpp against csrc/, run it: it exits 0 and prints "all passed"."""
    exe = tmp_path / name
    cmd = ["g++", "-std=c++20", "-O1", "-I", os.path.join(ROOT, "csrc"),
           *[f"-I{p}" for p in include_paths()], os.path.join(ROOT, "tests", "cpp", f"{name}.cpp"),
           "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "all passed" in run.stdout, run.stdout[-4000:]
