"""Smoke test of the vocab_map benchmark case (bench/cases_vocab_map.py) at its tiny size: every
implementation asked for runs and agrees with the eager reference, and the vocab_map targets are reported."""
from __future__ import annotations

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `bench` is a top-level folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

from bench.__main__ import main  # noqa: E402


def test_vocab_map_case_runs(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        payload = main(["--sizes", "tiny", "--cases", "vocab_map_neekhara_2k", "--backend", "cpu,reference", "--reps",
                        "2", "--seconds", "0", "--out", str(tmp_path)], log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    (record,) = payload["cases"]
    assert record["available"], record["error"]
    impls = {i["name"]: i for i in record["impls"]}
    assert {"cpu", "reference"} <= set(impls)  # (torch.compile of the reference: left out, it compiles for minutes)
    for name, impl in impls.items():
        assert impl["available"], (name, impl["error"])
        assert impl["max_abs_diff_vs_eager"] < 1e-4, name
    assert any("GFLOP per fwd+bwd" in note for note in record["notes"])
    rows = [t for t in payload["targets"] if t["case"] == "vocab_map_neekhara_2k" and t["backend"] == "cpu"]
    assert len(rows) == 3 and all(r["value"] is not None for r in rows)
