"""BlackBoxReprogrammer under torch.distributed (docs/blackbox.md): 2 gloo ranks on 127.0.0.1 split each
step's Q queries and all-reduce only the Q losses; every rank ends with the single-process program."""
import os
import socket
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blackbox_cases import B, CASES, STEPS, run_case  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "blackbox_distributed_worker.py")
TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bbox_ddp")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GLOO_SOCKET_IFNAME="lo",
               OMP_NUM_THREADS="1")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, WORKER, str(rank), "2", str(port), str(out)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} failed:\n" + "\n".join(log[-3000:] for log in logs)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(2)]


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
