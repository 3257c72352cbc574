#!/usr/bin/env python3
"""Static GPU code check: proves properties of every CUDA and Triton kernel from its compiled SASS,
on a machine without a GPU.

1. Compiles each ``csrc/*/*.cu`` to a cubin for sm_90 (``--arch 90,80`` adds sm_80) with
   ``$CUDA_HOME/bin/nvcc`` and the flags torch's extension build passes (include paths, the
   ``__CUDA_NO_HALF*`` defines, ``--expt-relaxed-constexpr``, the C++ standard), cached by a hash of
   ``csrc/`` and the command under ``build/gpu_code_check/``; or reads cubins already built
   (``--cubin-dir DIR``), or extracts them from a built binary (``--from-binary reprogram_ext/_C*.so``).
2. AOT-compiles every Triton launch of ``reprogram_ext/ops/<op>/triton_aot.py`` (``aot_kernels()``)
   with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` and takes its cubin.
3. Disassembles with ``cuobjdump -sass`` and ``-res-usage`` (the toolkit's, else the copy in Triton's
   package) and measures per kernel: registers, stack frame and local memory, local loads / stores
   (LDL / STL, i.e. spills), subroutine calls (CALL.*), global loads / stores by access width
   (LDG / STG), global atomics, the static instruction count (NOPs and the closing ``BRA`` to itself
   excluded) and the largest loop body (instructions between a backward branch and its target).
4. Prints one table row per kernel, then checks the budgets of ``.ci/gpu_code_budgets.json``: every
   entry whose ``pattern`` (fnmatch) matches a kernel's short name is checked against it. Exit code 1
   when an enforced entry fails (``"enforce": true``; ``--enforce-all`` enforces every entry);
   ``--report`` prints the same verdicts and always exits 0.

Instructions per output (the roofline budget): a loop-free kernel executes at most its static
instruction count per thread, so ``instructions / outputs_per_thread`` bounds the issued
instructions per output. A kernel with loops is measured by its largest loop body instead (one
iteration handles ``outputs_per_thread`` outputs). The budget itself is derived in the JSON file
from the machine's issue rate and DRAM bandwidth (see ``derived_instruction_budget``).

Standard library only, plus torch (include paths, nvcc flags) and triton (AOT compilation) when
those steps run. Run from anywhere: ``python .ci/check_gpu_code.py [--report]``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import glob
import hashlib
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BUDGETS = os.path.join(ROOT, ".ci", "gpu_code_budgets.json")
CACHE_DIR = os.path.join(ROOT, "build", "gpu_code_check")

# ---------------------------------------------------------------------------------------------
# SASS parsing (pure functions: tests/test_gpu_code_check.py feeds them hand-written snippets)
# ---------------------------------------------------------------------------------------------

_ARCH_LINE = re.compile(r"code for (sm_\d+a?)\b|^\s*arch\s*=\s*(sm_\d+a?)\b")
_FUNCTION_LINE = re.compile(r"^\s*Function\s*:\s*(\S+)")
_INSTRUCTION_LINE = re.compile(r"^\s*/\*([0-9a-fA-F]{4,})\*/\s+([^;]*?)\s*;")
_RES_FUNCTION = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_RES_FIELD = re.compile(r"\b([A-Z]+(?:\[\d+\])?):(\d+)")
_WIDTH_MODIFIERS = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "64": 64, "128": 128, "256": 256}


@dataclass
class Instruction:
    address: int
    predicate: str  # "" or e.g. "@!P0"
    opcode: str  # full mnemonic with modifiers, e.g. "LDG.E.128.CONSTANT"
    operands: str


@dataclass
class SassFunction:
    mangled: str
    arch: str
    instructions: List[Instruction] = field(default_factory=list)


def parse_instruction(text: str, address: int) -> Instruction:
    """'@!P0 LDG.E.64 R2, desc[UR4][R4.64]' -> Instruction(address, '@!P0', 'LDG.E.64', 'R2, ...')."""
    parts = text.split(None, 1)
    predicate = ""
    if parts and parts[0].startswith("@"):
        predicate = parts[0]
        parts = parts[1].split(None, 1) if len(parts) > 1 else []
    opcode = parts[0] if parts else ""
    operands = parts[1] if len(parts) > 1 else ""
    return Instruction(address, predicate, opcode, operands)


def parse_sass(text: str) -> List[SassFunction]:
    """The functions of ``cuobjdump -sass`` output, each with its arch and instructions in order."""
    functions: List[SassFunction] = []
    arch = "unknown"
    current: Optional[SassFunction] = None
    for line in text.splitlines():
        m = _ARCH_LINE.search(line)
        if m:
            arch = m.group(1) or m.group(2)
            current = None
            continue
        m = _FUNCTION_LINE.match(line)
        if m:
            current = SassFunction(m.group(1), arch)
            functions.append(current)
            continue
        m = _INSTRUCTION_LINE.match(line)
        if m and current is not None:
            current.instructions.append(parse_instruction(m.group(2), int(m.group(1), 16)))
    return functions


def parse_res_usage(text: str) -> Dict[str, Dict[str, int]]:
    """``cuobjdump -res-usage`` -> {mangled name: {"REG": .., "STACK": .., "SHARED": .., "LOCAL": ..}}."""
    usage: Dict[str, Dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        m = _RES_FUNCTION.match(line)
        if m:
            name = m.group(1)
            continue
        if name is not None and "REG:" in line:
            usage[name] = {k: int(v) for k, v in _RES_FIELD.findall(line)}
            name = None
    return usage


def access_width(opcode: str) -> int:
    """Bits moved per thread by a load / store mnemonic: LDG.E -> 32, LDG.E.128 -> 128, STG.E.U16 -> 16."""
    for modifier in opcode.split(".")[1:]:
        if modifier in _WIDTH_MODIFIERS:
            return _WIDTH_MODIFIERS[modifier]
    return 32


def _base(opcode: str) -> str:
    return opcode.split(".", 1)[0]


def _branch_target(ins: Instruction) -> Optional[int]:
    m = re.match(r"\s*(0x[0-9a-fA-F]+)", ins.operands)
    return int(m.group(1), 16) if m else None


@dataclass
class KernelStats:
    """What one function's SASS shows. Widths are in bits; local_store_bytes sums the STL widths (spill stores)."""

    instructions: int
    subroutine_instructions: int
    calls: int
    local_loads: int
    local_stores: int
    local_store_bytes: int
    loads: Dict[int, int]
    stores: Dict[int, int]
    atomics: int
    loops: int
    max_loop_body: int
    load_loop_body: int = 0  # the body of the loop with the most global loads (the streaming loop)
    vector_loop_body: int = 0  # the body of the loop with the most 128-bit global loads and stores

    @property
    def kernel_instructions(self) -> int:
        """Instructions of the kernel's own code, without the subroutines it calls."""
        return self.instructions - self.subroutine_instructions


def kernel_stats(instructions: Iterable[Instruction]) -> KernelStats:
    """Counts over one function's instructions.

    instructions: all but NOP and a BRA whose target is its own address (the closing trap loop);
    calls: CALL.* (CALL.REL.NOINC to an internal subroutine such as int64 division or the slow path
    of float division, CALL.ABS.NOUNI); subroutine_instructions: those at or after the lowest CALL
    target (ptxas appends the called subroutines after the kernel's code);
    loads / stores: LDG / STG per access width; atomics: ATOM / ATOMG / RED (global);
    loops: branches of the kernel's code to a lower address; max_loop_body: the most instructions in
    one [target, branch] range; load_loop_body: the instructions of the range with the most LDGs (ties:
    the larger one), the loop that streams the big tensor in a kernel with several loops;
    vector_loop_body: the same for the most 128-bit LDG + STG (a streaming loop beside a loop that
    gathers more, narrower values).
    """
    body = []
    for ins in instructions:
        if _base(ins.opcode) == "NOP":
            continue
        if _base(ins.opcode) == "BRA" and _branch_target(ins) == ins.address:
            continue
        body.append(ins)
    call_targets = [t for t in (_branch_target(i) for i in body if _base(i.opcode) == "CALL") if t is not None]
    subroutines_at = min(call_targets, default=None)
    in_subroutine = [subroutines_at is not None and i.address >= subroutines_at for i in body]
    loads: Counter = Counter()
    stores: Counter = Counter()
    calls = local_loads = local_stores = local_store_bytes = atomics = 0
    loop_ranges = []
    for ins, sub in zip(body, in_subroutine):
        base = _base(ins.opcode)
        if base == "CALL":
            calls += 1
        elif base == "LDL":
            local_loads += 1
        elif base == "STL":
            local_stores += 1
            local_store_bytes += access_width(ins.opcode) // 8
        elif base == "LDG":
            loads[access_width(ins.opcode)] += 1
        elif base == "STG":
            stores[access_width(ins.opcode)] += 1
        elif base in ("ATOM", "ATOMG", "RED"):
            atomics += 1
        elif base == "BRA" and not sub:
            target = _branch_target(ins)
            if target is not None and target < ins.address:
                loop_ranges.append((target, ins.address))
    sizes = [(sum(1 for i in body if lo <= i.address <= hi and _base(i.opcode) == "LDG"),
              sum(1 for i in body if lo <= i.address <= hi)) for lo, hi in loop_ranges]
    max_loop_body = max((n for _, n in sizes), default=0)
    load_loop_body = max(sizes, default=(0, 0))[1]
    vector_sizes = [(sum(1 for i in body if lo <= i.address <= hi and _base(i.opcode) in ("LDG", "STG")
                         and access_width(i.opcode) == 128), n) for (lo, hi), (_, n) in zip(loop_ranges, sizes)]
    vector_loop_body = max(vector_sizes, default=(0, 0))[1]
    return KernelStats(len(body), sum(in_subroutine), calls, local_loads, local_stores, local_store_bytes,
                       dict(loads), dict(stores), atomics, len(loop_ranges), max_loop_body, load_loop_body,
                       vector_loop_body)


def short_name(demangled: str) -> str:
    """The demangled name without return type, parameter list and namespaces:
    'void reprogram_ext::(anonymous namespace)::k<c10::Half, float, true>(Args, float const*)'
    -> 'k<Half, float, true>'."""
    name = demangled.strip()
    depth = 0
    for i, ch in enumerate(name):  # cut the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not name.startswith("(anonymous", i):
            name = name[:i]
            break
    if name.startswith("void "):
        name = name[len("void "):]
    for prefix in ("reprogram_ext::", "(anonymous namespace)::", "c10::", "at::"):
        name = name.replace(prefix, "")
    return name


def demangle(names: List[str]) -> Dict[str, str]:
    """Mangled -> demangled with c++filt (or cu++filt); names map to themselves without one."""
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {n: n for n in names}


# ---------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------


def derived_instruction_budget(machine: dict, dram_bytes_per_output: float) -> float:
    """Issued thread-instructions per output that keep a kernel memory-bound, with the margin.

    issue = SMs x schedulers x clock x 32 threads      (thread-instructions per second)
    rate  = bandwidth / dram_bytes_per_output          (outputs per second at the memory roofline)
    max instructions per output = margin x issue / rate
    """
    issue = machine["sms"] * machine["warp_instructions_per_clock_per_sm"] * machine["clock_ghz"] * 1e9 * 32
    rate = machine["dram_tb_per_s"] * 1e12 / dram_bytes_per_output
    return machine["issue_margin"] * issue / rate


@dataclass
class Kernel:
    name: str  # "cuda:<short demangled name>" or "triton:<op>/<entry>"
    arch: str
    regs: Optional[int]
    stack: Optional[int]
    local: Optional[int]
    stats: KernelStats


def per_output(kernel: Kernel, outputs_per_thread: float, measure: str = "static") -> tuple:
    """(instructions per output, what was counted). measure "static": the kernel's own instructions (a
    loop-free thread executes at most these); "loop": its largest loop body (one iteration handles
    outputs_per_thread outputs); "load_loop": the body of its loop with the most global loads (one
    iteration handles outputs_per_thread outputs), for kernels whose streaming loop sits beside others
    (a reduction over shared memory, a tail); "vector_loop": the body of its loop with the most 128-bit
    global loads and stores, for a streaming loop beside a loop with more scalar loads."""
    s = kernel.stats
    if measure in ("loop", "load_loop", "vector_loop"):
        if not s.loops:
            return s.kernel_instructions / outputs_per_thread, "static, no loop found"
        if measure == "load_loop":
            return s.load_loop_body / outputs_per_thread, "streaming loop body"
        if measure == "vector_loop":
            return s.vector_loop_body / outputs_per_thread, "128-bit streaming loop body"
        return s.max_loop_body / outputs_per_thread, "loop body"
    if measure != "static":
        raise ValueError(f"budget 'per_output' must be 'static', 'loop', 'load_loop' or 'vector_loop', "
                         f"got {measure!r}")
    return s.kernel_instructions / outputs_per_thread, "static"


def per_output_limit(entry: dict, machine: dict) -> int:
    """The entry's max_instructions_per_output, else the roofline budget at its dram_bytes_per_output."""
    if "max_instructions_per_output" in entry:
        return entry["max_instructions_per_output"]
    return math.floor(derived_instruction_budget(machine, entry["dram_bytes_per_output"]))


def check_entry(kernel: Kernel, entry: dict, machine: dict) -> List[str]:
    """The reasons `kernel` fails budget `entry` (empty when it passes)."""
    failures = []
    s = kernel.stats
    if "calls" in entry and s.calls > entry["calls"]:
        failures.append(f"{s.calls} subroutine CALLs (budget {entry['calls']})")
    if entry.get("local_memory") is False:
        if s.local_loads or s.local_stores:
            failures.append(f"local memory: {s.local_stores} STL ({s.local_store_bytes} bytes) / {s.local_loads} LDL")
        if kernel.stack:
            failures.append(f"{kernel.stack}-byte stack frame")
        if kernel.local:
            failures.append(f"{kernel.local} bytes of local memory")
    if "max_registers" in entry and kernel.regs is not None and kernel.regs > entry["max_registers"]:
        failures.append(f"{kernel.regs} registers (budget {entry['max_registers']})")
    if "max_instructions" in entry and s.instructions > entry["max_instructions"]:
        failures.append(f"{s.instructions} static instructions (budget {entry['max_instructions']})")
    if "outputs_per_thread" in entry:
        limit = per_output_limit(entry, machine)
        value, how = per_output(kernel, entry["outputs_per_thread"], entry.get("per_output", "static"))
        if value > limit:
            failures.append(f"{value:.0f} instructions per output ({how}, {entry['outputs_per_thread']} outputs per "
                            f"thread; budget {limit})")
    if "atomics" in entry and s.atomics > entry["atomics"]:
        failures.append(f"{s.atomics} global atomics (budget {entry['atomics']})")
    vector_io = entry.get("vector_io", [])
    if vector_io is True:
        vector_io = ["load", "store"]
    for kind in vector_io:
        widths = s.loads if kind == "load" else s.stores
        if not any(w >= 128 for w in widths):
            failures.append(f"no 128-bit global {kind} ({kind}s by width: {format_widths(widths) or 'none'})")
    return failures


def _patterns(entry: dict, key: str) -> List[str]:
    value = entry.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def matches(kernel: Kernel, entry: dict) -> bool:
    """`kernel` matches one of the entry's `pattern`s (fnmatch), none of its `exclude`s, and its `archs`."""
    name = kernel.name
    return (any(fnmatch.fnmatchcase(name, p) for p in _patterns(entry, "pattern"))
            and not any(fnmatch.fnmatchcase(name, p) for p in _patterns(entry, "exclude"))
            and kernel.arch in entry.get("archs", [kernel.arch]))


def check_budgets(kernels: List[Kernel], budgets: dict, enforce_all: bool, kinds=("cuda", "triton")) -> tuple:
    """(lines to print, number of enforced entries that failed). An entry of a checked kind ("cuda:..." /
    "triton:...") that matches no kernel fails: a renamed kernel must not leave its budget behind."""
    machine = budgets["machine"]
    lines, enforced_failures = [], 0
    for entry in budgets["kernels"]:
        enforced = bool(enforce_all or entry.get("enforce", False))
        label = " | ".join(_patterns(entry, "pattern"))
        tag = "enforced" if enforced else "report"
        if not any(p.split(":", 1)[0] in kinds for p in _patterns(entry, "pattern")):
            lines.append(f"skip [{tag}] {label}: not checked in this run")
            continue
        matched = [k for k in kernels if matches(k, entry)]
        if not matched:
            lines.append(f"FAIL [{tag}] {label}: matches no kernel")
            enforced_failures += enforced
            continue
        failing = [(k, r) for k in matched for r in [check_entry(k, entry, machine)] if r]
        verdict = "FAIL" if failing else "ok  "
        lines.append(f"{verdict} [{tag}] {label}: {len(matched) - len(failing)}/{len(matched)} kernels pass")
        for k, reasons in failing:
            lines.append(f"       {k.name} ({k.arch}): " + "; ".join(reasons))
        enforced_failures += enforced and bool(failing)
        if "outputs_per_thread" in entry:  # the passing kernels' margin
            failed = {id(k) for k, _ in failing}
            for k in (k for k in matched if id(k) not in failed):
                value, how = per_output(k, entry["outputs_per_thread"], entry.get("per_output", "static"))
                lines.append(f"       {k.name} ({k.arch}): {value:.1f} instructions per output ({how}), "
                             f"budget {per_output_limit(entry, machine)}")
    return lines, enforced_failures


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------


def format_widths(counts: Dict[int, int]) -> str:
    """{128: 2, 32: 5} -> '128b:2 32b:5' (widest first)."""
    return " ".join(f"{w}b:{n}" for w, n in sorted(counts.items(), reverse=True))


def format_table(kernels: List[Kernel], width: int = 64) -> str:
    head = (f"{'kernel':<{width}} {'arch':<6} {'regs':>4} {'spillB':>6} {'stack':>5} {'calls':>5} "
            f"{'instr':>6} {'sub':>5} {'loop':>5}  loads (LDG by width)      stores (STG by width)")
    rows = [head, "-" * len(head)]
    for k in sorted(kernels, key=lambda k: (k.name, k.arch)):
        s = k.stats
        name = k.name if len(k.name) <= width else k.name[:width - 1] + "~"
        loop = str(s.max_loop_body) if s.loops else "-"
        regs = "?" if k.regs is None else str(k.regs)
        stack = "?" if k.stack is None else str(k.stack)
        atom = f"  atomics:{s.atomics}" if s.atomics else ""
        rows.append(f"{name:<{width}} {k.arch:<6} {regs:>4} {s.local_store_bytes:>6} {stack:>5} {s.calls:>5} "
                    f"{s.instructions:>6} {s.subroutine_instructions:>5} {loop:>5}  "
                    f"{format_widths(s.loads) or '-':<26} "
                    f"{format_widths(s.stores) or '-'}{atom}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Tools, compilation, disassembly
# ---------------------------------------------------------------------------------------------


def cuda_home() -> Optional[str]:
    """$CUDA_HOME, else the first /usr/local/cuda* holding bin/nvcc (as setup.py picks it)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    for root in ("/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)):
        if os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return root
    return None


def find_cuobjdump() -> str:
    home = cuda_home()
    candidates = [os.path.join(home, "bin", "cuobjdump")] if home else []
    candidates.append(shutil.which("cuobjdump") or "")
    try:
        import triton  # noqa: PLC0415 - optional: Triton ships cuobjdump
        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit("check_gpu_code: no cuobjdump (not in $CUDA_HOME/bin, on PATH, or in the triton package)")


def nvcc_command(source: str, arch: int, output: str) -> List[str]:
    """The device half of torch's CUDAExtension compile of `source`, producing a cubin for sm_<arch>."""
    home = cuda_home()
    if not home or not os.path.isfile(os.path.join(home, "bin", "nvcc")):
        raise SystemExit("check_gpu_code: no nvcc: set CUDA_HOME to the toolkit root (or pass --cubin-dir)")
    os.environ.setdefault("CUDA_HOME", home)  # before torch reads it for its include paths
    import inspect  # noqa: PLC0415
    from torch.utils import cpp_extension  # noqa: PLC0415

    try:
        includes = cpp_extension.include_paths(device_type="cuda")
    except TypeError:  # torch < 2.6: include_paths(cuda: bool)
        includes = cpp_extension.include_paths(True)
    includes = [os.path.join(ROOT, "csrc"), *includes, os.path.join(home, "include"), sysconfig.get_paths()["include"]]
    std = "c++20" if "-std=c++20" in inspect.getsource(cpp_extension) else "c++17"
    common = getattr(cpp_extension, "COMMON_NVCC_FLAGS", ["--expt-relaxed-constexpr"])
    return ([os.path.join(home, "bin", "nvcc"), "-cubin", f"-arch=sm_{arch}", "-O3", f"-std={std}", *common,
             "-DREPROGRAM_EXT_WITH_CUDA", "-DREPROGRAM_EXT_PYTHON_MODULE", "-DTORCH_API_INCLUDE_EXTENSION_H",
             "-DTORCH_EXTENSION_NAME=_C"] + [f"-I{p}" for p in includes] + [source, "-o", output])


def _csrc_hash(command: List[str]) -> str:
    """Hash of every file under csrc/ (a .cu includes headers from anywhere in it) and the command."""
    h = hashlib.sha256(" ".join(command[:-1]).encode())
    for path in sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, ROOT).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def compile_cuda(sources: List[str], archs: List[int], jobs: int, log) -> List[str]:
    """Cubin paths for each source and arch, compiled in parallel, reused from build/ when unchanged."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    work = []
    for source in sources:
        for arch in archs:
            stem = f"{os.path.basename(os.path.dirname(source))}.{os.path.splitext(os.path.basename(source))[0]}"
            probe = nvcc_command(source, arch, "OUT")
            out = os.path.join(CACHE_DIR, f"{stem}.sm_{arch}.{_csrc_hash(probe)}.cubin")
            work.append((source, arch, out))

    def build(item):
        source, arch, out = item
        if os.path.isfile(out):
            return out, "cached"
        tmp = out + ".tmp"
        result = subprocess.run(nvcc_command(source, arch, tmp), capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"check_gpu_code: nvcc failed on {source} (sm_{arch}):\n{result.stderr[-4000:]}")
        os.replace(tmp, out)
        return out, "compiled"

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(build, work))
    for (source, arch, _), (out, how) in zip(work, results):
        log(f"  {os.path.relpath(source, ROOT)} sm_{arch}: {how} ({os.path.relpath(out, ROOT)})")
    return [out for out, _ in results]


def extract_cubins(binary: str, into: str, cuobjdump: str) -> List[str]:
    """The cubins embedded in a .so / .o / fatbin (cuobjdump -xelf all)."""
    subprocess.run([cuobjdump, "-xelf", "all", os.path.abspath(binary)], cwd=into, check=True, capture_output=True)
    return sorted(glob.glob(os.path.join(into, "*.cubin")))


def disassemble(cubin: str, cuobjdump: str) -> tuple:
    """(functions of the SASS, resource usage per mangled name)."""
    sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    res = subprocess.run([cuobjdump, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    return parse_sass(sass), parse_res_usage(res)


def kernels_of(cubin: str, cuobjdump: str, label=None, archs: Optional[List[str]] = None) -> List[Kernel]:
    """Every kernel of a cubin, named 'cuda:<short name>' or by `label` (Triton: one kernel a cubin)."""
    functions, usage = disassemble(cubin, cuobjdump)
    names = demangle([f.mangled for f in functions])
    kernels = []
    for f in functions:
        if archs and f.arch not in archs:
            continue
        u = usage.get(f.mangled, {})
        name = label or "cuda:" + short_name(names[f.mangled])
        kernels.append(Kernel(name, f.arch, u.get("REG"), u.get("STACK"), u.get("LOCAL"), kernel_stats(f.instructions)))
    return kernels


def triton_kernels(archs: List[int], cuobjdump: str, tmp: str, log) -> List[Kernel]:
    """Each aot_kernels() entry of each op, compiled for each arch, as 'triton:<op>/<entry>'."""
    sys.path.insert(0, ROOT)
    import triton  # noqa: PLC0415
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource  # noqa: PLC0415

    ops_dir = os.path.join(ROOT, "reprogram_ext", "ops")
    kernels = []
    for op in sorted(d for d in os.listdir(ops_dir) if os.path.isfile(os.path.join(ops_dir, d, "triton_aot.py"))):
        module = importlib.import_module(f"reprogram_ext.ops.{op}.triton_aot")
        for entry in module.aot_kernels():
            for arch in archs:
                source = ASTSource(fn=entry.kernel, signature=entry.signature(), constexprs=entry.constexprs(),
                                   attrs=entry.attrs())
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                          options={"num_warps": entry.num_warps})
                path = os.path.join(tmp, f"{op}.{entry.name}.sm_{arch}.cubin")
                with open(path, "wb") as f:
                    f.write(compiled.asm["cubin"])
                kernels += kernels_of(path, cuobjdump, label=f"triton:{op}/{entry.name}")
        log(f"  triton: {op} compiled")
    return kernels


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", action="store_true", help="print the table and verdicts; exit 0 whatever they are")
    p.add_argument("--enforce-all", action="store_true", help="enforce every budget entry, not only 'enforce': true")
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="budget file (default .ci/gpu_code_budgets.json)")
    p.add_argument("--arch", default="90", help="comma-separated SM versions (default 90; e.g. 90,80)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel nvcc compilations")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cubin-dir", help="read the CUDA kernels from the *.cubin files of DIR instead of compiling")
    src.add_argument("--from-binary",
                     help="extract the CUDA cubins from a built .so / .o / fatbin instead of compiling")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA kernels")
    p.add_argument("--no-triton", action="store_true", help="skip the Triton kernels")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    archs = [int(a) for a in args.arch.split(",") if a.strip()]
    arch_names = [f"sm_{a}" for a in archs]
    with open(args.budgets) as f:
        budgets = json.load(f)
    cuobjdump = find_cuobjdump()
    kernels: List[Kernel] = []
    with tempfile.TemporaryDirectory(prefix="gpu_code_check.") as tmp:
        if not args.no_cuda:
            log("CUDA kernels:")
            if args.cubin_dir:
                cubins = sorted(glob.glob(os.path.join(args.cubin_dir, "*.cubin")))
            elif args.from_binary:
                cubins = extract_cubins(args.from_binary, tmp, cuobjdump)
            else:
                sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*.cu")))
                cubins = compile_cuda(sources, archs, args.jobs, log)
            if not cubins:
                raise SystemExit("check_gpu_code: no cubin to check")
            for cubin in cubins:
                kernels += kernels_of(cubin, cuobjdump, archs=arch_names)
        if not args.no_triton:
            log("Triton kernels:")
            kernels += triton_kernels(archs, cuobjdump, tmp, log)
    if not kernels:
        raise SystemExit(f"check_gpu_code: no kernel for {arch_names}")
    log("")
    log(format_table(kernels))
    log("")
    log("Budgets (" + os.path.relpath(args.budgets) + "):")
    kinds = [k for k, skipped in (("cuda", args.no_cuda), ("triton", args.no_triton)) if not skipped]
    lines, failures = check_budgets(kernels, budgets, args.enforce_all, kinds)
    log("\n".join(lines))
    if failures and not args.report:
        log(f"\ncheck_gpu_code: FAILED: {failures} enforced budget "
            f"entr{'y' if failures == 1 else 'ies'} failed (above)")
        return 1
    log("\ncheck_gpu_code: " + ("report only" if args.report else "OK"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
