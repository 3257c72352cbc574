"""Pure-PyTorch reference implementations (test oracle and eager benchmark baseline)."""
from .masked_perturb import masked_perturb_reference

__all__ = ["masked_perturb_reference"]
