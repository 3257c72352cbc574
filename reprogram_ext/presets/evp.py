"""EVP (Wu et al., TMLR 2024, UCSC-VLAA/EVP): the ``presets.evp`` constructor and EVP's update rule."""
from __future__ import annotations

from typing import Optional

import torch

from ..nn.evp_prompt import EVPPrompt
from ..nn.layer_args import Size
from ..nn.text_head import TextHeadMapping
from .clip_constants import CLIP_LOGIT_SCALE, CLIP_MEAN, CLIP_STD
from .recipe import Recipe
from .source import takes_source


class EVPOptimizer(torch.optim.Optimizer):
    """EVP's update of the program (its ``train_with_prompt``), not an optimizer of torch's:

    ``g = delta.grad / batch_size`` (the batch mean of the per-sample gradients: EVP repeats the
    program over the batch and averages the copies' gradients; ``delta.grad`` of a shared program
    is their sum), then ``delta ← delta − lr · M ⊙ g / (‖g‖₂ + eps)`` with ``M`` the prompt's
    border mask and ``‖g‖₂`` over ALL of ``g``, the inside of the border included (EVP normalises
    before masking). EVP: ``lr = 70`` with ``CosineAnnealingLR(T_max=epochs)`` stepped once per
    epoch (torch's schedulers work on this optimizer), ``eps = 1e-10``, no momentum, no decay.
    Call ``step(batch_size=B)`` after ``loss.backward()`` on a batch of ``B`` samples.
    """

    def __init__(self, prompt: EVPPrompt, lr: float = 70.0, eps: float = 1e-10) -> None:
        if not isinstance(prompt, EVPPrompt):
            raise TypeError(f"EVPOptimizer: prompt must be an nn.EVPPrompt, got {type(prompt).__name__}")
        for arg, value in (("lr", lr), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ValueError(f"EVPOptimizer: {arg} must be a finite float >= 0, got {value!r}")
        super().__init__([prompt.delta], dict(lr=float(lr), eps=float(eps)))
        self.prompt = prompt

    @torch.no_grad()
    def step(self, closure=None, *, batch_size: int = 1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"EVPOptimizer.step: batch_size must be a positive int, got {batch_size!r}")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for delta in group["params"]:
                if delta.grad is None:
                    continue
                g = delta.grad / batch_size
                scaled = g / (torch.linalg.vector_norm(g) + group["eps"])
                delta.sub_(scaled * self.prompt.mask.to(g.dtype) * group["lr"])
        return loss


@takes_source()
def evp(text_features: torch.Tensor, *, input_size: Size = 32, image_size: Size = 164, output_size: Size = 224,
        prompt_size: int = 30, channels: int = 3, mean=CLIP_MEAN, std=CLIP_STD, logit_scale: float = CLIP_LOGIT_SCALE,
        resize_mode: str = "bicubic", flip: bool = True, generator: Optional[torch.Generator] = None,
        backend: str = "auto") -> Recipe:
    """EVP: ``N(pad(resize(flip(x), 224 − 2p)) + δ ⊙ M)`` into CLIP, as UCSC-VLAA/EVP's ``main.py`` does.

    Input (``nn.EVPPrompt``): a random left-right flip per sample in training (EVP's input
    diversity), a bicubic resize to ``image_size = 164``, zero padding to 224 (the image at
    ``int((224 − 164)/2) = 30``), the program ``δ`` (zeros at the start) added, CLIP's
    normalisation. ``M`` is 1 on a border ``prompt_size = 30`` wide: EVP's update
    (``presets.EVPOptimizer``, ``δ ← δ − lr·M⊙g/(‖g‖ + 1e-10)``, lr 70, cosine over the epochs)
    moves only the border.

    Output (``nn.TextHeadMapping``): ``exp(s)·normalize(f)·normalize(text_features)ᵀ`` on the CLIP
    image features ``f``; ``text_features [T, D]`` are CLIP's text embeddings of "this is a photo of
    a {class}" (EVP's template), ``s = logit_scale`` fixed (the frozen CLIP's, ln 100). The source
    model is CLIP's image encoder (``encode_image``); train with cross-entropy on the output.

    Deliberate differences from the original code:
      - the original resizes 8-bit PIL images (PIL's bicubic, a = −0.5, rounded to 8 bits, then its
        ``RandomCrop(164)``, a no-op on a square image); here the tensor is resized by
        ``F.interpolate(bicubic, align_corners=False)`` (a = −0.75) and clamped to [0, 1]; a
        non-square input is resized to ``image_size`` as it is (the original resizes its shorter
        side to 164 and crops a random 164² window, at the centre in testing);
      - the original needs ``224 − image_size`` even (else its padded image is one pixel short of
        the mask); here an odd difference puts the extra pixel at the bottom / right;
      - the non-CLIP variant (``main.py --non_CLIP``: source logits at the per-class mode of the
        un-prompted argmax predictions) is not built.
    """
    prompt = EVPPrompt(input_size, image_size, output_size, prompt_size=prompt_size, channels=channels, mean=mean,
                       std=std, resize_mode=resize_mode, flip=flip, generator=generator, backend=backend)
    return Recipe(prompt, TextHeadMapping(text_features, logit_scale))
