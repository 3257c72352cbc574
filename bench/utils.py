"""Shared measurement utilities of the benchmark suite: timing, peak memory, bytes moved, machine details.

Timing: ``time_interleaved`` runs warm-up calls (not recorded), then rounds in which each of the
compared callables is timed once (up to ``reps`` rounds within a time budget), each call measured
with ``time.perf_counter`` around a synchronised call on CPU, or with a pair of CUDA events on the
current stream on GPU. Statistics are the median and the inter-quartile range (IQR = q3 - q1) of
the per-call times.

Peak memory: the highest amount of memory taken *during* a call above what was in use when it
started (tensors alive before the call, e.g. the inputs, do not count).
  - ``peak_extra_bytes`` (the figure the tables and targets use):
    CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated()`` after resetting the peak.
    CPU (``peak_torch_alloc_bytes``): the call runs under ``torch.profiler`` with
    ``profile_memory=True``; every allocation and free made through c10's CPU allocator, and
    through reprogram_ext's own block allocator for large outputs (it reports to the profiler
    the same way), is recorded with its size and time, and the figure is the maximum running sum
    of those signed sizes: the CPU counterpart of CUDA's allocator statistics. Exact and
    repeatable; blind to memory that libraries allocate outside both (oneDNN's scratch buffers).
  - ``peak_resident_bytes`` (CPU, kept in the JSON/CSV as a cross-check): free heap memory is
    returned to the OS (``malloc_trim(0)``), the resident-set high-water mark is reset
    (``echo 5 > /proc/self/clear_refs``), the call runs, and the figure is the new high-water mark
    (``VmHWM``) minus the resident set before (``VmRSS``), the smallest of a few calls. It counts
    every page touched, whatever allocated it, at page granularity (a huge page counts 2 MiB);
    its noise -- heap pages the C library keeps, other libraries' scratch -- is a few MB on a
    ResNet-18 step, under 1 MB on an op. None where /proc/self/clear_refs is not available.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

MB = 1e6  # decimal megabytes, as GB/s uses 1e9 bytes
GB = 1e9


@dataclass
class TimingStats:
    """Per-call wall times in milliseconds: median, quartiles, IQR, minimum and how many calls were timed."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    reps: int
    min_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TimingBudget:
    """How many timed rounds to make (see ``time_interleaved``) and how often to measure memory."""

    reps: int = 30  # at most
    min_reps: int = 5  # at least, unless that takes more than slow_factor x the time budget ...
    seconds: float = 1.0  # time budget per callable
    warmup: int = 1  # untimed calls of each callable first
    floor_reps: int = 3  # ... then this many suffice
    slow_factor: float = 2.0
    memory_repeats: int = 2  # CPU resident-memory peaks: the smallest of this many calls
    memory_cross_check: bool = True  # CPU: also the torch-allocator peak (one more call each)


def summarize(times_ms: Sequence[float]) -> TimingStats:
    """Median and quartiles (inclusive method) of a list of per-call times."""
    values = sorted(times_ms)
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return TimingStats(statistics.median(values), q1, q3, q3 - q1, len(values), values[0])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_one(run: Callable[[], object], device: torch.device) -> float:
    """Milliseconds taken by one call of ``run`` (its setup must already be done)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    run()
    return (time.perf_counter() - begin) * 1e3


def time_interleaved(calls: dict, device: torch.device, budget: TimingBudget) -> dict:
    """Time several callables in alternation; ``calls`` maps a name to ``(run, setup)``.

    Each timed call is ``run(setup())``; ``setup`` (e.g. the forward before a timed backward, or
    None) is not timed. After the warm-up calls (excluded), rounds are made in which every callable
    is timed once, so that a change in the machine's load affects all of them alike. Rounds go on
    until ``reps`` rounds are done or ``seconds`` per callable have passed, but never fewer than
    ``min_reps`` rounds -- unless those would take more than ``slow_factor`` times the budget, in
    which case ``floor_reps`` rounds suffice (large cases on a slow machine). Garbage collection runs
    before, not during, the timed calls. Returns name -> per-round times in ms (index i of every
    list is round i, so ratios of the same round are paired measurements).
    """
    prepared = {name: (run, setup if setup is not None else (lambda: None)) for name, (run, setup) in calls.items()}
    for run, setup in prepared.values():
        for _ in range(budget.warmup):
            run(setup())
    synchronize(device)
    gc.collect()
    times = {name: [] for name in prepared}
    begin = time.perf_counter()
    allowed = budget.seconds * len(prepared)
    rounds = 0

    def wanted() -> bool:
        elapsed = time.perf_counter() - begin
        if rounds >= budget.reps:
            return False
        if rounds < min(budget.floor_reps, budget.min_reps):
            return True
        return elapsed < allowed or (rounds < budget.min_reps and elapsed < budget.slow_factor * allowed)

    while wanted():
        for name, (run, setup) in prepared.items():
            state = setup()
            synchronize(device)
            times[name].append(_time_one(lambda: run(state), device))
            del state
        rounds += 1
    return times


def median_ci95(values: Sequence[float]) -> tuple:
    """Distribution-free 95% confidence interval of the median: order statistics ``(x_(k), x_(n+1-k))``.

    ``k`` is the largest rank with ``P(Binomial(n, 1/2) < k) <= 2.5%``, so the interval covers the true
    median with probability >= 95% whatever the distribution (n >= 6; below that the whole range).
    """
    ordered = sorted(values)
    n = len(ordered)
    k, below = 0, 0.0  # below = P(Binomial(n, 1/2) < k + 1)
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n
        if below > 0.025:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def paired_ratio(numerator_ms: Sequence[float], denominator_ms: Sequence[float]) -> dict:
    """Median, quartiles, 95% CI of the median and count of the per-round ratios numerator/denominator.

    Both calls of a round ran back to back, so a change in the machine's load between rounds
    largely cancels in their ratio.
    """
    ratios = [n / d for n, d in zip(numerator_ms, denominator_ms) if d > 0]
    stats = summarize(ratios)
    low, high = median_ci95(ratios)
    return {"median": stats.median_ms, "q1": stats.q1_ms, "q3": stats.q3_ms, "ci95_low": low, "ci95_high": high,
            "rounds": stats.reps}


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the profiler's native log lines (written straight to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _allocation_events(prof, device_type: str) -> list:
    """(time ns, signed bytes) of every allocator event of ``device_type`` recorded by ``prof``."""
    from torch._C._profiler import _EventType

    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == device_type:
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    events.sort(key=lambda item: item[0])
    return events


def peak_torch_alloc_bytes(run: Callable[[], object]) -> int:
    """Peak bytes allocated by one call of ``run`` through c10's CPU allocator and reprogram_ext's
    block allocator (both report to the profiler), above the start."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run()
        del result
    running = peak = 0
    for _, size in _allocation_events(prof, "cpu"):
        running += size
        peak = max(peak, running)
    return int(peak)


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


def _reset_resident_high_water_mark() -> bool:
    """Return free heap pages (and reprogram_ext's cached output blocks, so that a reused block is
    counted as the new allocation it stands for) to the OS and reset VmHWM; False where that is
    not possible."""
    try:
        import ctypes

        import reprogram_ext

        reprogram_ext.empty_cpu_cache()

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_resident_bytes(run: Callable[[], object], repeats: int = 2) -> Optional[int]:
    """Resident-memory high-water mark of one call of ``run`` above the resident set when it began
    (the smallest of ``repeats`` calls; see above), or None where it cannot be measured."""
    gc.collect()
    if not _reset_resident_high_water_mark():
        return None
    peaks = []
    for _ in range(max(1, repeats)):
        _reset_resident_high_water_mark()
        base = _proc_status_bytes("VmRSS")
        result = run()
        peaks.append(_proc_status_bytes("VmHWM") - base)
        del result
        gc.collect()
    return max(0, int(min(peaks)))


def peak_extra_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Peak memory allocated by one call of ``run`` above what was allocated when it began (see above)."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = run()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return int(peak)
    return peak_torch_alloc_bytes(run)


def tensor_bytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype``."""
    count = 1
    for size in shape:
        count *= int(size)
    return count * torch.empty((), dtype=dtype).element_size()


def gbps(num_bytes: Optional[int], median_ms: Optional[float]) -> Optional[float]:
    """Achieved bandwidth in GB/s (1e9 bytes per second) of moving ``num_bytes`` in ``median_ms``."""
    if not num_bytes or not median_ms or median_ms <= 0:
        return None
    return num_bytes / (median_ms * 1e-3) / GB


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version_of(module_name: str) -> Optional[str]:
    try:
        module = __import__(module_name)
    except Exception:  # not installed, or fails to import: reported as absent
        return None
    return getattr(module, "__version__", "unknown")


def machine_info(device: torch.device) -> dict:
    """Machine, software and device details recorded with every result file."""
    import reprogram_ext

    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": _version_of("triton"),
        "torchvision": _version_of("torchvision"),
        "device": str(device),
        "device_name": _cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "reprogram_ext_backends": reprogram_ext.backends(),
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info
