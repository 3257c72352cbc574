"""The label_map Triton kernels compile ahead of time for sm_80 and sm_90 without a GPU
(triton.compile(ASTSource, target=GPUTarget)), and their PTX uses no local memory (no spills).
The interpreter cannot catch GPU-only compile errors (it once accepted a non-constexpr global).
Runs in the normal process only: it is not marked triton_interpreter, so tests/conftest.py drops
it from the interpreter process (where kernels are interpreted functions)."""
from __future__ import annotations

import pytest
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

F32, I64 = "*fp32", "*i64"
ROW = dict(S="i32", T="i32", K="i32")
TILE = dict(HAS_W=True, BLOCK_T=128, BLOCK_K=8, ACC=tl.float32)


def _cases(k):
    """(name, kernel, runtime parameter types, constexpr values): the variants the ops launch."""
    ce_args = dict(x_ptr="*bf16", target_ptr=I64, index_ptr=I64, weight_ptr=F32, scale_ptr=F32, stats_ptr=F32,
                   loss_ptr=F32, a_ptr=F32, dense_ptr=F32, ignore_index="i32", **ROW)
    return [
        ("label_map_forward", k.label_map_forward_kernel,
         dict(x_ptr=F32, index_ptr=I64, weight_ptr=F32, out_ptr=F32, stats_ptr=F32, **ROW),
         dict(REDUCE=1, PRE=1, BLOCK_S=1024, **TILE)),
        ("label_map_coefficients", k.label_map_coefficients_kernel,
         dict(grad_out_ptr=F32, x_ptr=F32, index_ptr=I64, weight_ptr=F32, stats_ptr=F32, a_ptr=F32, gw_ptr=F32,
              **ROW),
         dict(REDUCE=2, PRE=1, WEIGHT_GRAD=True, **TILE)),
        ("mapped_ce_softmax", k.mapped_ce_kernel, ce_args,
         dict(EPS=0.1, REDUCE=1, PRE=1, NEED_LSE=False, WEIGHT_GRAD=False, BLOCK_S=1024, **TILE)),
        ("mapped_ce_weight_grad", k.mapped_ce_kernel, ce_args,
         dict(EPS=0.0, REDUCE=0, PRE=2, NEED_LSE=True, WEIGHT_GRAD=True, BLOCK_S=1024, **TILE)),
        ("dense_fill", k.dense_fill_kernel,
         dict(x_ptr="*fp16", stats_ptr=F32, coef_ptr=F32, grad_ptr="*fp16", S="i32", STATS_STRIDE="i32"),
         dict(DENSE=True, BLOCK_S=1024, ACC=tl.float32)),
        ("scatter_sorted", k.scatter_sorted_kernel,
         dict(a_ptr=F32, scale_ptr=F32, sorted_src_ptr=I64, perm_ptr=I64, grad_ptr=F32, S="i32", TK="i32"),
         dict(HAS_SCALE=True, BLOCK_E=1024, ACC=tl.float32)),
    ]


@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_gpu_without_local_memory(arch):
    from reprogram_ext.triton import _label_map_kernels as kernels

    for name, kernel, types, constexprs in _cases(kernels):
        signature = {p.name: "constexpr" if p.name in constexprs else types[p.name] for p in kernel.params}
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", arch, 32))
        ptx = compiled.asm["ptx"]
        assert f".target sm_{arch}" in ptx, name
        assert ".local" not in ptx, f"{name}: local memory (spills) in the sm_{arch} PTX"
