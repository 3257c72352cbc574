"""Which (backend, device) pairs the tests run on, so that the SAME test bodies cover every backend.

- "reference" and "cpu" on CPU tensors always (the C++ kernels must be built);
- "triton" on CPU tensors only when TRITON_INTERPRET=1 (the Triton interpreter; `.ci/test` runs
  those in their own pytest process with `-m triton_interpreter`), and on CUDA tensors on a GPU;
- "cuda" when a GPU is present.
Cases that are not runnable here are not generated (never skipped into green).
"""
from __future__ import annotations

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def backend_device_params(include_reference: bool = True):
    """pytest.param((backend, device)) for every backend runnable here."""
    params = []
    if INTERPRET:  # the interpreter process runs only the Triton cases
        params.append(pytest.param(("triton", "cpu"), id="triton-cpu", marks=pytest.mark.triton_interpreter))
        return params
    if include_reference:
        params.append(pytest.param(("reference", "cpu"), id="reference-cpu"))
    params.append(pytest.param(("cpu", "cpu"), id="cpu-cpu"))
    if torch.cuda.is_available():
        params.append(pytest.param(("cuda", "cuda"), id="cuda-cuda"))
        params.append(pytest.param(("triton", "cuda"), id="triton-cuda"))
    return params


def interpreter_dtypes(dtypes):
    """The Triton interpreter has no bf16 arithmetic: drop bfloat16 in the interpreter process."""
    return [d for d in dtypes if not (INTERPRET and d == torch.bfloat16)]
