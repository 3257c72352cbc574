"""One rank of tests/test_distributed.py: trains tiny Reprogrammers with every data-driven LabelMapping.

Run as ``python tests/distributed_worker.py RANK WORLD_SIZE PORT OUT_DIR``; joins a gloo process group
on 127.0.0.1 and saves, per (method, wrapping), the source logits and targets this rank fed to the
mapping in each epoch and the mapping after each epoch (``OUT_DIR/rank{RANK}.pt``).
"""
import datetime
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from reprogram_ext.nn import LabelMapping, PaddingPrompt, Reprogrammer

METHODS = ("frequency", "iterative", "bayesian", "bayesian_plus")
NUM_SOURCE, NUM_TARGET, EPOCHS, BATCHES, BATCH = 12, 4, 2, 3, 8


def mapping_of(layer: LabelMapping) -> torch.Tensor:
    return (layer.index if layer.method in ("frequency", "iterative") else layer.weight).clone()


def run(method: str, ddp: bool, sync: bool, rank: int) -> dict:
    torch.manual_seed(0)  # the same frozen model and initial prompt on every rank
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_SOURCE))
    mapping = LabelMapping(NUM_SOURCE, NUM_TARGET, method, topk=2 if method == "bayesian_plus" else None, sync=sync)
    rp = Reprogrammer(model, PaddingPrompt(4, 8, channels=3), mapping)
    seen = []
    rp.model.register_forward_hook(lambda module, args, out: seen.append(out.detach().clone()))
    net = DistributedDataParallel(rp) if ddp else rp
    opt = torch.optim.SGD(rp.trainable_parameters(), lr=0.5)
    data = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard
    record = {"logits": [], "target": [], "mapping": []}
    for _ in range(EPOCHS):
        seen.clear()
        targets = []
        net.train()
        for _ in range(BATCHES):
            x = 4 * torch.randn(BATCH, 3, 4, 4, generator=data)
            y = torch.randint(0, NUM_TARGET, (BATCH,), generator=data)
            loss = F.cross_entropy(net(x, y), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            targets.append(y)
        rp.end_epoch()
        record["logits"].append(torch.cat(seen))
        record["target"].append(torch.cat(targets))
        record["mapping"].append(mapping_of(mapping))
    return record


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {(m, ddp, True): run(m, ddp, True, rank) for m in METHODS for ddp in (False, True)}
        results[("frequency", False, False)] = run("frequency", False, False, rank)
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
