"""Runs one case: every implementation in one process, its timings, peak memory and derived figures.

For each implementation (fused backends, eager reference, torch.compile(reference)):
  - a first forward+backward call (compiles the torch.compile variant; its duration is kept as
    ``first_call_s``); an implementation that raises here is reported "not available" with the error;
  - ``fwd``: forward alone (autograd recording on, as in training);
  - ``bwd``: backward alone, each timed call after an untimed forward that builds a fresh graph;
  - ``fwdbwd``: forward then backward;
  - peak extra memory of one forward and of one forward+backward (``utils.peak_extra_bytes``, the
    allocators' figure; on CPU also the resident-memory figure ``utils.peak_resident_bytes`` as a
    cross-check).
An implementation that clocks its own parts (the end-to-end step's layers, ``Impl.in_step``) has
those figures, from the timed rounds and the calls before them, stored as ``in_step``.
Every (implementation, phase) pair and ``clone()`` of a tensor the size of the op's output (the copy
baseline) are timed in alternation (``utils.time_interleaved``): each round times each of them once,
so a change in the machine's load affects all the figures of a case alike. On the CPU a clone allocates fresh memory each call, so first-touch page faults are part
of the baseline as they are part of the op.

Derived, per implementation and phase: GB/s = bytes the op must move / median time; % of the copy
bandwidth (the clone moves its bytes twice, read + write); speedups = other implementation's median
time / this one's (ratio of medians), and the paired speedup vs eager: the median over rounds of the
ratio of the two calls made back to back in that round (robust to load drifting between rounds);
for the forward also its time as a multiple of the clone's.
"""
from __future__ import annotations

import gc
import os
import time
import traceback
from dataclasses import replace
from typing import Optional

import torch

from .case_types import COMPILED, EAGER, Case, CaseInstance, CaseUnavailable
from .utils import (TimingBudget, gbps, paired_ratio, peak_extra_bytes, peak_resident_bytes, summarize,
                    tensor_bytes, time_interleaved)

PHASES = ("fwd", "bwd", "fwdbwd")
CLONE = "clone()"


def _error_text(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _max_abs_diff(a, b) -> Optional[float]:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return None
    if a.numel() == 0:
        return 0.0
    return float((a.detach().float() - b.detach().float()).abs().max())


def _first_call(impl) -> dict:
    """Availability (the first forward+backward, which also compiles) and its duration."""
    record = {"name": impl.name, "kind": impl.kind, "available": True, "error": None}
    begin = time.perf_counter()
    try:
        impl.backward(impl.forward())
    except Exception as exc:  # a backend that cannot run this case here: reported, not fatal
        record.update(available=False, error=_error_text(exc))
        return record
    record["first_call_s"] = time.perf_counter() - begin
    return record


def _phase_calls(impl, phase: str) -> tuple:
    """(run, setup) of ``impl`` for one phase, as ``time_interleaved`` takes them."""
    if phase == "fwd":
        return (lambda _: impl.forward(), None)
    if phase == "bwd":
        return (impl.backward, impl.forward)
    return (lambda _: impl.backward(impl.forward()), None)


def _case_budget(case: Case, budget: TimingBudget) -> TimingBudget:
    """More rounds for a case that asks for them (not when the run allows fewer, as --quick does)."""
    if case.min_reps and budget.reps >= case.min_reps:
        return replace(budget, min_reps=case.min_reps, floor_reps=case.min_reps)
    return budget


def _clone_call(instance: CaseInstance, device) -> Optional[tuple]:
    if instance.out_shape is None:
        return None
    source = torch.randn(instance.out_shape, device=device).to(instance.out_dtype)
    return (lambda _: source.clone(), None)


def _derive(record: dict, impls: list, instance: CaseInstance, clone: Optional[dict]) -> None:
    """Add GB/s, % of copy bandwidth, speedups and forward/clone ratio to ``record``."""
    by_name = {i["name"]: i for i in impls if i["available"]}
    phase_bytes = {"fwd": instance.bytes_fwd, "bwd": instance.bytes_bwd, "fwdbwd": instance.bytes_fwdbwd}
    for phase in PHASES:
        median = record[phase]["median_ms"]
        rate = gbps(phase_bytes[phase], median)
        record[phase]["gbps"] = rate
        record[phase]["pct_of_copy"] = 100.0 * rate / clone["gbps"] if rate and clone and clone["gbps"] else None
        for other, key in ((EAGER, "speedup_vs_eager"), (COMPILED, "speedup_vs_compile")):
            ref = by_name.get(other)
            record[phase][key] = ref[phase]["median_ms"] / median if ref and median > 0 else None
    record["fwd_over_clone"] = record["fwd"]["median_ms"] / clone["median_ms"] if clone else None


def run_case(case: Case, device: torch.device, dtype: torch.dtype, budget: TimingBudget,
             impl_filter: Optional[set] = None, log=print) -> dict:
    """Measure every implementation of ``case``; returns its JSON-ready record."""
    torch._dynamo.reset()  # each case compiles afresh; keeps dynamo's recompile limit out of the way
    result = {"op": case.op, "case": case.name, "models": case.models, "params": case.params,
              "headline": case.headline, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
              "available": True, "error": None, "notes": [], "impls": []}
    begin = time.perf_counter()
    try:
        instance = case.build(device, dtype)
    except CaseUnavailable as exc:
        result.update(available=False, error=str(exc))
        log(f"  {case.name}: not available ({exc})")
        return result
    except Exception as exc:  # a broken case must not stop the suite
        result.update(available=False, error=_error_text(exc), traceback=traceback.format_exc())
        log(f"  {case.name}: failed to build ({result['error']})")
        return result
    try:
        _measure(case, instance, device, budget, impl_filter, result, log)
    finally:
        if instance.close is not None:
            instance.close()
    result["wall_s"] = time.perf_counter() - begin
    result["load_average_1min"] = os.getloadavg()[0]
    log(f"  {case.name}: done in {result['wall_s']:.1f} s")
    return result


def _measure(case: Case, instance: CaseInstance, device: torch.device, budget: TimingBudget,
             impl_filter: Optional[set], result: dict, log) -> None:
    """Time, probe and compare the implementations of a built case; fills ``result``."""
    result["notes"] = list(instance.notes)
    result["bytes"] = {"fwd": instance.bytes_fwd, "bwd": instance.bytes_bwd, "fwdbwd": instance.bytes_fwdbwd}
    impls = [impl for impl in instance.impls if not impl_filter or impl.name in impl_filter]
    records = {}
    for impl in impls:
        log(f"  {case.name}: first call of {impl.name} ...")
        records[impl.name] = _first_call(impl)
    running = [impl for impl in impls if records[impl.name]["available"]]
    clone = _clone_call(instance, device)
    calls = {(impl.name, phase): _phase_calls(impl, phase) for impl in running for phase in PHASES}
    if clone is not None:
        calls[(CLONE, "fwd")] = clone
    times = time_interleaved(calls, device, _case_budget(case, budget))
    for impl in running:
        if impl.in_step is not None:
            records[impl.name]["in_step"] = impl.in_step()
    for (name, phase), values in times.items():
        stats = summarize(values)
        if name == CLONE:
            copied = 2 * tensor_bytes(instance.out_shape, instance.out_dtype)
            result["clone"] = {**stats.as_dict(), "bytes": copied, "gbps": gbps(copied, stats.median_ms)}
            continue
        records[name][phase] = stats.as_dict()
        if (EAGER, phase) in times and name != EAGER:
            records[name][phase]["paired_speedup_vs_eager"] = paired_ratio(times[(EAGER, phase)], values)
    outputs = {}
    for impl in running:
        record = records[impl.name]
        record["peak_fwd_bytes"] = peak_extra_bytes(impl.forward, device)
        record["peak_fwdbwd_bytes"] = peak_extra_bytes(lambda: impl.backward(impl.forward()), device)
        if device.type == "cpu" and budget.memory_cross_check:
            record["peak_fwd_rss_bytes"] = peak_resident_bytes(impl.forward, budget.memory_repeats)
            record["peak_fwdbwd_rss_bytes"] = peak_resident_bytes(lambda: impl.backward(impl.forward()),
                                                                  budget.memory_repeats)
        with torch.no_grad():
            outputs[impl.name] = impl.forward()
        gc.collect()
    result["impls"] = [records[impl.name] for impl in impls]
    for record in result["impls"]:
        if record["available"]:
            record["max_abs_diff_vs_eager"] = _max_abs_diff(outputs[record["name"]], outputs.get(EAGER))
            _derive(record, result["impls"], instance, result.get("clone"))
    if not running:
        result.update(available=False, error="no implementation could run: " +
                      "; ".join(f"{r['name']}: {r['error']}" for r in result["impls"]))
