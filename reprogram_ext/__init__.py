"""reprogram_ext: fused kernels for model reprogramming (input prompts and output label mapping).

Public API (see SPEC): ``masked_perturb``, ``label_map``, ``mapped_cross_entropy``, ``backends``;
``reprogram_ext.mapping`` (choosing a label mapping), ``reprogram_ext.nn`` (drop-in layers),
``reprogram_ext.presets`` (one recipe per paper); ``reprogram_ext.reference`` holds the
pure-PyTorch oracle; ``python -m reprogram_ext.demo`` runs the end-to-end demo.
"""
from . import _extension  # noqa: F401  (loads the compiled op library when it was built)
from . import mapping, nn, presets
from . import _label_map_registration, _masked_perturb_registration
from .backends import backends, empty_cpu_cache
from .label_map import label_map, mapped_cross_entropy
from .masked_perturb import masked_perturb

if _extension.LOAD_ERROR is None:
    _masked_perturb_registration.register_compiled()
    _label_map_registration.register_compiled()

__all__ = ["masked_perturb", "label_map", "mapped_cross_entropy", "backends", "empty_cpu_cache", "mapping", "nn", "presets"]
