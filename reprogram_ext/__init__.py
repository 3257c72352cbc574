"""reprogram_ext: fused kernels for model reprogramming (input prompts and output label mapping).

Public API (docs/): ``masked_perturb``, ``label_map``, ``mapped_cross_entropy``, ``tokens_to_canvas``,
``vocab_map``, ``backends``, ``empty_cpu_cache``; ``reprogram_ext.blackbox`` (zeroth-order training through
queries), ``reprogram_ext.mapping`` (choosing a label mapping), ``reprogram_ext.nn``
(drop-in layers), ``reprogram_ext.presets`` (one recipe per paper); ``reprogram_ext.reference``
holds the pure-PyTorch oracle; ``python -m reprogram_ext.demo`` runs the end-to-end demo.
Layout: one package per op under ``reprogram_ext/ops/`` (README, "Layout").
"""
__version__ = "0.1.0"  # the one place of the version (pyproject.toml reads it)

from . import _extension  # noqa: F401  (loads the compiled op library when it was built)
from . import blackbox, mapping, nn, presets
from .backend_registry import backends
from .ops.label_map import autograd as _label_map_autograd
from .ops.label_map import label_map, mapped_cross_entropy
from .ops.masked_perturb import autograd as _masked_perturb_autograd
from .ops.masked_perturb import masked_perturb
from .ops.tokens_to_canvas import autograd as _tokens_to_canvas_autograd
from .ops.tokens_to_canvas import tokens_to_canvas
from .ops.vocab_map import autograd as _vocab_map_autograd
from .ops.vocab_map import vocab_map
from .runtime import empty_cpu_cache

if _extension.LOAD_ERROR is None:
    _masked_perturb_autograd.register_compiled()
    _label_map_autograd.register_compiled()
    _tokens_to_canvas_autograd.register_compiled()
    _vocab_map_autograd.register_compiled()

__all__ = ["__version__", "masked_perturb", "label_map", "mapped_cross_entropy", "tokens_to_canvas", "vocab_map",
           "backends", "empty_cpu_cache", "blackbox", "mapping", "nn", "presets"]
