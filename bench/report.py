"""Writers of a benchmark run: the printed table, JSON, CSV and a PNG chart.

JSON holds everything (machine details, settings, every case with all statistics, the target
checks). CSV has one row per (case, implementation), each row carrying the machine columns so a
file read on its own still says where it was measured. The chart shows, per case, each
implementation's forward+backward time and peak extra memory relative to the eager reference.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Optional

from .utils import MB


def _fmt(value: Optional[float], spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _timing(stats: Optional[dict]) -> str:
    if not stats:
        return "-"
    return f"{stats['median_ms']:.2f} ±{stats['iqr_ms']:.2f}"


def _megabytes(value: Optional[int]) -> Optional[float]:
    return None if value is None else value / MB


TABLE_COLUMNS = ("impl", "fwd ms ±IQR", "bwd ms ±IQR", "fwd+bwd ms ±IQR", "f+b GB/s", "f+b %copy",
                 "fwd/clone", "peak f+b MB", "x eager", "paired", "x compile")
WIDTHS = (10, 15, 15, 17, 9, 10, 10, 12, 8, 7, 10)


def _impl_row(impl: dict) -> str:
    if not impl["available"]:
        return f"{impl['name']:<10} not available: {impl['error']}"
    fb = impl["fwdbwd"]
    cells = (impl["name"], _timing(impl["fwd"]), _timing(impl["bwd"]), _timing(fb), _fmt(fb["gbps"]),
             _fmt(fb["pct_of_copy"], ".0f", "%"), _fmt(impl.get("fwd_over_clone")),
             _fmt(_megabytes(impl["peak_fwdbwd_bytes"]), ".1f"), _fmt(fb["speedup_vs_eager"], ".2f", "x"),
             _fmt((fb.get("paired_speedup_vs_eager") or {}).get("median"), ".2f", "x"),
             _fmt(fb["speedup_vs_compile"], ".2f", "x"))
    return " ".join(f"{c:<{w}}" for c, w in zip(cells, WIDTHS))


def format_case(record: dict) -> str:
    params = " ".join(f"{k}={v}" for k, v in record["params"].items())
    lines = [f"== {record['op']} / {record['case']}  [{params}]  {record['dtype']} on {record['device']}",
             f"   {record['models']}"]
    if not record["available"]:
        lines.append(f"   not available: {record['error']}")
        return "\n".join(lines)
    size = record.get("bytes") or {}
    clone = record.get("clone")
    if size.get("fwd"):
        lines.append(f"   bytes the op must move: fwd {size['fwd'] / MB:.1f} MB, bwd {size['bwd'] / MB:.1f} MB")
    if clone:
        lines.append(f"   copy baseline: clone() of the output {clone['bytes'] / 2 / MB:.1f} MB: "
                     f"{clone['median_ms']:.2f} ±{clone['iqr_ms']:.2f} ms = {clone['gbps']:.2f} GB/s (read+write)")
    for note in record.get("notes", []):
        lines.append(f"   note: {note}")
    lines.append("   " + " ".join(f"{c:<{w}}" for c, w in zip(TABLE_COLUMNS, WIDTHS)))
    lines.extend("   " + _impl_row(impl) for impl in record["impls"])
    lines.extend(_in_step_line(impl) for impl in record["impls"]
                 if impl.get("in_step", {}).get("steps") or impl.get("in_step", {}).get("zo_steps"))
    return "\n".join(lines)


def _in_step_line(impl: dict) -> str:
    """The layers' share of a step, clocked inside the steps (medians in ms)."""
    s = impl["in_step"]
    if "queries_per_s" in s:  # a black-box step (bench/cases_blackbox_e2e.py)
        return (f"   in the step, {impl['name']}: {s['queries_per_step']} queries, model {s['model_ms']:.1f} ms, "
                f"framework {s['framework_ms']:.1f} ms, step {s['step_ms']:.1f} ms = {s['queries_per_s']:.1f} "
                f"queries/s; medians of {s['zo_steps']} steps")
    return (f"   in the step, {impl['name']}: layers {s['layers_ms']:.3f} ms (prompt fwd {s['prompt_fwd_ms']:.3f} + "
            f"bwd {s['prompt_bwd_ms']:.3f}, mapping fwd {s['mapping_fwd_ms']:.3f} + bwd {s['mapping_bwd_ms']:.3f}), "
            f"optimizer {s['optimizer_ms']:.3f} ms, rest {s['rest_ms']:.1f} ms, step {s['step_ms']:.1f} ms; "
            f"medians of {s['steps']} steps")


def format_table(records: list) -> str:
    return "\n\n".join(format_case(r) for r in records)


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)


CSV_MACHINE = ("date", "cpu_model", "cpu_cores", "torch_threads", "torch", "triton", "device_name")


def csv_rows(records: list, machine: dict) -> list:
    rows = []
    for record in records:
        base = {"op": record["op"], "case": record["case"], "params": json.dumps(record["params"]),
                "dtype": record["dtype"], "device": record["device"]}
        base.update({k: machine.get(k) for k in CSV_MACHINE})
        size = record.get("bytes") or {}
        clone = record.get("clone") or {}
        base.update(bytes_fwd=size.get("fwd"), bytes_bwd=size.get("bwd"), clone_ms=clone.get("median_ms"),
                    clone_gbps=clone.get("gbps"))
        impls = record["impls"] if record["available"] else [{"name": None, "kind": None, "available": False,
                                                              "error": record["error"]}]
        for impl in impls:
            row = dict(base, impl=impl["name"], kind=impl["kind"], available=impl["available"], error=impl["error"])
            if impl["available"]:
                for phase in ("fwd", "bwd", "fwdbwd"):
                    stats = impl[phase]
                    row.update({f"{phase}_ms": stats["median_ms"], f"{phase}_iqr_ms": stats["iqr_ms"],
                                f"{phase}_min_ms": stats["min_ms"],
                                f"{phase}_reps": stats["reps"], f"{phase}_gbps": stats["gbps"],
                                f"{phase}_pct_of_copy": stats["pct_of_copy"],
                                f"{phase}_speedup_vs_eager": stats["speedup_vs_eager"],
                                f"{phase}_paired_speedup_vs_eager": (stats.get("paired_speedup_vs_eager") or {}).get("median"),
                                f"{phase}_speedup_vs_compile": stats["speedup_vs_compile"]})
                row.update(fwd_over_clone=impl.get("fwd_over_clone"),
                           peak_fwd_mb=_megabytes(impl["peak_fwd_bytes"]),
                           peak_fwdbwd_mb=_megabytes(impl["peak_fwdbwd_bytes"]),
                           peak_fwd_rss_mb=_megabytes(impl.get("peak_fwd_rss_bytes")),
                           peak_fwdbwd_rss_mb=_megabytes(impl.get("peak_fwdbwd_rss_bytes")),
                           first_call_s=impl["first_call_s"], max_abs_diff_vs_eager=impl.get("max_abs_diff_vs_eager"))
                row.update({f"in_step_{key}": value for key, value in impl.get("in_step", {}).items()})
            rows.append(row)
    return rows


def write_csv(path: str, records: list, machine: dict) -> None:
    rows = csv_rows(records, machine)
    fields = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _relative_to_eager(record: dict, key) -> dict:
    impls = {i["name"]: i for i in record["impls"] if i["available"]}
    eager = impls.get("reference")
    if eager is None or not key(eager):
        return {}
    return {name: key(impl) / key(eager) for name, impl in impls.items() if key(impl) is not None}


def write_png(path: str, records: list, title: str) -> None:
    """Two panels: fwd+bwd time and peak extra memory of each implementation / the eager reference's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in records if r["available"]]
    impl_names = []
    for record in shown:
        impl_names.extend(i["name"] for i in record["impls"] if i["available"] and i["name"] not in impl_names)
    panels = (("fwd+bwd time / eager reference\n(lower is faster, log scale)", lambda i: i["fwdbwd"]["median_ms"], "log"),
              ("peak extra memory fwd+bwd / eager reference\n(lower is lighter)", lambda i: i["peak_fwdbwd_bytes"],
               "linear"))
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 1.1 * len(shown) + 3), 9), constrained_layout=True)
    width = 0.8 / max(1, len(impl_names))
    for ax, (label, key, scale) in zip(axes, panels):
        for k, name in enumerate(impl_names):
            values = [_relative_to_eager(r, key).get(name, float("nan")) for r in shown]
            positions = [c + (k - (len(impl_names) - 1) / 2) * width for c in range(len(shown))]
            bars = ax.bar(positions, values, width, label=name)
            ax.bar_label(bars, labels=[f"{v:.2f}" if v == v else "" for v in values], fontsize=6, rotation=90,
                         padding=2)
        ax.set_yscale(scale)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylabel(label, fontsize=8)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([r["case"] for r in shown], rotation=35, ha="right", fontsize=7)
        ax.margins(y=0.2)
        ax.legend(fontsize=7)
    axes[0].set_title(title, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(out_dir: str, payload: dict, table: str) -> dict:
    """Write results.{txt,json,csv,png} into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"results.{ext}") for ext in ("txt", "json", "csv", "png")}
    with open(paths["txt"], "w") as f:
        f.write(table + "\n")
    write_json(paths["json"], payload)
    write_csv(paths["csv"], payload["cases"], payload["machine"])
    machine = payload["machine"]
    write_png(paths["png"], payload["cases"],
              f"reprogram_ext benchmarks - {machine['device_name']}, {machine['torch_threads']} threads, "
              f"torch {machine['torch']}, {machine['date'][:10]}")
    return paths
