"""Pure-PyTorch reference implementations (test oracle and eager benchmark baseline)."""
from ..ops.label_map.reference import label_map_reference, mapped_cross_entropy_reference
from ..ops.masked_perturb.reference import masked_perturb_reference

__all__ = ["masked_perturb_reference", "label_map_reference", "mapped_cross_entropy_reference"]
from ..ops.vocab_map.reference import vocab_map_reference  # noqa: E402

__all__ += ["vocab_map_reference"]
