"""Splitting one step's Q queries over the ranks of a process group, and sharing their losses.

All ranks hold the same batch and the same θ and use the step's one seed; rank ``r`` of ``w``
evaluates the contiguous block ``rank_queries(Q, r, w)`` of the queries (blocks differ in size by at
most one), writes its losses into a zero vector ``[Q]`` and ``all_reduce(SUM)`` fills in the others'.
Each entry is written by exactly one rank and the others add 0, so every rank ends with exactly the
losses one process would have computed, hence the same estimate and the same update.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import distributed as dist


def rank_queries(num_queries: int, rank: int, world: int) -> range:
    """The block of queries of ``rank``: ``Q = w·base + extra``; the first ``extra`` ranks take one more."""
    base, extra = divmod(num_queries, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def group_layout(process_group, distributed: Optional[bool]) -> Tuple[int, int, bool]:
    """``(rank, world, sharded)``: ``distributed=None`` shards whenever ``torch.distributed`` is initialised."""
    up = dist.is_available() and dist.is_initialized()
    if distributed and not up:
        raise RuntimeError("BlackBoxReprogrammer: distributed=True but torch.distributed is not initialised")
    if not (up if distributed is None else distributed):
        return 0, 1, False
    return dist.get_rank(process_group), dist.get_world_size(process_group), True


def share_losses(losses: torch.Tensor, process_group) -> torch.Tensor:
    """Sum the ranks' zero-filled loss vectors ``[Q]`` (each entry comes from one rank)."""
    dist.all_reduce(losses, op=dist.ReduceOp.SUM, group=process_group)
    return losses


__all__ = ["rank_queries", "group_layout", "share_losses"]
