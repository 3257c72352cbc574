"""One rank of tests/test_blackbox_distributed.py: black-box steps with the Q queries split over the ranks.

Run as ``python tests/blackbox_distributed_worker.py RANK WORLD_SIZE PORT OUT_DIR``; joins a gloo process
group on 127.0.0.1, trains the cases of ``blackbox_cases.py`` (every rank on the same batches) and saves,
per case, the program after each step, the step losses and this rank's own calls of the black box.
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blackbox_cases import CASES, run_case  # noqa: E402


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.save({name: run_case(name) for name in CASES}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
