"""Run a worker script as 2 gloo ranks on 127.0.0.1 (a free port, bounded time) and load what each saved.

``run_ranks(worker, out_dir)`` starts ``python WORKER RANK 2 PORT OUT_DIR`` for ranks 0 and 1, waits
at most ``TIMEOUT_S`` for each, fails with the ranks' logs when one fails, and returns
``[torch.load(OUT_DIR/rank0.pt), torch.load(OUT_DIR/rank1.pt)]``.
"""
import os
import socket
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 180
WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker: str, out) -> list:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GLOO_SOCKET_IFNAME="lo",
               OMP_NUM_THREADS="1")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, worker, str(rank), str(WORLD), str(port), str(out)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(WORLD)]
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
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]
