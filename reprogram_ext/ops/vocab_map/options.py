"""The options of vocab_map, defined once for the Python side (docs/ops/vocab_map.md): the ``mode``
names, the dtypes, the default V_s chunk, and what each mode's forward returns besides ``out``.

With ``z[n, :]`` the windowed sum of theta rows (n = b·L + i, the flattened position) and
``s = z / tau`` (``gumbel*``: ``s = (z + G) / tau``):

- ``softmax``, ``gumbel``: ``p = softmax(s)``, ``out = p @ embedding``;
- ``gumbel_hard``: ``out = onehot(argmax s) @ embedding`` forward, the gradient of the soft
  ``softmax(s) @ embedding`` backward (straight-through);
- ``none``: ``p = z`` (no tau), ``out = z @ embedding``.

The C++ side's list is csrc/vocab_map/options.h (the same names). Adding a mode touches this
module, options.h and the Triton kernels.
"""
from __future__ import annotations

import torch

MODES = ("softmax", "gumbel", "gumbel_hard", "none")
DTYPES = (torch.float32, torch.float64)

# The forward's auxiliary outputs, per mode: stats [N, 2] = (row max of s, sum of exp(s - max))
# for the softmax modes; soft [N, D] (the soft output, for the backward's row term) and
# hard_index [N] (the argmax) for gumbel_hard only. Absent ones are empty [0] tensors.


def has_softmax(mode: str) -> bool:
    return mode != "none"


def has_noise(mode: str) -> bool:
    return mode in ("gumbel", "gumbel_hard")


def is_hard(mode: str) -> bool:
    return mode == "gumbel_hard"


# The default chunk of V_s columns: about CHUNK_ELEMENTS values of [N, chunk] per temporary
# (4 MiB in float32: cache-sized), between MIN_CHUNK and MAX_CHUNK columns (GEMM-sized).
CHUNK_ELEMENTS = 1 << 20
MIN_CHUNK, MAX_CHUNK = 64, 4096


def default_chunk(N: int, V_s: int) -> int:
    """The V_s columns per chunk for N rows: ~CHUNK_ELEMENTS / N, a multiple of 64, at most V_s."""
    chunk = max(MIN_CHUNK, min(MAX_CHUNK, (CHUNK_ELEMENTS // max(N, 1)) // 64 * 64))
    return min(chunk, V_s)
