"""Validation of the black-box arguments (seed, q, beta, directions, losses) and the bank's canonical form.

The input transform's arguments are masked_perturb's and are validated by its canonicalize; the
program theta is its ``delta``. Errors name the argument, what was expected and what was given.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..masked_perturb.args import CanonicalPerturb
from .options import DIRECTIONS, MAX_SPHERE_NUMEL

SEED_LIMIT = 2 ** 64


def err(fn: str, arg: str, expected: str, got) -> str:
    return f"{fn}: {arg} must be {expected}, got {got}"


def as_seed(seed, fn: str) -> int:
    """An int in [0, 2^64) (Python or numpy int; bool, float, tensor refused)."""
    if isinstance(seed, (bool, float, torch.Tensor)) or seed is None:
        raise TypeError(err(fn, "seed", "an int in [0, 2^64)", repr(seed)))
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(err(fn, "seed", "an int in [0, 2^64)", repr(seed))) from None
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(err(fn, "seed", "an int in [0, 2^64)", value))
    return value


def signed_seed(seed: int) -> int:
    """The 64-bit key as the op schema's signed int64."""
    return seed - SEED_LIMIT if seed >= 2 ** 63 else seed


def as_count(value, fn: str, arg: str) -> int:
    """A positive int (Python or numpy int; bool, float, tensor refused)."""
    if isinstance(value, (bool, float, torch.Tensor)) or value is None:
        raise TypeError(err(fn, arg, "a positive int", repr(value)))
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(err(fn, arg, "a positive int", repr(value))) from None
    if count < 1:
        raise ValueError(err(fn, arg, "a positive int", count))
    return count


def as_step(value, fn: str, arg: str) -> float:
    """A finite real > 0 (the finite-difference step)."""
    if isinstance(value, (bool, str, bytes, complex)) or value is None:
        raise TypeError(err(fn, arg, "a finite real number > 0", repr(value)))
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(err(fn, arg, "a finite real number > 0", repr(value))) from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(err(fn, arg, "a finite real number > 0", v))
    return v


def as_directions(directions, fn: str) -> str:
    if not isinstance(directions, str) or directions not in DIRECTIONS:
        raise ValueError(err(fn, "directions", f"one of {DIRECTIONS}", repr(directions)))
    return directions


def as_flag(value, fn: str, arg: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(err(fn, arg, "a bool", repr(value)))
    return value


def check_numel(numel: int, directions: str, fn: str, arg: str = "theta") -> None:
    if numel == 0:
        raise ValueError(err(fn, arg, "a non-empty tensor (the directions live on its elements)", "0 elements"))
    if directions == "sphere" and numel > MAX_SPHERE_NUMEL:
        raise ValueError(err(fn, arg, f"at most 2^25 elements for sphere directions (the exact norm's range)",
                             f"{numel} elements"))


def num_queries(q: int, antithetic: bool) -> int:
    """Q: the centre and q directions, or q antithetic pairs."""
    return 2 * q if antithetic else q + 1


def as_query_range(queries, total: int, fn: str) -> Tuple[int, int]:
    """queries: None (all Q), a range with step 1, or a (start, stop) pair within [0, Q]."""
    if queries is None:
        return 0, total
    if isinstance(queries, range):
        if queries.step != 1:
            raise ValueError(err(fn, "queries", "a range with step 1", repr(queries)))
        start, stop = queries.start, queries.stop
    elif (isinstance(queries, (tuple, list)) and len(queries) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in queries)):
        start, stop = queries
    else:
        raise TypeError(err(fn, "queries", "None, a range or a (start, stop) pair of ints", repr(queries)))
    if not 0 <= start < stop <= total:
        raise ValueError(err(fn, "queries", f"a non-empty range within [0, Q={total}]", repr(queries)))
    return start, stop


def query_of(index: int, antithetic: bool) -> Tuple[int, int]:
    """(direction j, sign) of bank query ``index``: j = 0 is the centre; antithetic banks interleave
    the pairs: query 2(j-1) is theta + beta u_j, query 2(j-1)+1 is theta - beta u_j."""
    if antithetic:
        return index // 2 + 1, (1 if index % 2 == 0 else -1)
    return index, 1


@dataclass
class CanonicalBank:
    perturb: CanonicalPerturb  # theta is perturb.delta in the compute dtype (float32/float64)
    seed: int
    q: int
    beta: float
    directions: str
    antithetic: bool
    query_start: int
    query_stop: int
    out_dtype: torch.dtype


def low_precision_warning(out_dtype: torch.dtype, beta: float, directions: str, numel: int) -> Optional[str]:
    """Why a float16/bfloat16 bank loses the finite differences, or None.

    A query changes an element by beta * |u_i|, typically beta / sqrt(d) (sphere), beta (gaussian),
    0.75 beta (segmented); on canvas values of magnitude ~1 a change below the dtype's epsilon (the
    spacing of its numbers at 1) rounds away (BlackVIP issue #2)."""
    if out_dtype not in (torch.float16, torch.bfloat16):
        return None
    typical = {"sphere": beta / math.sqrt(numel), "gaussian": beta, "segmented": 0.75 * beta}[directions]
    eps = torch.finfo(out_dtype).eps
    if typical >= eps:
        return None
    return (f"perturbation_bank: out_dtype={out_dtype} cannot hold the perturbations: beta={beta:g} changes an "
            f"element by ~{typical:.3g} ({directions} directions over d={numel}), below the {out_dtype} spacing at 1.0 "
            f"({eps:.3g}); the finite differences of the queries round away. Use a float32 bank (the default), "
            f"or a larger beta")
