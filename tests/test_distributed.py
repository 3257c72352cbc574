"""Data-driven label mappings under torch.distributed (docs/distributed.md): 2 gloo ranks on 127.0.0.1.

Both ranks train with every data-driven method, with and without DistributedDataParallel; after every
epoch both hold the same mapping, the one a single process computes from both ranks' data together.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

from reprogram_ext.nn import LabelMapping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
METHODS = ("frequency", "iterative", "bayesian", "bayesian_plus")
TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
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


def single_process_mapping(method, logits, target):
    """The mapping one process fits from these logits (no process group in the test process)."""
    layer = LabelMapping(12, 4, method, topk=2 if method == "bayesian_plus" else None)
    return layer.fit(logits, target).clone()


@pytest.mark.parametrize("ddp", [False, True], ids=["plain", "ddp"])
@pytest.mark.parametrize("method", METHODS)
def test_ranks_share_the_mapping_of_the_union_of_their_counts(rank_results, method, ddp):
    r0, r1 = (res[(method, ddp, True)] for res in rank_results)
    for epoch in range(2):
        assert torch.equal(r0["mapping"][epoch], r1["mapping"][epoch]), f"epoch {epoch}: ranks differ"
        if method == "frequency" and epoch > 0:  # mapped once, after the first epoch
            assert torch.equal(r0["mapping"][1], r0["mapping"][0])
            continue
        logits = torch.cat([r0["logits"][epoch], r1["logits"][epoch]])
        target = torch.cat([r0["target"][epoch], r1["target"][epoch]])
        expected = single_process_mapping(method, logits, target)
        torch.testing.assert_close(r0["mapping"][epoch], expected, rtol=1e-5, atol=1e-6)
        own = single_process_mapping(method, r0["logits"][epoch], r0["target"][epoch])
        assert not torch.equal(own, expected), "test data too weak: rank 0's shard alone gives the same mapping"


def test_sync_false_keeps_each_ranks_own_mapping(rank_results):
    mappings = []
    for res in rank_results:
        r = res[("frequency", False, False)]
        own = single_process_mapping("frequency", r["logits"][0], r["target"][0])
        assert torch.equal(r["mapping"][0], own)
        mappings.append(own)
    assert not torch.equal(*mappings), "test data too weak: both shards give the same mapping"


def test_counts_are_not_buffers_so_ddp_does_not_broadcast_them():
    layer = LabelMapping(6, 2, "iterative")
    assert "counts" not in dict(layer.named_buffers()) and layer.counts.shape == (6, 2)
    assert not LabelMapping(6, 2, "iterative", sync=False).syncs_counts
    assert "sync=False" in repr(LabelMapping(6, 2, "bayesian", sync=False))
    with pytest.raises(TypeError, match="sync must be a bool"):
        LabelMapping(6, 2, "bayesian", sync="yes")


def test_state_dicts_with_counts_as_a_buffer_still_load():
    a = LabelMapping(6, 2, "iterative")
    a.update(torch.randn(5, 6), torch.randint(0, 2, (5,)))
    legacy = {k: v for k, v in a.state_dict().items() if not k.endswith("_extra_state")}
    legacy["counts"] = a.counts.clone()
    legacy["_extra_state"] = {"epochs": 0, "remaps": 0}
    b = LabelMapping(6, 2, "iterative")
    b.load_state_dict(legacy)
    assert torch.equal(b.counts, a.counts)
