"""Standalone timing of mapped_cross_entropy / label_map forward+backward: fused (cpu backend) vs
the eager reference vs torch.compile(reference), in one process, medians. Peak extra memory is the
high-water mark of bytes allocated by torch's CPU allocator during one step (torch.profiler
profile_memory, leaf events only), the returned gradient included.

Run: PYTHONPATH=. python bench/label_map_quick.py [--sizes small,large] [--op ce|map] [--pre softmax]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import reprogram_ext as rx
from reprogram_ext.reference import label_map_reference, mapped_cross_entropy_reference

SIZES = {"small": (256, 1000, 10, 10), "large": (2048, 32000, 100, 8)}


def make_inputs(B, S, T, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, S, generator=g)
    index = torch.randperm(S, generator=g)[: T * K].reshape(T, K)
    target = torch.randint(0, T, (B,), generator=g)
    return logits, index, target


def step_fn(kind, op, pre, index, target):
    def run(x):
        x = x.detach().requires_grad_(True)
        if op == "ce":
            if kind == "fused":
                loss = rx.mapped_cross_entropy(x, target, index, pre=pre, backend="cpu")
            else:
                loss = mapped_cross_entropy_reference(x, target, index, pre=pre)
        else:
            f = rx.label_map if kind == "fused" else label_map_reference
            kw = {"backend": "cpu"} if kind == "fused" else {}
            loss = f(x, index, pre=pre, **kw).square().sum()
        loss.backward()
        return x.grad

    return run


def median_time(fn, x, reps):
    fn(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_extra_bytes(fn, x):
    """Peak bytes allocated by torch's CPU allocator during fn(x), above what was alive before."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(x)
    alive, peak = 0, 0
    leaves = (e for e in prof.events() if e.cpu_memory_usage and not e.cpu_children)  # parents repeat children
    events = sorted(leaves, key=lambda e: e.time_range.start)
    for e in events:
        alive += e.cpu_memory_usage
        peak = max(peak, alive)
    return peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="small,large")
    ap.add_argument("--op", default="ce", choices=["ce", "map"])
    ap.add_argument("--pre", default="softmax")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    for name in a.sizes.split(","):
        B, S, T, K = SIZES[name]
        x, index, target = make_inputs(B, S, T, K)
        reps = a.reps if name == "small" else max(5, a.reps // 3)
        kinds = {"fused": step_fn("fused", a.op, a.pre, index, target),
                 "eager": step_fn("eager", a.op, a.pre, index, target)}
        if not a.no_compile:
            kinds["compiled"] = torch.compile(step_fn("eager", a.op, a.pre, index, target))
        res = {k: median_time(f, x, reps) for k, f in kinds.items()}
        mem = {k: peak_extra_bytes(f, x) for k, f in kinds.items() if k != "compiled"}
        clone = median_time(lambda t: t.clone(), x, reps)
        line = f"{a.op} pre={a.pre} {name} (B={B}, S={S}, T={T}, K={K}): "
        line += ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items())
        line += f"; clone {clone * 1e3:.2f} ms; eager/fused {res['eager'] / res['fused']:.1f}x"
        if "compiled" in res:
            line += f", compiled/fused {res['compiled'] / res['fused']:.1f}x"
        line += "; peak extra MB " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in mem.items())
        print(line, flush=True)


if __name__ == "__main__":
    main()
