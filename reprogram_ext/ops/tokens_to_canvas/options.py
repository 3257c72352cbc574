"""The option vocabulary of tokens_to_canvas, defined once for the front end, the reference, the
autograd and the Triton launcher (the C++ side: csrc/tokens_to_canvas/options.h, which reuses
masked_perturb's activation list, csrc/masked_perturb/activation.h).

The op schemas below are the compiled ops' (csrc/schemas.cpp, checked equal by
tests/test_tokens_to_canvas.py) and the Triton ops'.

Canonical form (args.py): ``cells`` int64 ``[B, G]`` (the token of every grid cell, pads already
resolved), ``table [V, C, Ph, Pw]``, ``program [Bp, Cp, H, W]``, ``program_mask [Bm, Cm, H, W]``,
``base [Bb, Cb, H, W]`` (each optional, batch 1 or B, channels 1 or C), ``norm [4, C]`` in the
accumulation dtype = (mean, 1 / std, base_weight, patch_weight), ``geometry`` = (Gh, Gw, oy, ox)
and the canvas size (H, W).
"""
from __future__ import annotations

from ..masked_perturb.options import ACTIVATIONS, FLOAT_DTYPES  # the same activations as masked_perturb

NORMALIZE = ("after", "none")
PAD_RULES = ("repeat_last",)  # or an int token id, or None (no pad: L must equal the cell count)

# The op's arguments after (cells, table, program, program_mask, base), in schema order.
OPTIONS_SCHEMA = "Tensor norm, int[] geometry, int[] canvas, str activation, str normalize, float[]? clamp"
FORWARD_SCHEMA = (f"(Tensor cells, Tensor table, Tensor? program, Tensor? program_mask, Tensor? base, "
                  f"{OPTIONS_SCHEMA}) -> Tensor")
BACKWARD_SCHEMA = (f"(Tensor grad_out, Tensor cells, Tensor table, Tensor? program, Tensor? program_mask, "
                   f"Tensor? base, {OPTIONS_SCHEMA}, bool[3] needs) -> (Tensor, Tensor, Tensor)")

__all__ = ["ACTIVATIONS", "FLOAT_DTYPES", "NORMALIZE", "PAD_RULES", "OPTIONS_SCHEMA", "FORWARD_SCHEMA",
           "BACKWARD_SCHEMA"]
