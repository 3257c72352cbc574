"""The black-box end-to-end benchmark case (bench/cases_blackbox_e2e.py) at tiny sizes: it steps, counts and clocks."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.cases_blackbox_e2e import cases  # noqa: E402
from bench.report import _in_step_line  # noqa: E402


@pytest.mark.parametrize("case", cases("tiny"), ids=lambda c: c.name)
def test_case_steps_and_reports_queries_per_second(case):
    torch.set_num_threads(1)
    instance = case.build(torch.device("cpu"), torch.float32)
    assert [i.name for i in instance.impls] == ["fused", "reference"]
    for impl in instance.impls:
        for _ in range(2):
            out = impl.forward()
            impl.backward(out)
        s = impl.in_step()
        assert s["zo_steps"] == 2 and s["queries_per_step"] == case.params["Q"] * case.params["B"] == out["queries"]
        assert 0 < s["model_ms"] < s["step_ms"] and s["framework_ms"] > 0
        assert s["queries_per_s"] == pytest.approx(s["queries_per_step"] / (s["step_ms"] / 1e3))
        assert "queries/s" in _in_step_line({"name": impl.name, "in_step": s})
