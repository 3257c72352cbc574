"""Data-driven label mappings under torch.distributed (docs/distributed.md): 2 gloo ranks on 127.0.0.1.

Both ranks train with every data-driven method, with and without DistributedDataParallel; after every
epoch both hold the same mapping, the one a single process computes from both ranks' data together.
"""
import os
import sys

import pytest
import torch

from reprogram_ext.nn import LabelMapping

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spawn_ranks import ROOT, run_ranks  # noqa: E402

WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
METHODS = ("frequency", "iterative", "bayesian", "bayesian_plus")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    return run_ranks(WORKER, tmp_path_factory.mktemp("ddp"))


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
