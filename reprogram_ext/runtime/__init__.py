"""Runtime helpers that are not kernels (docs/runtime.md)."""
from .cpu_cache import empty_cpu_cache

__all__ = ["empty_cpu_cache"]
