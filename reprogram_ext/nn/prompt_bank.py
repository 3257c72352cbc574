"""``PaddingPromptBank``: V padding prompts applied to every sample at once (DVP's one prompt per group)."""
from __future__ import annotations

import torch
from torch import nn

from .layer_args import Size, check_input, norm_constants, region_mask, register_mask, spatial_size
from ..ops.masked_perturb import masked_perturb


class PaddingPromptBank(nn.Module):
    """``out[v, b] = N(pad(x_b) + act(delta_v) ⊙ M)`` for each of ``num_prompts`` programs ``delta_v``.

    The V programs ``delta [V, channels, *output_size]`` share the border mask ``M`` (buffer
    ``mask [1, *output_size]``: 0 over the input centred at ``(out − in + 1) // 2``, 1 on the
    border) and are applied in ONE ``masked_perturb(..., bank=True)`` call, without copies of ``x``.
    The output is flattened to ``[V·B, channels, *output_size]`` (program-major: rows ``v·B .. v·B +
    B − 1`` hold program ``v``), so that a source model takes it as one batch; ``flatten=False``
    keeps ``[V, B, ...]``. ``N``: ``(z − mean_c) / std_c`` when mean/std are given.
    """

    def __init__(self, input_size: Size, output_size: Size = 224, *, num_prompts: int, channels: int = 3,
                 activation: str = "sigmoid", mean=None, std=None, flatten: bool = True, backend: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or num_prompts < 1:
            raise ValueError(f"{name}: num_prompts must be a positive int, got {num_prompts!r}")
        self.input_size = spatial_size(input_size, "input_size", name, 2)
        self.output_size = spatial_size(output_size, "output_size", name, 2)
        self.offset = tuple((o - i + 1) // 2 for o, i in zip(self.output_size, self.input_size))
        self.num_prompts, self.channels, self.activation = num_prompts, channels, activation
        self.flatten, self.backend = flatten, backend
        self.mean, self.std = norm_constants(mean, std, channels, name)
        self.delta = nn.Parameter(torch.zeros(num_prompts, channels, *self.output_size, device=device, dtype=dtype))
        register_mask(self, region_mask(self.output_size, [self.offset], self.input_size, 0.0, device=device), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size, type(self).__name__)
        out = masked_perturb(x, self.delta, self.mask, offset=self.offset, activation=self.activation,
                             normalize="after", mean=self.mean, std=self.std, bank=True, backend=self.backend)
        return out.flatten(0, 1) if self.flatten else out

    def extra_repr(self) -> str:
        norm = ", normalized" if self.mean is not None else ""
        return (f"input_size={self.input_size}, output_size={self.output_size}, num_prompts={self.num_prompts}, "
                f"offset={self.offset}, channels={self.channels}, activation={self.activation!r}{norm}, "
                f"backend={self.backend!r}")
