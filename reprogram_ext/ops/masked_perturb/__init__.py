"""masked_perturb: the fused input transformation (docs/ops/masked_perturb.md)."""
from .api import masked_perturb

__all__ = ["masked_perturb"]
