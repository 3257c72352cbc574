"""perturbation_bank: seeded query banks and the directions' weighted sum of zeroth-order estimates
(docs/blackbox.md)."""
from .api import combine_directions, perturbation_bank

__all__ = ["perturbation_bank", "combine_directions"]
