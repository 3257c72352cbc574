"""The option vocabulary of masked_perturb, defined once for the front end, the reference, the
autograd and the Triton launcher (the C++ side: csrc/masked_perturb/options.h and activation.h).

Options travel to every kernel as their names (strings), never as numeric codes. The op schema
below is the compiled op's (csrc/schemas.cpp, checked equal by tests/test_masked_perturb.py) and the
Triton op's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

# activation name -> its formula on a tensor (the reference's; the kernels write the same).
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda d: d,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
}
BLENDS = ("add", "replace")
RESIZE_MODES = ("nearest", "bilinear")  # the user's choices; "none" means no resize in the canonical form
NORMALIZE = ("before", "after", "none")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The op's arguments after (x, delta, mask), in schema order.
OPTIONS_SCHEMA = ("int[] offsets, Tensor norm, int[] resized_size, str resize_mode, str activation, str blend, "
                  "str normalize, float[]? clamp, int mask_scale")
# bank (a prompt bank: delta [V, Cd, H, W], output [V * B, C, H, W]) is each schema's last argument,
# False by default, so that a call written without it still means what it did before banks existed.
FORWARD_SCHEMA = f"(Tensor x, Tensor delta, Tensor? mask, {OPTIONS_SCHEMA}, bool bank=False) -> Tensor"
BACKWARD_SCHEMA = (f"(Tensor grad_out, Tensor x, Tensor delta, Tensor? mask, {OPTIONS_SCHEMA}, bool[3] needs, "
                   "bool bank=False) -> (Tensor, Tensor, Tensor)")


@dataclass(frozen=True)
class PerturbOptions:
    """The non-tensor options in canonical (2-D) form.

    offsets: (oy, ox) of every copy; resized_size: (Hr, Wr) the input is resized to (its own size
    when resize_mode is "none"); normalize: "none" when no mean/std apply; clamp: (lo, hi) or None;
    bank: delta [V, Cd, H, W] is a prompt bank (each of the V programs applied to every sample: the
    op's output is [V * B, C, H, W], program v's outputs in rows v * B ... v * B + B - 1).
    """

    offsets: Tuple[Tuple[int, int], ...]
    resized_size: Tuple[int, int]
    resize_mode: str  # "none", "nearest" or "bilinear"
    activation: str
    blend: str
    normalize: str
    clamp: Optional[Tuple[float, float]]
    mask_scale: int
    bank: bool = False

    def option_args(self, norm: torch.Tensor) -> tuple:
        """The arguments in OPTIONS_SCHEMA order."""
        return ([v for pair in self.offsets for v in pair], norm, list(self.resized_size), self.resize_mode,
                self.activation, self.blend, self.normalize, None if self.clamp is None else list(self.clamp),
                self.mask_scale)

    def op_args(self, norm: torch.Tensor) -> tuple:
        """The forward op's arguments after (x, delta, mask): OPTIONS_SCHEMA's, then bank."""
        return self.option_args(norm) + (self.bank,)

    def backward_args(self, norm: torch.Tensor, needs) -> tuple:
        """The backward op's arguments after (grad_out, x, delta, mask): OPTIONS_SCHEMA's, needs, bank."""
        return self.option_args(norm) + (needs, self.bank)

    @classmethod
    def from_op_args(cls, offsets, norm, resized_size, resize_mode, activation, blend, normalize, clamp,
                     mask_scale, bank=False) -> "PerturbOptions":
        """The inverse of op_args (norm is not part of the options and is ignored)."""
        if len(offsets) % 2:
            raise ValueError(f"masked_perturb: offsets must hold (oy, ox) pairs, got {len(offsets)} values")
        pairs = tuple((int(offsets[i]), int(offsets[i + 1])) for i in range(0, len(offsets) - 1, 2))
        return cls(pairs, tuple(resized_size), resize_mode, activation, blend, normalize,
                   None if clamp is None else (float(clamp[0]), float(clamp[1])), int(mask_scale),
                   bool(bank))
