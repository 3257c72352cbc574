"""Registry entries for compiling Triton kernels ahead of time (no GPU needed).

Each op lists its Triton launches in ``reprogram_ext/ops/<op>/triton_aot.py`` (``aot_kernels() -> list[AotKernel]``);
``tests/test_triton_aot.py`` compiles each entry for sm_80 and sm_90 with
``triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))``
and checks the PTX (no local memory; 128-bit global loads and stores where ``vector_io`` is set).

An entry holds the arguments of one real launch (tensors may live on the "meta" device) and derives
the signature the way Triton's JIT specialises a launch: a tensor becomes a 16-byte aligned pointer
of its dtype, None and constexpr parameters become constants, an int equal to 1 becomes the
constant 1, an int divisible by 16 gets ``tt.divisibility = 16``, a float takes the parameter's
annotation (default fp32). Building the same arguments the ops build keeps the compiled variants
in step with the launches. This file does not import triton (its kernels are passed in).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

_POINTER_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
                  torch.uint8: "u8", torch.int8: "i8", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1"}


class AotKernel(NamedTuple):
    """One specialisation of a ``@triton.jit`` kernel to compile ahead of time.

    name: label in test ids; kernel: the JITFunction; args: every parameter name -> launch value;
    vector_io: the PTX must hold 128-bit global loads AND stores; num_warps: launch option of the op.
    """

    name: str
    kernel: Any
    args: dict
    vector_io: bool = False
    num_warps: int = 4

    def _typed(self):
        """(name, type string or "constexpr", constant value or None, divisible by 16) per parameter."""
        missing = [p.name for p in self.kernel.params if p.name not in self.args]
        if missing:
            raise ValueError(f"AotKernel {self.name}: no value for parameter(s) {missing}")
        for p in self.kernel.params:
            v = self.args[p.name]
            if p.is_constexpr or v is None or isinstance(v, bool):
                yield p.name, "constexpr", v, False
            elif isinstance(v, torch.Tensor):
                yield p.name, "*" + _POINTER_TYPES[v.dtype], None, True
            elif isinstance(v, int):
                if v == 1:
                    yield p.name, "constexpr", 1, False
                else:
                    yield p.name, "i32" if -2**31 <= v < 2**31 else "i64", None, v % 16 == 0
            elif isinstance(v, float):
                yield p.name, p.annotation_type or "fp32", None, False
            else:
                raise TypeError(f"AotKernel {self.name}: unsupported value {v!r} for parameter {p.name}")

    def signature(self) -> dict:
        return {name: ty for name, ty, _, _ in self._typed()}

    def constexprs(self) -> dict:
        return {name: value for name, ty, value, _ in self._typed() if ty == "constexpr"}

    def attrs(self) -> dict:
        """The ASTSource ``attrs`` argument: {(param index,): [["tt.divisibility", 16]]}."""
        return {(i,): [["tt.divisibility", 16]] for i, (_, _, _, div) in enumerate(self._typed()) if div}
