"""Registry entries for compiling Triton kernels ahead of time (no GPU needed).

Every module of ``reprogram_ext.triton`` lists its kernels in a module-level ``AOT_KERNELS: list[AotKernel]``;
``tests/test_triton_aot.py`` compiles each entry for sm_80 and sm_90 with
``triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))``
and checks the PTX (no local memory; 128-bit global accesses where ``vector_io`` is set).
This file does not import triton.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class AotKernel(NamedTuple):
    """One specialisation of a ``@triton.jit`` kernel to compile ahead of time.

    signature: every parameter name -> Triton type string ("*fp32", "i32", "fp64", "constexpr", ...);
    constexprs: values of the constexpr parameters (``None`` for pointer arguments passed as None);
    divisible_by_16: names of pointer/integer parameters that the launcher's specialisation would
    mark as 16-divisible (aligned pointers, sizes/strides multiple of 16), as Triton's JIT does;
    vector_io: the PTX must contain 128-bit global loads AND stores (``ld.global...v4`` / ``st.global...v4``
    or ``.v2.b64``);
    num_warps: launch option, as the op launches it.
    """

    name: str
    kernel: Any
    signature: dict
    constexprs: dict
    divisible_by_16: tuple = ()
    vector_io: bool = False
    num_warps: int = 4

    def attrs(self) -> dict:
        """The ASTSource ``attrs`` argument: {(param index,): [["tt.divisibility", 16]]}."""
        names = list(self.signature)
        return {(names.index(n),): [["tt.divisibility", 16]] for n in self.divisible_by_16}
