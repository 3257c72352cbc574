"""Smoke test of the benchmark harness (``python -m bench``) at tiny sizes, in-process.

It checks that the run produces the table, JSON, CSV and PNG with sane fields, that the compared
implementations agree, and that the measuring utilities measure what they claim. It never asserts
on speed.
"""
from __future__ import annotations

import csv
import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `bench` is a top-level folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

from bench import utils  # noqa: E402
from bench.__main__ import main  # noqa: E402
from bench.cases_masked_perturb import PerturbSetting, perturb_bytes  # noqa: E402
from bench.targets import TARGETS  # noqa: E402

import reprogram_ext  # noqa: E402

E2E_CASES = ("e2e_resnet18_ilmvp", "e2e_resnet18_ilmvp_ddp2")
SMOKE_CASES = ("ilmvp_128_b64", "mapped_ce_softmax_vocab32k", *E2E_CASES)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a busy CI machine: spare them OpenMP barrier waits
    try:
        payload = main(["--sizes", "tiny", "--cases", ",".join(SMOKE_CASES), "--reps", "3", "--seconds", "0",
                        "--out", str(out)], log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    return payload, out


def _timing_is_sane(stats: dict) -> None:
    assert stats["reps"] >= 1
    assert 0 < stats["min_ms"] <= stats["q1_ms"] <= stats["median_ms"] <= stats["q3_ms"]
    assert stats["iqr_ms"] == pytest.approx(stats["q3_ms"] - stats["q1_ms"])


def test_files_written(run):
    _, out = run
    for ext in ("txt", "json", "csv", "png"):
        assert (out / f"results.{ext}").stat().st_size > 0, ext
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.txt").read_text()
    for name in SMOKE_CASES:
        assert name in table
    assert "Performance targets" in table


def test_json_machine_and_cases(run):
    payload, out = run
    assert json.loads((out / "results.json").read_text())["machine"] == json.loads(json.dumps(payload["machine"]))
    machine = payload["machine"]
    for key in ("date", "cpu_model", "cpu_cores", "torch_threads", "torch", "device"):
        assert machine[key] not in (None, ""), key
    assert machine["torch"] == torch.__version__
    assert [c["case"] for c in payload["cases"]] == list(SMOKE_CASES)
    assert payload["duration_s"] > 0


def test_masked_perturb_case_fields(run):
    payload, _ = run
    record = payload["cases"][0]
    assert record["available"], record["error"]
    names = [i["name"] for i in record["impls"]]
    expected = ["reference", "compile"] + (["cpu"] if reprogram_ext.backends()["cpp"] else [])
    assert set(expected) <= set(names)
    for impl in record["impls"]:
        assert impl["available"], impl["error"]
        for phase in ("fwd", "bwd", "fwdbwd"):
            _timing_is_sane(impl[phase])
            assert impl[phase]["gbps"] > 0
        assert impl["peak_fwdbwd_bytes"] >= 0 and impl["peak_fwd_bytes"] >= 0
        assert impl["max_abs_diff_vs_eager"] < 1e-4  # the compared implementations compute the same thing
    eager = next(i for i in record["impls"] if i["name"] == "reference")
    assert eager["fwdbwd"]["speedup_vs_eager"] == pytest.approx(1.0)
    assert record["clone"]["bytes"] == 2 * 2 * 3 * 28 * 28 * 4  # tiny canvas 224/8, read + write
    assert record["bytes"]["fwdbwd"] == record["bytes"]["fwd"] + record["bytes"]["bwd"]


def test_other_cases_report_or_explain(run):
    payload, _ = run
    for record in payload["cases"][1:]:
        if record["available"]:
            assert any(i["available"] for i in record["impls"])
            for impl in record["impls"]:
                if impl["available"]:
                    _timing_is_sane(impl["fwdbwd"])
        else:
            assert record["error"]  # says what is missing instead of crashing


@pytest.mark.parametrize("case", E2E_CASES)
def test_e2e_step_clocks_its_layers(run, case):
    """Each variant of the end-to-end step (one process, and DDP on 2 ranks) clocks its layers inside its steps."""
    payload, _ = run
    record = next(c for c in payload["cases"] if c["case"] == case)
    assert record["available"], record["error"]
    for impl in record["impls"]:
        clock = impl["in_step"]
        assert clock["steps"] >= 3 * 2  # at least the timed bwd and fwd+bwd calls of 3 rounds
        parts = [clock[f"{part}_ms"] for part in ("prompt_fwd", "prompt_bwd", "mapping_fwd", "mapping_bwd")]
        assert all(p > 0 for p in parts)
        assert clock["optimizer_ms"] > 0
        assert clock["layers_ms"] + clock["optimizer_ms"] < clock["step_ms"]
        assert clock["rest_ms"] > 0
    rows = [r for r in payload["targets"] if r["case"] == case and r["status"] != "N/A"]
    assert len(rows) == 3 and all(r["detail"] for r in rows[:2])


def test_ddp_case_releases_its_rank(run):
    """The 2-rank case ends its follower process and its process group once measured."""
    import multiprocessing

    import torch.distributed as dist

    record = next(c for c in run[0]["cases"] if c["case"] == "e2e_resnet18_ilmvp_ddp2")
    assert record["params"]["ranks"] == 2 and record["available"], record["error"]
    assert not dist.is_initialized()
    assert not multiprocessing.active_children()


def test_median_ci95_order_statistics():
    """The distribution-free interval of the median: ranks 10 and 21 of 30, 40 and 61 of 100."""
    assert utils.median_ci95([float(v) for v in range(30, 0, -1)]) == (10.0, 21.0)
    assert utils.median_ci95(list(range(1, 101))) == (40, 61)
    assert utils.median_ci95([2.0, 1.0, 3.0]) == (1.0, 3.0)  # too few values: the whole range


def test_targets_reported(run):
    payload, _ = run
    assert {t.description for t in TARGETS} == {row["target"] for row in payload["targets"]}
    assert all(row["status"] in ("PASS", "MISS", "N/A") for row in payload["targets"])
    assert all(row["value"] is None for row in payload["targets"] if row["status"] == "N/A")


def test_csv_rows(run):
    payload, out = run
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = sum(len(c["impls"]) if c["available"] else 1 for c in payload["cases"])
    assert len(rows) == expected
    measured = [r for r in rows if r["available"] == "True"]
    assert measured
    for row in measured:
        assert float(row["fwdbwd_ms"]) > 0
        assert row["cpu_model"] and row["torch"]


def test_summarize_quartiles():
    stats = utils.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.median_ms, stats.q1_ms, stats.q3_ms, stats.iqr_ms, stats.reps, stats.min_ms) == (3.0, 2.0, 4.0, 2.0, 5, 1.0)


def _two_temporaries(size: int):
    def allocate_and_free():
        first = torch.ones(size, dtype=torch.uint8)  # written, so its pages are resident
        second = torch.ones(size, dtype=torch.uint8)
        del first, second

    return allocate_and_free


def test_peak_torch_alloc_bytes_counts_temporaries():
    size = 3 * 2 ** 20
    peak = utils.peak_torch_alloc_bytes(_two_temporaries(size))
    assert 2 * size <= peak < 2 * size + 2 ** 16


def test_peak_resident_bytes_counts_temporaries():
    size = 24 * 2 ** 20
    peak = utils.peak_resident_bytes(_two_temporaries(size))
    assert 2 * size - 2 ** 20 <= peak < 2 * size + 4 * 2 ** 20  # resident pages: a little noise either way


def test_peak_extra_bytes_counts_reprogram_ext_blocks():
    """The CPU figure counts outputs of reprogram_ext's own block allocator, live or freed."""
    x, delta = torch.rand(8, 3, 224, 224), torch.randn(3, 224, 224)  # 4.8 MB in, 4.8 MB out

    def two_outputs():
        first = reprogram_ext.masked_perturb(x, delta, backend="cpu")
        second = reprogram_ext.masked_perturb(x, delta, backend="cpu")
        del first, second

    out = 8 * 3 * 224 * 224 * 4
    peak = utils.peak_extra_bytes(two_outputs, torch.device("cpu"))
    assert 2 * out <= peak < 2 * out + 2 ** 20


def test_perturb_bytes_formula():
    setting = PerturbSetting(batch=4, channels=3, in_size=(8, 8), out_size=(16, 16))
    x, delta = torch.zeros(4, 3, 8, 8), torch.zeros(3, 16, 16)
    mask = torch.zeros(16, 16)
    fwd, bwd = perturb_bytes(setting, x, delta, mask, (4, 3, 16, 16), torch.float32)
    out = 4 * 3 * 16 * 16 * 4
    assert fwd == 4 * 3 * 8 * 8 * 4 + 3 * 16 * 16 * 4 + 16 * 16 * 4 + out
    assert bwd == out + 16 * 16 * 4 + 2 * 3 * 16 * 16 * 4  # grad_out, mask, delta (sigmoid'), grad_delta
