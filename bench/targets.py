"""The project's performance targets, checked against a run's records and printed as PASS/MISS.

These are checks the benchmark reports, not tests: a MISS is a finding to explain, and "N/A" means
the run did not measure what the target needs (case filtered out, op or backend unavailable).

Targets (from the project issues), per fused backend that ran:
  1. ILM-VP headline (B=64, 3x128x128 -> 224x224) fwd+bwd >= 6x the eager reference;
  2. ... and >= 2x torch.compile(reference);
  3. ... fused forward time <= 1.5x the clone() of its output;
  4. mapped_cross_entropy(pre="softmax") fwd+bwd >= 3x eager at (256, 1000, 10, 10) and at
     (2048, 32000, 100, 8);
  5. ... its peak extra memory (fwd+bwd) <= 0.5x eager's at the large size;
  6. end-to-end ResNet-18 reprogramming step: fused layers faster and lighter than reference layers
     (time: the median of per-round paired ratios, since the difference is a few percent of a step
     dominated by the frozen model, and the machine's load drifts between rounds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

HEADLINE_PERTURB = "ilmvp_128_b64"
MAPPED_CE_SMALL = "mapped_ce_softmax_in1k_to10"
MAPPED_CE_LARGE = "mapped_ce_softmax_vocab32k"
E2E_STEP = "e2e_resnet18_ilmvp"


@dataclass
class Target:
    """``value(fused, eager, compiled) <comparison> threshold``, comparison one of ">=", "<=", "<"."""

    case: str
    description: str
    value: Callable[[dict, dict, dict], Optional[float]]
    comparison: str
    threshold: float


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _median(impl: dict, phase: str) -> Optional[float]:
    return impl[phase]["median_ms"] if impl and impl.get("available") else None


def _peak(impl: dict) -> Optional[float]:
    return impl.get("peak_fwdbwd_bytes") if impl and impl.get("available") else None


def _paired_time_ratio(impl: dict, phase: str) -> Optional[float]:
    """impl's time / eager's time, as the median over interleaved rounds (the step differs by ~1%)."""
    paired = impl.get(phase, {}).get("paired_speedup_vs_eager") if impl and impl.get("available") else None
    return 1.0 / paired["median"] if paired and paired["median"] else None


TARGETS = [
    Target(HEADLINE_PERTURB, "ILM-VP headline fwd+bwd speedup vs eager reference",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 6.0),
    Target(HEADLINE_PERTURB, "ILM-VP headline fwd+bwd speedup vs torch.compile(reference)",
           lambda f, e, c: _ratio(_median(c, "fwdbwd"), _median(f, "fwdbwd")), ">=", 2.0),
    Target(HEADLINE_PERTURB, "ILM-VP headline forward time / clone() of its output",
           lambda f, e, c: f.get("fwd_over_clone") if f.get("available") else None, "<=", 1.5),
    Target(MAPPED_CE_SMALL, "mapped_cross_entropy(softmax) fwd+bwd speedup vs eager, B=256 S=1000 T=10 K=10",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 3.0),
    Target(MAPPED_CE_LARGE, "mapped_cross_entropy(softmax) fwd+bwd speedup vs eager, B=2048 S=32000 T=100 K=8",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 3.0),
    Target(MAPPED_CE_LARGE, "mapped_cross_entropy(softmax) peak extra memory / eager's, large size",
           lambda f, e, c: _ratio(_peak(f), _peak(e)), "<=", 0.5),
    Target(E2E_STEP, "e2e ResNet-18 step time, fused layers / reference layers (median of paired rounds)",
           lambda f, e, c: _paired_time_ratio(f, "fwdbwd"), "<", 1.0),
    Target(E2E_STEP, "e2e ResNet-18 step peak memory, fused layers / reference layers",
           lambda f, e, c: _ratio(_peak(f), _peak(e)), "<", 1.0),
]


COMPARE = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


def _verdict(value: Optional[float], target: Target) -> str:
    if value is None:
        return "N/A"
    return "PASS" if COMPARE[target.comparison](value, target.threshold) else "MISS"


def check_targets(records: list) -> list:
    """One row per (target, fused backend): value, threshold and PASS / MISS / N/A."""
    by_case = {r["case"]: r for r in records}
    rows = []
    for target in TARGETS:
        record = by_case.get(target.case)
        impls = {i["name"]: i for i in record["impls"]} if record and record.get("available") else {}
        eager = impls.get("reference", {})
        compiled = impls.get("compile", {})
        fused = [i for i in impls.values() if i["kind"] == "fused"]
        if not fused:
            reason = "case not run" if record is None else (record.get("error") or "no fused backend ran")
            rows.append(dict(target=target.description, case=target.case, backend=None, value=None,
                             threshold=target.threshold, comparison=target.comparison, status="N/A", reason=reason))
            continue
        for impl in fused:
            value = target.value(impl, eager, compiled) if impl.get("available") else None
            rows.append(dict(target=target.description, case=target.case, backend=impl["name"], value=value,
                             threshold=target.threshold, comparison=target.comparison, status=_verdict(value, target),
                             reason=None if impl.get("available") else impl.get("error")))
    return rows


def format_targets(rows: list) -> str:
    lines = ["Performance targets (checks, not tests):"]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        backend = f"[{row['backend']}] " if row["backend"] else ""
        why = f"  ({row['reason']})" if row["reason"] else ""
        lines.append(f"  {row['status']:<4} {backend}{row['target']}: {value} (target {row['comparison']} {row['threshold']:g}){why}")
    return "\n".join(lines)
