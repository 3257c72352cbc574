"""Progress of the demo's training loops: a tqdm bar on a terminal, one summary line in a log."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _format(metrics: dict) -> str:
    return " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


class ProgressBar:
    """``bar = ProgressBar(total, "label"); bar.update(metric=value); bar.close()``.

    When ``stream`` (default stdout) is a terminal, a tqdm bar redraws in place with the latest
    metrics. Otherwise (a log file, a pipe, CI) nothing is written per step and ``close()`` writes one
    line: ``label [done/total steps] elapsed metrics``.
    """

    def __init__(self, total: int, label: str, stream=None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stdout
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.metrics, self.start = 0, {}, time.perf_counter()
        self.bar = tqdm(total=total, desc=label, file=self.stream, disable=not self.interactive, dynamic_ncols=True)

    def update(self, steps: int = 1, **metrics) -> None:
        self.done = min(self.total, self.done + steps)
        self.metrics = metrics
        self.bar.set_postfix_str(_format(metrics), refresh=False)
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()
        if not self.interactive:
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"{self.label:<22} [{self.done}/{self.total} steps] {elapsed:5.1f}s "
                              f"{_format(self.metrics)}\n")
            self.stream.flush()
