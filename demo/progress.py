"""A dependency-free text progress bar (redraws in place on a terminal, one line per step otherwise)."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    """``bar = ProgressBar(total, "label"); bar.update(metric=value); bar.close()``."""

    def __init__(self, total: int, label: str, width: int = 24, stream=None) -> None:
        self.total, self.label, self.width = total, label, width
        self.stream = stream or sys.stdout
        self.done, self.start = 0, time.perf_counter()
        self.inplace = self.stream.isatty()

    def update(self, steps: int = 1, **metrics) -> None:
        self.done = min(self.total, self.done + steps)
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        info = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        line = f"{self.label:<22} [{bar}] {self.done}/{self.total} {time.perf_counter() - self.start:5.1f}s {info}"
        if self.inplace:
            self.stream.write("\r" + line.ljust(110))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.inplace:
            self.stream.write("\n")
            self.stream.flush()
