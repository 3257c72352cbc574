"""The SASS parser and budget checks of .ci/check_gpu_code.py on hand-written cuobjdump output: no GPU,
no nvcc, no cuobjdump needed."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".ci", "check_gpu_code.py")
_spec = importlib.util.spec_from_file_location("check_gpu_code", _PATH)
check = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("check_gpu_code", check)  # dataclasses look their module up there
_spec.loader.exec_module(check)

# Two kernels in cuobjdump -sass layout (the encoding comments as cuobjdump prints them).
# k_loop: 15 instructions besides 2 NOPs and the closing BRA-to-self; a loop 0x0040..0x00c0 (9
# instructions); one CALL into the subroutine at 0x0100 (3 instructions).
SASS = """
\tcode for sm_90
\t.target\tsm_90

\t\tFunction : _Z6k_loopPfPKf
\t.headerflags\t@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                        /* 0x00000a00ff017b82 */
                                                                                  /* 0x000fe40000000800 */
        /*0010*/                   S2R R0, SR_TID.X ;                            /* 0x0000000000007919 */
        /*0020*/                   STL [R1], R2 ;                                /* 0x0000000201007387 */
        /*0030*/                   STL.64 [R1+0x8], R4 ;                         /* 0x0000080401007387 */
        /*0040*/                   LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;     /* 0x0000000402047981 */
        /*0050*/                   LDG.E R8, desc[UR4][R2.64+0x10] ;             /* 0x0000100402087981 */
        /*0060*/              @!P0 LDG.E.U16.CONSTANT R9, desc[UR4][R6.64] ;     /* 0x0000000406098981 */
        /*0070*/                   LDG.E.64 R10, desc[UR4][R6.64] ;              /* 0x00000004060a7981 */
        /*0080*/                   LDL R12, [R1] ;                               /* 0x00000000010c7983 */
        /*0090*/                   CALL.REL.NOINC 0x100 ;                        /* 0x0000006000007944 */
        /*00a0*/                   STG.E.128 desc[UR4][R2.64], R4 ;              /* 0x0000000402007986 */
        /*00b0*/               @P1 STG.E.U8 desc[UR4][R2.64], R4 ;               /* 0x0000000402001986 */
        /*00c0*/               @P2 BRA 0x40 ;                                    /* 0x0000000000002947 */
        /*00d0*/                   EXIT ;                                        /* 0x000000000000794d */
        /*00e0*/                   BRA 0xe0;                                     /* 0xfffffffc00fc7947 */
        /*00f0*/                   NOP;                                          /* 0x0000000000007918 */
        /*0100*/                   IMAD.HI.U32 R0, R1, R2, RZ ;                  /* 0x0000000201007227 */
        /*0110*/                   RED.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR4][R2.64], R0 ; /* 0x0 */
        /*0120*/                   RET.REL.NODEC R14 0x0 ;                       /* 0x0000000000007950 */
        /*0130*/                   NOP;                                          /* 0x0000000000007918 */
\t\t..........


\t\tFunction : _ZN13reprogram_ext12_GLOBAL__N_18k_simpleIfLb1EEEvPT_
\t.headerflags\t@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDG.E.128 R4, desc[UR4][R2.64] ;              /* 0x0000000402047981 */
        /*0010*/                   STG.E.64.STRONG.SM desc[UR4][R2.64], R4 ;     /* 0x0000000402007986 */
        /*0020*/                   STG.E.64 desc[UR4][R2.64+0x8], R6 ;           /* 0x0000080402007986 */
        /*0030*/                   EXIT ;                                        /* 0x000000000000794d */
        /*0040*/                   BRA 0x40;                                     /* 0xfffffffc00fc7947 */
\t\t..........
"""

RES_USAGE = """
Resource usage:
 Common:
  GLOBAL:28 CONSTANT[4]:224
 Function _Z6k_loopPfPKf:
  REG:40 STACK:16 SHARED:0 LOCAL:16 CONSTANT[0]:865 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _ZN13reprogram_ext12_GLOBAL__N_18k_simpleIfLb1EEEvPT_:
  REG:12 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:368 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def _functions():
    return {f.mangled: f for f in check.parse_sass(SASS)}


def test_parse_sass_splits_functions_with_arch_and_predicates():
    functions = _functions()
    assert list(functions) == ["_Z6k_loopPfPKf", "_ZN13reprogram_ext12_GLOBAL__N_18k_simpleIfLb1EEEvPT_"]
    loop = functions["_Z6k_loopPfPKf"]
    assert loop.arch == "sm_90"
    assert len(loop.instructions) == 20  # every /*addr*/ line, NOPs and the trap BRA included
    predicated = loop.instructions[6]
    assert (predicated.address, predicated.predicate, predicated.opcode) == (0x60, "@!P0", "LDG.E.U16.CONSTANT")


def test_counts_instructions_calls_local_memory_and_widths():
    s = check.kernel_stats(_functions()["_Z6k_loopPfPKf"].instructions)
    assert s.instructions == 17  # 20 lines minus 2 NOPs and the BRA to itself
    assert s.subroutine_instructions == 3 and s.kernel_instructions == 14
    assert s.calls == 1
    assert (s.local_stores, s.local_loads, s.local_store_bytes) == (2, 1, 4 + 8)
    assert s.loads == {128: 1, 32: 1, 16: 1, 64: 1}
    assert s.stores == {128: 1, 8: 1}
    assert s.atomics == 1
    assert (s.loops, s.max_loop_body) == (1, 9)  # 0x40..0xc0


def test_store_widths_ignore_cache_modifiers():
    s = check.kernel_stats(_functions()["_ZN13reprogram_ext12_GLOBAL__N_18k_simpleIfLb1EEEvPT_"].instructions)
    assert s.instructions == 4 and s.subroutine_instructions == 0 and s.calls == 0
    assert s.loads == {128: 1} and s.stores == {64: 2}
    assert s.loops == 0 and s.local_stores == 0


@pytest.mark.parametrize("opcode, bits", [("LDG.E", 32), ("LDG.E.64.CONSTANT", 64), ("LDG.E.128.STRONG.GPU", 128),
                                          ("STG.E.U16", 16), ("LDG.E.S8", 8), ("STL.128", 128)])
def test_access_width(opcode, bits):
    assert check.access_width(opcode) == bits


def test_parse_res_usage():
    usage = check.parse_res_usage(RES_USAGE)
    assert usage["_Z6k_loopPfPKf"]["REG"] == 40 and usage["_Z6k_loopPfPKf"]["STACK"] == 16
    assert usage["_ZN13reprogram_ext12_GLOBAL__N_18k_simpleIfLb1EEEvPT_"]["LOCAL"] == 0
    assert "Common" not in usage and len(usage) == 2


def test_short_name():
    demangled = ("void reprogram_ext::(anonymous namespace)::masked_perturb_forward_kernel<c10::Half, unsigned char, "
                 "true>(reprogram_ext::MaskedPerturbArgs, unsigned char const*, c10::Half const*)")
    assert check.short_name(demangled) == "masked_perturb_forward_kernel<Half, unsigned char, true>"
    assert check.short_name("k_loop(float*, float const*)") == "k_loop"


def test_derived_budget_is_the_stated_roofline_arithmetic():
    machine = dict(sms=132, warp_instructions_per_clock_per_sm=4, clock_ghz=1.7, dram_tb_per_s=3.0, issue_margin=1.0)
    # 132 * 4 * 1.7e9 * 32 thread-instructions/s over 3.0e12 / 8 outputs/s
    assert check.derived_instruction_budget(machine, 8) == pytest.approx(76.60, abs=0.01)
    assert check.derived_instruction_budget(dict(machine, issue_margin=0.5), 4) == pytest.approx(19.15, abs=0.01)


def _kernels():
    usage = check.parse_res_usage(RES_USAGE)
    return [check.Kernel(f"cuda:{f.mangled}", f.arch, usage[f.mangled]["REG"], usage[f.mangled]["STACK"],
                         usage[f.mangled]["LOCAL"], check.kernel_stats(f.instructions)) for f in _functions().values()]


MACHINE = dict(sms=132, warp_instructions_per_clock_per_sm=4, clock_ghz=1.7, dram_tb_per_s=3.0, issue_margin=0.5)


def test_check_entry_reports_each_failed_budget():
    loop, simple = _kernels()
    entry = dict(calls=0, local_memory=False, atomics=0, vector_io=["load", "store"], max_registers=32)
    reasons = check.check_entry(loop, entry, MACHINE)
    assert len(reasons) == 6, reasons  # calls, STL/LDL, stack, local, registers, atomics
    assert any("CALL" in r for r in reasons) and any("STL" in r for r in reasons)
    assert any("atomics" in r for r in reasons) and any("40 registers" in r for r in reasons)
    reasons = check.check_entry(simple, entry, MACHINE)
    assert reasons == ["no 128-bit global store (stores by width: 64b:2)"]


def test_per_output_budget_static_and_loop():
    loop, simple = _kernels()
    # simple: 4 instructions, 1 output per thread: 4 <= 38 (8 B/output)
    assert check.check_entry(simple, dict(outputs_per_thread=1, dram_bytes_per_output=8), MACHINE) == []
    assert check.check_entry(simple, dict(outputs_per_thread=1, max_instructions_per_output=3), MACHINE) != []
    # loop: 9-instruction loop body, 1 output per iteration; the kernel's own code is 14 instructions
    assert check.per_output(loop, 1, "loop") == (9, "loop body")
    assert check.per_output(loop, 2, "static") == (7, "static")
    assert check.check_entry(loop, dict(outputs_per_thread=1, per_output="loop", max_instructions_per_output=8),
                             MACHINE) == ["9 instructions per output (loop body, 1 outputs per thread; budget 8)"]


def test_check_budgets_enforcement_and_unmatched_patterns():
    kernels = _kernels()
    budgets = {"machine": MACHINE, "kernels": [
        {"pattern": "cuda:_Z6k_loop*", "calls": 0, "enforce": False},
        {"pattern": "cuda:*k_simple*", "vector_io": ["load"], "enforce": True},
        {"pattern": "cuda:renamed_kernel*", "calls": 0, "enforce": True},
        {"pattern": "triton:*", "calls": 0, "enforce": True},
    ]}
    lines, failures = check.check_budgets(kernels, budgets, enforce_all=False, kinds=("cuda",))
    assert failures == 1  # the enforced pattern that matches nothing; the failing k_loop entry is report-only
    assert lines[0].startswith("FAIL [report] cuda:_Z6k_loop*")
    assert lines[2].startswith("ok   [enforced] cuda:*k_simple*")
    assert lines[3] == "FAIL [enforced] cuda:renamed_kernel*: matches no kernel"
    assert lines[4].startswith("skip")
    _, failures = check.check_budgets(kernels, budgets, enforce_all=True, kinds=("cuda",))
    assert failures == 2
    exclude = {"machine": MACHINE, "kernels": [{"pattern": "cuda:*", "exclude": "cuda:_Z6k_loop*", "calls": 0,
                                                "enforce": True}]}
    assert check.check_budgets(kernels, exclude, enforce_all=False)[1] == 0


def test_table_lists_every_kernel():
    table = check.format_table(_kernels())
    assert "128b:1 64b:1 32b:1 16b:1" in table and "128b:1 8b:1" in table
    assert len(table.splitlines()) == 2 + 2


def _stats_of(name, ops):
    """kernel_stats of one sm_90 function whose instructions are `ops`, 16 bytes apart from 0x0."""
    lines = ["\tcode for sm_90", f"\t\tFunction : {name}"]
    for i, op in enumerate(ops):
        lines.append(f"        /*{16 * i:04x}*/                   {op}   /* 0x0 */")
    (fn,) = check.parse_sass("\n".join(lines) + "\n")
    return check.kernel_stats(fn.instructions)


def test_load_loop_is_the_loop_that_streams():
    """Two loops: a long one without global loads (a reduction in shared memory) and a short one with
    two LDGs; "load_loop" measures the short one, "loop" the long one."""
    stats = _stats_of("_Z2k2v", ["LDG.E.128 R4, desc[UR4][R2.64] ;", "LDG.E.128 R8, desc[UR4][R2.64+0x10] ;",
                                 "FADD R0, R4, R8 ;", "@P0 BRA 0x0 ;"] + ["LDS R1, [R2] ;"] * 6
                      + ["FADD R0, R0, R1 ;", "@P1 BRA 0x40 ;", "EXIT ;"])
    assert stats.loops == 2 and stats.load_loop_body == 4 and stats.max_loop_body == 8
    kernel = check.Kernel("cuda:k2", "sm_90", 32, 0, 0, stats)
    assert check.per_output(kernel, 2, "load_loop") == (2.0, "streaming loop body")
    assert check.per_output(kernel, 2, "loop") == (4.0, "loop body")


def test_vector_loop_is_the_loop_with_128_bit_accesses():
    """Two loops: one with four scalar LDGs (a gather) and one with a 128-bit LDG and STG (the
    stream); "load_loop" measures the gather, "vector_loop" the stream."""
    stats = _stats_of("_Z2k3v", ["LDG.E R4, desc[UR4][R2.64] ;"] * 4 + ["FADD R0, R4, R5 ;", "@P0 BRA 0x0 ;"]
                      + ["LDG.E.128 R8, desc[UR4][R2.64] ;", "STG.E.128 desc[UR4][R6.64], R8 ;", "@P1 BRA 0x60 ;",
                         "EXIT ;"])
    assert stats.loops == 2 and stats.load_loop_body == 6 and stats.vector_loop_body == 3
    kernel = check.Kernel("cuda:k3", "sm_90", 32, 0, 0, stats)
    assert check.per_output(kernel, 4, "load_loop") == (1.5, "streaming loop body")
    assert check.per_output(kernel, 3, "vector_loop") == (1.0, "128-bit streaming loop body")
