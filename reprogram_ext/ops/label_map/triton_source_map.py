"""The source -> entries map of a label_map index for the Triton gradient writer, built once per index
tensor and cached (the Triton side of csrc/label_map/cuda.cu's SourceMap).

For an index ``[T, K]`` over ``S`` sources, with the flat entries ``e = t * K + k`` stably sorted by
source (equal sources keep ascending ``e``):

    ent        int32 [T*K]       the entries in that order (padding -1 first, then source 0, 1, ...)
    ptr        int32 [S + 1]     source s's entries are ent[ptr[s] : ptr[s + 1]]  (a CSR)
    has        int8  [S]         1 where source s has an entry (ptr[s + 1] > ptr[s])
    block_max  int32 [ceil(S / BLOCK_S)]  the most entries of one source among the sources of
                                 row block b = [b BLOCK_S, (b + 1) BLOCK_S): the trip count of that
                                 block's entry loop (0: the block writes its dense value only)

Cached per index tensor, as the CUDA path caches its map: an entry keeps the tensor alive (so that its
memory is not reused by another index) and is used while the tensor's data pointer, shape, dtype, device
and version counter (bumped by every in-place write) are those it was built from, and for the same ``S``
and ``BLOCK_S``; a stale entry is dropped. Eight entries, least recently used out first. The key is the
caller's own index: the front end hands an int32 index to the Triton kernels unconverted
(args.kernel_index), and a view of the same memory and shape (the ``[T]`` form unsqueezed each call)
has the same key; an index of another integer dtype, or a non-contiguous one, is copied per call and
misses. Built per call (uncached) for inference tensors (no version counter), for tensors that are not
plain tensors, and while the CUDA stream is being captured into a graph (the map's memory would belong
to the graph's pool, and a replay must see in-place writes: the sort is captured with the graph).
torch.compile never traces a build: triton_op._write_gradient is then the opaque op
``reprogram_ext::label_map_gradient_rows_triton``, whose body looks the map up here at run time, on
the real index of each compiled call. A use on a CUDA stream other than the building one waits on the
build's event and marks the tensors as used on that stream.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

CACHE_ENTRIES = 8


@dataclass
class SourceMap:
    ent: Tensor
    ptr: Tensor
    has: Tensor
    block_max: Tensor


@dataclass
class _Entry:
    index: Tensor  # the key, kept alive
    version: int
    S: int
    block_s: int
    map: SourceMap
    stream: Optional[torch.cuda.Stream]
    ready: Optional[torch.cuda.Event]

    def matches(self, index: Tensor) -> bool:
        return (self.index.data_ptr() == index.data_ptr() and self.index.shape == index.shape
                and self.index.dtype == index.dtype and self.index.device == index.device)


_cache: List[_Entry] = []  # most recently used last
_lock = threading.Lock()


def build_source_map(index: Tensor, S: int, block_s: int) -> SourceMap:
    """The map of ``index`` (int64 or int32; module docstring), with torch ops."""
    torch._check_value(index.numel() < 2 ** 31 and S < 2 ** 31 - 1,
                       lambda: f"label_map (triton): index entries and S must fit int32, got {index.numel()} and {S}")
    sorted_src, perm = torch.sort(index.reshape(-1), stable=True)
    ptr = torch.searchsorted(sorted_src, torch.arange(S + 1, device=index.device, dtype=sorted_src.dtype))
    counts = ptr[1:] - ptr[:-1]
    blocks = -(-S // block_s)
    block_max = F.pad(counts, (0, blocks * block_s - S)).view(blocks, block_s).amax(1)
    return SourceMap(perm.to(torch.int32), ptr.to(torch.int32), (counts > 0).to(torch.int8),
                     block_max.to(torch.int32))


def _cacheable(index: Tensor) -> bool:
    if type(index) is not torch.Tensor or index.is_inference() or torch.compiler.is_compiling():
        return False
    return not (index.is_cuda and torch.cuda.is_current_stream_capturing())


def source_map(index: Tensor, S: int, block_s: int) -> SourceMap:
    """The map of ``index`` for ``S`` sources and row blocks of ``block_s``: cached (module docstring)."""
    if not _cacheable(index):
        return build_source_map(index, S, block_s)
    version = index._version
    with _lock:
        # an entry of this tensor written in place since it was built is never valid again
        _cache[:] = [e for e in _cache if not (e.matches(index) and e.version != version)]
        for i, entry in enumerate(_cache):
            if entry.matches(index) and entry.S == S and entry.block_s == block_s:
                _use_on_current_stream(entry)
                _cache.append(_cache.pop(i))
                return entry.map
        stream = torch.cuda.current_stream(index.device) if index.is_cuda else None
        built = build_source_map(index, S, block_s)
        ready = None
        if stream is not None:
            ready = torch.cuda.Event()
            ready.record(stream)
        if len(_cache) == CACHE_ENTRIES:
            del _cache[0]
        _cache.append(_Entry(index, version, S, block_s, built, stream, ready))
        return built


def _use_on_current_stream(entry: _Entry) -> None:
    """A CUDA map built on another stream: the current one waits for the build, and the allocator
    keeps the map's memory until the current stream's work on it is done."""
    if entry.stream is None:
        return
    current = torch.cuda.current_stream(entry.index.device)
    if current == entry.stream:
        return
    current.wait_event(entry.ready)
    for t in (entry.map.ent, entry.map.ptr, entry.map.has, entry.map.block_max):
        t.record_stream(current)


def cached_maps() -> int:
    """The number of cached maps (for the tests)."""
    with _lock:
        return len(_cache)


def clear_cache() -> None:
    """Drops every cached map (for the tests)."""
    with _lock:
        _cache.clear()
