"""The project's performance targets, checked against a run's records and printed as PASS/MISS.

These are checks the benchmark reports, not tests: a MISS is a finding to explain, and "N/A" means
the run did not measure what the target needs (case filtered out, op or backend unavailable).

Targets (from the project issues), per fused backend that ran:
  1. ILM-VP headline (B=64, 3x128x128 -> 224x224) fwd+bwd >= 6x the eager reference;
  2. ... and >= 3x torch.compile(reference) (issue 11; every other masked_perturb case >= 1.5x, below);
  3. ... fused forward time <= 1.5x the clone() of its output;
  4. mapped_cross_entropy(pre="softmax") fwd+bwd >= 3x eager at (256, 1000, 10, 10) and at
     (2048, 32000, 100, 8);
  5. ... its peak extra memory (fwd+bwd) <= 0.5x eager's at the large size;
  6. end-to-end ResNet-18 reprogramming step (single process, and under DDP on 2 gloo ranks): fused
     layers faster and lighter than reference layers.
     The layers are about 1% of a step dominated by the frozen model, below the step-to-step noise
     of a CPU (a few %), so "faster" is checked where the difference arises: the layers' time
     clocked inside the steps (``in_step``), fused / reference. The whole step's time is checked
     for the other direction: the fused step must not be shown slower, i.e. the 95% confidence
     interval of the median of per-round paired ratios must reach down to 1 or below (its median
     and interval are printed with it).
  7. AutoVP trainable-scale input transform (B=64, 32x32 -> 224x224, learned scale) fwd+bwd >= 3x the
     eager reference (pad + affine_grid + grid_sample + prompt + normalise).
  8. vocab_map (Neekhara 2019 rewriter, B·L = 2048, w = 5, V_t = 64; V_s = 2048, D = 256 by default,
     V_s = 32000, D = 768 with --all): peak extra memory <= 0.1x eager's, fwd+bwd not slower than
     eager, and the fraction of the measured GEMM rate its 4·N·V_s·D FLOPs reach (reported, >= 0.5).
  9. prompt bank (masked_perturb bank=True; V=8 ILM-VP programs, B=64, 224x224) fwd+bwd >= 2x a loop of
     V masked_perturb calls (the ``loop`` implementation) and >= 1.5x torch.compile of the broadcasting
     reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

HEADLINE_PERTURB = "ilmvp_128_b64"
BANK_PERTURB = "bank_ilmvp_128_v8_b64"
MAPPED_CE_SMALL = "mapped_ce_softmax_in1k_to10"
MAPPED_CE_LARGE = "mapped_ce_softmax_vocab32k"
E2E_STEP = "e2e_resnet18_ilmvp"
E2E_DDP_STEP = "e2e_resnet18_ilmvp_ddp2"
AUTOVP_TRAINABLE = "autovp_trainable_scale_b64"


@dataclass
class Target:
    """``value(fused, eager, compiled) <comparison> threshold``, comparison one of ">=", "<=", "<"."""

    case: str
    description: str
    value: Callable[[dict, dict, dict], Optional[float]]
    comparison: str
    threshold: float
    detail: Optional[Callable[[dict, dict, dict], Optional[str]]] = None  # printed after the value
    baseline: Optional[str] = None  # the implementation passed as ``eager`` (default: the eager reference)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _median(impl: dict, phase: str) -> Optional[float]:
    return impl[phase]["median_ms"] if impl and impl.get("available") else None


def _peak(impl: dict) -> Optional[float]:
    return impl.get("peak_fwdbwd_bytes") if impl and impl.get("available") else None


def _paired(impl: dict, phase: str) -> Optional[dict]:
    """Per-round paired ratios eager / impl (median, quartiles, 95% CI of the median)."""
    paired = impl.get(phase, {}).get("paired_speedup_vs_eager") if impl and impl.get("available") else None
    return paired if paired and paired["median"] else None


def _paired_time_ratio_low(impl: dict, phase: str) -> Optional[float]:
    """Low end of the 95% CI of the median over rounds of impl's time / eager's time."""
    paired = _paired(impl, phase)
    return 1.0 / paired["ci95_high"] if paired else None


def _paired_time_detail(impl: dict, phase: str) -> Optional[str]:
    paired = _paired(impl, phase)
    if not paired:
        return None
    return (f"median {1.0 / paired['median']:.3f}, 95% CI {1.0 / paired['ci95_high']:.3f}-"
            f"{1.0 / paired['ci95_low']:.3f}, {paired['rounds']} rounds")


def _in_step(impl: dict, key: str) -> Optional[float]:
    return impl.get("in_step", {}).get(key) if impl and impl.get("available") else None


def _in_step_detail(fused: dict, eager: dict) -> Optional[str]:
    f, e = _in_step(fused, "layers_ms"), _in_step(eager, "layers_ms")
    if f is None or e is None:
        return None
    rest = _ratio(_in_step(fused, "rest_ms"), _in_step(eager, "rest_ms"))
    opt = _ratio(_in_step(fused, "optimizer_ms"), _in_step(eager, "optimizer_ms"))
    if not rest or not opt:
        return None
    return f"{f:.2f} vs {e:.2f} ms per step; the optimizer update {opt:.2f}x, the model and loss {rest:.3f}x"


def _e2e_targets(case: str, title: str) -> list:
    """Target 6 for one end-to-end step case: layers' in-step time, whole step not slower, peak memory."""
    return [
        Target(case, f"{title}: time in the trained layers inside the step, fused / reference",
               lambda f, e, c: _ratio(_in_step(f, "layers_ms"), _in_step(e, "layers_ms")), "<", 1.0,
               lambda f, e, c: _in_step_detail(f, e)),
        Target(case, f"{title} whole step time, fused / reference: low end of the 95% CI (not slower)",
               lambda f, e, c: _paired_time_ratio_low(f, "fwdbwd"), "<=", 1.0,
               lambda f, e, c: _paired_time_detail(f, "fwdbwd")),
        Target(case, f"{title} peak memory, fused layers / reference layers",
               lambda f, e, c: _ratio(_peak(f), _peak(e)), "<", 1.0),
    ]


TARGETS = [
    Target(HEADLINE_PERTURB, "ILM-VP headline fwd+bwd speedup vs eager reference",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 6.0),
    Target(HEADLINE_PERTURB, "ILM-VP headline fwd+bwd speedup vs torch.compile(reference)",
           lambda f, e, c: _ratio(_median(c, "fwdbwd"), _median(f, "fwdbwd")), ">=", 3.0),
    Target(HEADLINE_PERTURB, "ILM-VP headline forward time / clone() of its output",
           lambda f, e, c: f.get("fwd_over_clone") if f.get("available") else None, "<=", 1.5),
    Target(BANK_PERTURB, "prompt bank (V=8, B=64, 224^2) fwd+bwd speedup vs a loop of V masked_perturb calls",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 2.0, baseline="loop"),
    Target(BANK_PERTURB, "prompt bank (V=8, B=64, 224^2) fwd+bwd speedup vs torch.compile(broadcast reference)",
           lambda f, e, c: _ratio(_median(c, "fwdbwd"), _median(f, "fwdbwd")), ">=", 1.5),
    Target(MAPPED_CE_SMALL, "mapped_cross_entropy(softmax) fwd+bwd speedup vs eager, B=256 S=1000 T=10 K=10",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 3.0),
    Target(MAPPED_CE_LARGE, "mapped_cross_entropy(softmax) fwd+bwd speedup vs eager, B=2048 S=32000 T=100 K=8",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 3.0),
    Target(MAPPED_CE_LARGE, "mapped_cross_entropy(softmax) peak extra memory / eager's, large size",
           lambda f, e, c: _ratio(_peak(f), _peak(e)), "<=", 0.5),
    *_e2e_targets(E2E_STEP, "e2e ResNet-18 step"),
    *_e2e_targets(E2E_DDP_STEP, "e2e ResNet-18 DDP step (2 gloo ranks, rank 0)"),
    Target(AUTOVP_TRAINABLE, "AutoVP trainable-scale input transform fwd+bwd speedup vs eager (pad + grid_sample)",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 3.0),
]


# Black-box (zeroth-order) step, BAR's setting (bench/cases_blackbox.py): bank + estimate + update,
# the model's time excluded, >= 3x an eager PyTorch BAR step that materialises directions and programs.
BLACKBOX_Q5, BLACKBOX_Q20 = "bar_zo_q5_b32", "bar_zo_q20_b32"
TARGETS += [
    Target(case, f"BAR ZO step (bank + estimate + update) speedup vs eager BAR step, {case}",
           lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 3.0)
    for case in (BLACKBOX_Q5, BLACKBOX_Q20)
]

# tokens_to_canvas (bench/cases_tokens.py): fwd+bwd >= 5x eager and >= 1.5x torch.compile(eager), V = 4 and 30k.
TOKENS_CASES = ("tokens_v4_b64", "tokens_v30k_b64")
TARGETS += [Target(case, f"tokens_to_canvas fwd+bwd speedup vs {name}, B=64, 24x24 cells of 16x16, {case[7:-4]}",
                   (lambda f, e, c, use_c=use_c: _ratio(_median(c if use_c else e, "fwdbwd"), _median(f, "fwdbwd"))),
                   ">=", threshold)
            for case in TOKENS_CASES
            for name, use_c, threshold in (("eager reference", False, 5.0), ("torch.compile(reference)", True, 1.5))]

# vocab_map (bench/cases_vocab_map.py): the default size and, with --all, the size.
def _gemm_fraction(case: str, fused: dict) -> Optional[float]:
    """The fraction of the measured GEMM rate the fused fwd+bwd reaches (its 4·N·V_s·D FLOPs / time)."""
    from . import cases_vocab_map

    median, rate = _median(fused, "fwdbwd"), cases_vocab_map.GEMM_GFLOPS.get(case)
    flops = cases_vocab_map.FLOPS.get(case)
    return flops / (median * 1e-3) / 1e9 / rate if median and rate and flops else None


for _case in ("vocab_map_neekhara_2k", "vocab_map_neekhara_32k"):
    TARGETS += [
        Target(_case, "vocab_map peak extra memory (fwd+bwd) / eager's",
               lambda f, e, c: _ratio(_peak(f), _peak(e)), "<=", 0.1),
        Target(_case, "vocab_map fwd+bwd speedup vs eager (not slower)",
               lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 1.0),
        Target(_case, "vocab_map fwd+bwd fraction of the measured GEMM rate",
               lambda f, e, c, _case=_case: _gemm_fraction(_case, f), ">=", 0.5),
    ]

# label_map / mapped_cross_entropy (bench/cases_label_map.py, issue 11): every case >= 1.5x eager
# (the two headline mapped CE cases keep their 3x target above).
LABEL_MAP_CASES = ("label_map_softmax_in1k_to10", "label_map_softmax_in1k_to100", "label_map_softmax_vocab32k",
                   "label_map_logits_in1k_to10", "mapped_ce_softmax_in1k_to10", "mapped_ce_softmax_in1k_to100",
                   "mapped_ce_softmax_vocab32k")
TARGETS += [Target(case, f"{case} fwd+bwd speedup vs eager",
                   lambda f, e, c: _ratio(_median(e, "fwdbwd"), _median(f, "fwdbwd")), ">=", 1.5)
            for case in LABEL_MAP_CASES]


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
        eager = impls.get(target.baseline or "reference", {})
        compiled = impls.get("compile", {})
        fused = [i for i in impls.values() if i["kind"] == "fused"]
        if not fused:
            reason = "case not run" if record is None else (record.get("error") or "no fused backend ran")
            rows.append(dict(target=target.description, case=target.case, backend=None, value=None,
                             threshold=target.threshold, comparison=target.comparison, status="N/A", detail=None,
                             reason=reason))
            continue
        for impl in fused:
            value = target.value(impl, eager, compiled) if impl.get("available") else None
            detail = target.detail(impl, eager, compiled) if target.detail and value is not None else None
            rows.append(dict(target=target.description, case=target.case, backend=impl["name"], value=value,
                             threshold=target.threshold, comparison=target.comparison, status=_verdict(value, target),
                             detail=detail, reason=None if impl.get("available") else impl.get("error")))
    return rows


def format_targets(rows: list) -> str:
    lines = ["Performance targets (checks, not tests):"]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        backend = f"[{row['backend']}] " if row["backend"] else ""
        why = f"  ({row['reason']})" if row["reason"] else ""
        detail = f" [{row['detail']}]" if row.get("detail") else ""
        lines.append(f"  {row['status']:<4} {backend}{row['target']}: {value}{detail} "
                     f"(target {row['comparison']} {row['threshold']:g}){why}")
    return "\n".join(lines)

# Every masked_perturb case (bench/cases_masked_perturb.py; issue 11): fwd+bwd >= 1.5x torch.compile(reference)
# (the headline's own, stricter target is above; SMM's per-sample mask gradient is reduced at mask resolution:
# bench/notes/cpu_masked_perturb.md).
PERTURB_CASES = ("ilmvp_cifar32_b64", "ilmvp_cifar32_b256", "ilmvp_128_b256", "autovp_resize192_b64", "smm_b64",
                 "v2s_b32", "elsayed_odd_b17")
TARGETS += [Target(case, f"masked_perturb {case} fwd+bwd speedup vs torch.compile(reference)",
                   lambda f, e, c: _ratio(_median(c, "fwdbwd"), _median(f, "fwdbwd")), ">=", 1.5)
            for case in PERTURB_CASES]
