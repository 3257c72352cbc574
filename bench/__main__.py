"""``python -m bench``: run every op's benchmark cases on the device present, print the table and the
performance-target checks, and write results.{txt,json,csv,png} (default directory bench/results/).

Examples::

    python -m bench                                  # everything, default sizes (< 10 min on 2 CPU cores)
    python -m bench --quick                          # a subset with few repetitions (< 2 min)
    python -m bench --ops masked_perturb --cases 'ilmvp_*' --reps 50
    python -m bench --backend cpu,reference --dtype bfloat16 --out /tmp/bench
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from typing import Optional, Sequence

import torch

from . import case_e2e_step, cases_label_map, cases_masked_perturb
from . import cases_presets
from .case_types import TIERS
from .report import format_table, write_all
from .runner import run_case
from .targets import check_targets, format_targets
from .utils import TimingBudget, machine_info

CASE_FAMILIES = (cases_masked_perturb.cases, cases_label_map.cases, case_e2e_step.cases,
                 cases_presets.cases)
OPS = ("masked_perturb", "label_map", "mapped_cross_entropy", "e2e_step")
IMPLS = ("cpu", "cuda", "triton", "reference", "compile")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# The C++ CPU kernels' output block cache is opt-in (docs/runtime.md); the benchmark opts in, as a
# training loop should, unless REPROGRAM_EXT_CPU_CACHE_MB says otherwise (0: measure without it).
BENCH_CPU_CACHE_MB = 256


def _csv_list(text: Optional[str], allowed: Optional[Sequence[str]], flag: str) -> Optional[list]:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if allowed is not None and t not in allowed]
    if unknown:
        raise SystemExit(f"{flag}: unknown value(s) {unknown}; expected some of {list(allowed)}")
    return items


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", help=f"comma-separated ops to run, of {', '.join(OPS)} (default: all)")
    parser.add_argument("--cases", help="comma-separated case-name patterns (fnmatch, e.g. 'ilmvp_*,v2s_b32')")
    parser.add_argument("--sizes", choices=("default", "tiny"), default="default",
                        help="default: the papers' sizes; tiny: the same cases shrunk (smoke tests)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when a GPU is present, else cpu")
    parser.add_argument("--backend", help=f"comma-separated implementations, of {', '.join(IMPLS)} (default: all)")
    parser.add_argument("--reps", type=int, help="timed calls per measurement, at most (default 30; --quick 5)")
    parser.add_argument("--seconds", type=float,
                        help="time budget per implementation and phase, in seconds (default 1.0; --quick 0.3)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--quick", action="store_true", help="the quick cases, few repetitions (< 2 min)")
    scope.add_argument("--all", action="store_true", help="add the extended grid (more batch sizes and sizes)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for results.{txt,json,csv,png}")
    return parser.parse_args(argv)


def select_cases(args: argparse.Namespace) -> list:
    ops = _csv_list(args.ops, OPS, "--ops")
    patterns = _csv_list(args.cases, None, "--cases")  # named cases run whatever their tier
    tier = "quick" if args.quick else ("all" if args.all else "default")
    selected = []
    sizes = "quick" if args.quick and args.sizes == "default" else args.sizes  # a family may shrink for --quick
    for family in CASE_FAMILIES:
        for case in family(sizes):
            if ops and case.op not in ops:
                continue
            if patterns and not any(fnmatch.fnmatch(case.name, p) for p in patterns):
                continue
            if not patterns and case.tier not in TIERS[tier]:
                continue
            selected.append(case)
    return selected


def budget_for(args: argparse.Namespace) -> TimingBudget:
    if args.quick:
        budget = TimingBudget(reps=5, min_reps=3, seconds=0.3, warmup=0, memory_repeats=1, memory_cross_check=False)
    else:
        budget = TimingBudget(reps=30, min_reps=5, seconds=1.0, warmup=1)
    if args.reps is not None:
        budget.reps = max(1, args.reps)
        budget.min_reps = min(budget.min_reps, budget.reps)
    if args.seconds is not None:
        budget.seconds = args.seconds
    return budget


def _opt_in_cpu_cache() -> int:
    """The CPU output cache limit this run uses: REPROGRAM_EXT_CPU_CACHE_MB when set, else BENCH_CPU_CACHE_MB."""
    from reprogram_ext import runtime
    from reprogram_ext.runtime.cpu_cache import ENV_VAR, parse_limit

    mb = parse_limit(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR, "").strip() else BENCH_CPU_CACHE_MB
    runtime.set_cpu_cache_limit(mb)
    return mb


def main(argv: Optional[Sequence[str]] = None, log=print) -> dict:
    """Run the selected cases; print and write the results; return the JSON payload."""
    args = parse_args(argv)
    begin = time.perf_counter()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    dtype = DTYPES[args.dtype]
    impl_filter = set(_csv_list(args.backend, IMPLS, "--backend") or ()) or None
    budget = budget_for(args)
    cases = select_cases(args)
    cache_mb = _opt_in_cpu_cache()
    machine = machine_info(device)
    machine["cpu_output_cache_mb"] = cache_mb
    log(f"reprogram_ext benchmarks: {len(cases)} case(s) on {machine['device_name']} ({device}), "
        f"{machine['torch_threads']} threads, torch {machine['torch']}, {args.dtype}, "
        f"CPU output block cache {cache_mb} MiB")
    records = [run_case(case, device, dtype, budget, impl_filter, log=log) for case in cases]
    targets = check_targets(records)
    table = format_table(records) + "\n\n" + format_targets(targets)
    duration = time.perf_counter() - begin
    payload = {
        "machine": machine,
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"sizes": args.sizes, "quick": args.quick, "all": args.all, "dtype": args.dtype, "device": str(device),
                     "backend_filter": sorted(impl_filter) if impl_filter else None, "reps": budget.reps,
                     "min_reps": budget.min_reps, "seconds_per_measurement": budget.seconds,
                     "warmup": budget.warmup, "memory_repeats": budget.memory_repeats,
                     "memory_cross_check": budget.memory_cross_check},
        "cases": records,
        "targets": targets,
        "duration_s": duration,
    }
    paths = write_all(args.out, payload, table)
    log("\n" + table)
    log(f"\nTotal time {duration:.0f} s. Wrote " + ", ".join(paths.values()))
    return payload


if __name__ == "__main__":
    main()
