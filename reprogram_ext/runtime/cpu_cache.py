"""The C++ CPU kernels' cache of large output blocks (csrc/runtime/cpu_block_cache.cpp).

Outputs of 64 KiB or more that the C++ CPU kernels allocate are rounded to whole pages, those of
2 MiB or more placed on transparent huge pages, and freed blocks are kept for reuse by the next
output of the same size, up to ``REPROGRAM_EXT_CPU_CACHE_MB`` MiB (read once, at the first
allocation; default 256, 0 turns the reuse off). ``empty_cpu_cache()`` frees every cached block,
as ``torch.cuda.empty_cache()`` does on CUDA.
"""
from __future__ import annotations

import torch

from .. import _extension


def empty_cpu_cache() -> None:
    """Free the cached large output blocks of the C++ CPU kernels. No-op when the extension is not built."""
    if _extension.LOAD_ERROR is None:
        torch.ops.reprogram_ext.empty_cpu_cache()
