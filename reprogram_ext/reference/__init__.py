"""Pure-PyTorch reference implementations (test oracle and eager benchmark baseline)."""
from .label_map import label_map_reference, mapped_cross_entropy_reference
from .masked_perturb import masked_perturb_reference

__all__ = ["masked_perturb_reference", "label_map_reference", "mapped_cross_entropy_reference"]
