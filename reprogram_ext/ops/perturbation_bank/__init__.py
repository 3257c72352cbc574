"""perturbation_bank: seeded query banks and the directions' weighted sum of zeroth-order estimates
(docs/blackbox.md)."""
from ... import _extension
from . import autograd as _autograd
from .api import combine_directions, perturbation_bank

if _extension.has_kernel("perturbation_bank", "CPU") or _extension.has_kernel("perturbation_bank", "CUDA"):
    _autograd.register_compiled()

__all__ = ["perturbation_bank", "combine_directions"]
