"""The option vocabulary of perturbation_bank and of the directions' weighted sum, defined once for
the front end, the reference and the kernels' launchers (C++: csrc/perturbation_bank/).

The bank's input transform takes masked_perturb's options unchanged (its OPTIONS_SCHEMA follows the
bank's own arguments in the op schema; csrc/schemas.cpp holds the same strings).
"""
from __future__ import annotations

from ..masked_perturb.options import OPTIONS_SCHEMA as PERTURB_OPTIONS_SCHEMA
from .philox import DIRECTIONS, MAX_SPHERE_NUMEL

__all__ = ["DIRECTIONS", "MAX_SPHERE_NUMEL", "BANK_SCHEMA", "COMBINE_SCHEMA", "DEFAULT_SCALE"]

# seed: the 64-bit key as a signed int64 (two's complement of seed in [0, 2^64)); queries: the
# first and one-past-last query built; compute dtype = theta's dtype (float32 or float64).
BANK_SCHEMA = (f"(Tensor x, Tensor theta, Tensor? mask, int seed, int q, float beta, str directions, "
               f"bool antithetic, int query_start, int query_stop, {PERTURB_OPTIONS_SCHEMA}) -> Tensor")
# out[i] = sum_{j=1..q} weights[j-1] * u_j[i] (segmented: weights[j-1] / Delta_j[i]), j ascending;
# out has weights' dtype (float32 or float64) and `numel` elements.
COMBINE_SCHEMA = "(Tensor weights, int seed, int numel, str directions) -> Tensor"


def DEFAULT_SCALE(directions: str, numel: int) -> float:
    """The estimate's scale b when none is given: d for sphere directions (BAR: E[d u u^T] = I),
    1 for gaussian (E[z z^T] = I) and segmented (SPSA divides by Delta)."""
    return float(numel) if directions == "sphere" else 1.0

# masked_perturb's input-transform options the bank passes through, with masked_perturb's defaults.
PERTURB_DEFAULTS = dict(out_size=None, resize=None, resize_mode="bilinear", offset=None, activation="none",
                        blend="add", normalize="after", mean=None, std=None, clamp=None, mask_scale=1)
