"""The C++ CPU kernels' cache of large output blocks (csrc/runtime/cpu_block_cache.cpp; docs/runtime.md).

Outputs of 64 KiB or more that the C++ CPU kernels allocate are rounded to whole pages and those of
2 MiB or more placed on transparent huge pages, always. Opt-in: freed blocks can be kept for reuse by
the next output of the same size (no page faults, no zeroing by the kernel in a training loop), up
to a limit in MiB that ``set_cpu_cache_limit`` sets, or the environment variable
``REPROGRAM_EXT_CPU_CACHE_MB`` at import. The default is 0: nothing is cached. ``empty_cpu_cache()``
frees every cached block, as ``torch.cuda.empty_cache()`` does on CUDA.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .. import _extension

ENV_VAR = "REPROGRAM_EXT_CPU_CACHE_MB"
MAX_MB = 1 << 40


def parse_limit(value: Optional[str]) -> int:
    """The cache limit in MiB that ``REPROGRAM_EXT_CPU_CACHE_MB=value`` asks for (unset or empty: 0)."""
    if value is None or value.strip() == "":
        return 0
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_MB:  # "²".isdigit() is True
        raise ValueError(f"{ENV_VAR} must be a whole number of MiB in [0, 2^40] (0 turns the cache off), "
                         f"got {value!r}")
    return int(text)


def set_cpu_cache_limit(megabytes: int) -> None:
    """Cache up to ``megabytes`` MiB of freed output blocks (0: no caching; blocks over a lowered limit are
    freed). No-op when the extension is not built."""
    if isinstance(megabytes, bool) or not isinstance(megabytes, int) or not 0 <= megabytes <= MAX_MB:
        raise ValueError(f"set_cpu_cache_limit: megabytes must be an int in [0, 2^40], got {megabytes!r}")
    if _extension.LOAD_ERROR is None:
        torch.ops.reprogram_ext.set_cpu_cache_limit(megabytes)


def cpu_cache_bytes() -> int:
    """Bytes of freed output blocks the cache holds now (0 when the extension is not built)."""
    return int(torch.ops.reprogram_ext.cpu_cache_bytes()) if _extension.LOAD_ERROR is None else 0


def empty_cpu_cache() -> None:
    """Free the cached large output blocks of the C++ CPU kernels. No-op when the extension is not built."""
    if _extension.LOAD_ERROR is None:
        torch.ops.reprogram_ext.empty_cpu_cache()


def apply_environment() -> None:
    """Set the limit from ``REPROGRAM_EXT_CPU_CACHE_MB`` (called once at import; a malformed value raises)."""
    limit = parse_limit(os.environ.get(ENV_VAR))
    if limit:
        set_cpu_cache_limit(limit)
