"""BlackBoxReprogrammer under torch.distributed (docs/blackbox.md): 2 gloo ranks on 127.0.0.1 split each
step's Q queries and all-reduce only the Q losses; every rank ends with the single-process program."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blackbox_cases import B, CASES, STEPS, run_case  # noqa: E402
from spawn_ranks import ROOT, run_ranks  # noqa: E402

WORKER = os.path.join(ROOT, "tests", "blackbox_distributed_worker.py")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    return run_ranks(WORKER, tmp_path_factory.mktemp("bbox_ddp"))


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_make_the_single_process_steps(rank_results, name):
    single = run_case(name)  # no process group in the test process
    Q = CASES[name].num_queries
    for rank, res in enumerate(rank_results):
        r = res[name]
        for step in range(STEPS):
            assert torch.equal(r["programs"][step], single["programs"][step]), f"rank {rank}, step {step}"
        assert r["losses"] == single["losses"]
        assert r["queries"] == single["queries"] == STEPS * Q * B  # both ranks count the step's global queries
    own_calls = [res[name]["calls"] for res in rank_results]
    assert own_calls == [STEPS * ((Q + 1) // 2), STEPS * (Q // 2)]  # disjoint blocks, one call per query
    assert single["calls"] == STEPS * Q
