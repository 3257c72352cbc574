"""A hand probe of vocab_map on the CPU (bench/notes/vocab_map.md): the bench case's inputs (Neekhara
2019 rewriter: B·L = 2048, w = 5, V_t = 64, gumbel, τ = 0.5, seed 1234) at a given V_s and D; one
warm-up, then `reps` interleaved fwd+bwd calls of each implementation in one process (wall and
process CPU time), optionally one call each under the bench's peak-memory probe and its GEMM probe.

    PYTHONPATH=$PWD python bench/notes/vocab_map_probe.py V_s D threads reps [--memory]
    (e.g. 2048 256 2 5; the issue's size: 32000 768 2 3 --memory)
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import reprogram_ext as rx  # noqa: E402
from bench.cases_vocab_map import BATCH, LENGTH, TARGET_VOCAB, TAU, WINDOW, VocabSize, measure_gemm_gflops  # noqa: E402
from bench.utils import peak_extra_bytes  # noqa: E402


def main(argv):
    V_s, D, threads, reps = (int(a) for a in argv[:4])
    memory = "--memory" in argv
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, TARGET_VOCAB, (BATCH, LENGTH), generator=g)
    bound = 1.0 / (TARGET_VOCAB * WINDOW) ** 0.5
    theta = ((torch.rand(WINDOW, TARGET_VOCAB, V_s, generator=g) * 2 - 1) * bound).requires_grad_(True)
    E = torch.randn(V_s, D, generator=g)
    up = torch.randn(BATCH, LENGTH, D, generator=g)

    def step(backend):
        theta.grad = None
        out = rx.vocab_map(tokens, theta, E, tau=TAU, mode="gumbel", seed=1234, backend=backend)
        out.backward(up)
        return out.detach(), theta.grad

    impls = ["cpu", "reference"]
    outs = {be: step(be) for be in impls}  # warm-up
    times = {be: [] for be in impls}
    for _ in range(reps):
        for be in impls:
            t0, c0 = time.perf_counter(), time.process_time()
            step(be)
            times[be].append((time.perf_counter() - t0, time.process_time() - c0))
    flops = 4 * BATCH * LENGTH * V_s * D
    print(f"V_s={V_s} D={D} threads={threads} reps={reps} load={os.getloadavg()[0]:.2f} "
          f"({flops / 1e9:.1f} GFLOP per fwd+bwd)")
    for be in impls:
        wall = statistics.median(t[0] for t in times[be])
        print(f"  {be:10s} fwd+bwd {wall * 1e3:9.1f} ms (all {[round(t[0] * 1e3) for t in times[be]]}), CPU "
              f"{[round(t[1] * 1e3) for t in times[be]]} ms, {flops / wall / 1e9:.1f} GFLOP/s")
    ratio = statistics.median(t[0] for t in times["reference"]) / statistics.median(t[0] for t in times["cpu"])
    print(f"  cpu vs eager {ratio:.2f}x; max|dout| {(outs['cpu'][0] - outs['reference'][0]).abs().max().item():.2e}, "
          f"max|dgrad| {(outs['cpu'][1] - outs['reference'][1]).abs().max().item():.2e}")
    if memory:
        peaks = {be: peak_extra_bytes(lambda: step(be), torch.device("cpu")) for be in impls}
        rate = measure_gemm_gflops(VocabSize(BATCH, LENGTH, WINDOW, TARGET_VOCAB, V_s, D), torch.device("cpu"),
                                   torch.float32)
        wall = statistics.median(t[0] for t in times["cpu"])
        print(f"  peak extra MB: cpu {peaks['cpu'] / 2**20:.1f}, eager {peaks['reference'] / 2**20:.1f} "
              f"(ratio {peaks['cpu'] / peaks['reference']:.4f}); GEMM probe {rate:.1f} GFLOP/s, "
              f"cpu fraction {flops / wall / 1e9 / rate:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
