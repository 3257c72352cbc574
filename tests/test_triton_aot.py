"""Ahead-of-time compilation of every Triton kernel of the package for sm_80 and sm_90, no GPU needed.

Kernels come from ``aot_kernels()`` of each op's ``triton_aot`` module (``reprogram_ext/ops/<op>/triton_aot.py``,
entries of ``reprogram_ext/aot.py``'s ``AotKernel``): each entry is one real launch's specialisation. Checks on the
result: no local memory in the PTX, zero stack frame and spill bytes in ptxas' report (Triton's
bundled ptxas), and 128-bit global loads and stores where the entry asks for them (contiguous paths).
Runs in the normal pytest process; the interpreter process (TRITON_INTERPRET=1) does not collect it.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess

import pytest
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import reprogram_ext.ops as ops_package

ARCHS = (80, 90)
VECTOR_LOAD = re.compile(r"\bld\.global(?:\.[\w:]+)*\.(?:v4\.b32|v2\.b64|v4\.f32|v4\.u32)\b")
VECTOR_STORE = re.compile(r"\bst\.global(?:\.[\w:]+)*\.(?:v4\.b32|v2\.b64|v4\.f32|v4\.u32)\b")


def _op_names():
    return [m.name for m in pkgutil.iter_modules(ops_package.__path__) if m.ispkg]


def _triton_modules():
    """Each op's module of Triton kernels."""
    return [importlib.import_module(f"{ops_package.__name__}.{op}.triton_kernels") for op in _op_names()]


def _registry():
    return [entry for op in _op_names()
            for entry in importlib.import_module(f"{ops_package.__name__}.{op}.triton_aot").aot_kernels()]


@pytest.fixture(scope="module")
def compiled():
    """(entry name, arch) -> PTX text, compiled once per test module."""
    cache = {}

    def get(entry, arch):
        if (entry.name, arch) not in cache:
            source = ASTSource(fn=entry.kernel, signature=entry.signature(), constexprs=entry.constexprs(),
                               attrs=entry.attrs())
            kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": entry.num_warps})
            cache[(entry.name, arch)] = kernel.asm["ptx"]
        return cache[(entry.name, arch)]

    return get


def _ptxas_report(ptx: str, tmp_path) -> str:
    target = re.search(r"^\.target\s+(\w+)", ptx, re.MULTILINE).group(1)  # sm_80 / sm_90a
    path = tmp_path / "kernel.ptx"
    path.write_text(ptx)
    result = subprocess.run([triton.knobs.nvidia.ptxas.path, f"-arch={target}", "-v", str(path), "-o", "/dev/null"],
                            capture_output=True, text=True, check=True)
    return result.stdout + result.stderr


def test_every_kernel_is_in_a_registry():
    """Each `*_kernel` JITFunction of an op's triton_kernels module has at least one AOT entry."""
    registered = {entry.kernel for entry in _registry()}
    missing = [f"{module.__name__}.{name}" for module in _triton_modules() for name, value in vars(module).items()
               if name.endswith("_kernel") and isinstance(value, triton.runtime.JITFunction) and value not in registered]
    assert not missing, f"kernels without an aot_kernels() entry: {missing}"
    assert len(registered) >= 2


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("entry", _registry(), ids=lambda e: e.name)
def test_compiles_without_local_memory(entry, arch, compiled, tmp_path):
    ptx = compiled(entry, arch)
    assert ".local" not in ptx, f"{entry.name}: local memory in the PTX"
    report = _ptxas_report(ptx, tmp_path)
    assert re.search(r"Used \d+ registers", report), report
    assert re.search(r"\b0 bytes stack frame", report) and not re.search(r"\b[1-9]\d* bytes spill", report), report


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("entry", [e for e in _registry() if e.vector_io], ids=lambda e: e.name)
def test_contiguous_path_uses_128_bit_accesses(entry, arch, compiled):
    ptx = compiled(entry, arch)
    assert VECTOR_LOAD.search(ptx), f"{entry.name}: no 128-bit global load"
    assert VECTOR_STORE.search(ptx), f"{entry.name}: no 128-bit global store"
