"""Runtime helpers that are not kernels (docs/runtime.md): the opt-in CPU output block cache."""
from .cpu_cache import apply_environment, cpu_cache_bytes, empty_cpu_cache, set_cpu_cache_limit

apply_environment()

__all__ = ["empty_cpu_cache", "set_cpu_cache_limit", "cpu_cache_bytes"]
