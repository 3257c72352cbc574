"""reprogram_ext: fused kernels for model reprogramming (input prompts and output label mapping).

Public API (see SPEC): ``masked_perturb``, ``label_map``, ``mapped_cross_entropy``, ``backends``;
``reprogram_ext.reference`` holds the pure-PyTorch oracle.
"""
from . import _extension  # noqa: F401  (loads the compiled op library when it was built)
from . import _label_map_registration, _masked_perturb_registration
from .backends import backends
from .label_map import label_map, mapped_cross_entropy
from .masked_perturb import masked_perturb

if _extension.LOAD_ERROR is None:
    _masked_perturb_registration.register("reprogram_ext::masked_perturb_forward",
                                          "reprogram_ext::masked_perturb_backward")
    _label_map_registration.register_compiled()

__all__ = ["masked_perturb", "label_map", "mapped_cross_entropy", "backends"]
