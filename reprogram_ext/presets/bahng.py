"""Visual prompting (Bahng et al. 2022): the ``presets.bahng`` constructor."""
from __future__ import annotations

from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from ..nn.prompts import AdditivePrompt
from .recipe import Recipe
from .source import takes_source


@takes_source("image_size")
def bahng(num_target: int, *, image_size: Size = 224, kind: str = "pad", prompt_size: int = 30,
          random_location: bool = False, num_source: int = 1000, mapping: str = "identity", channels: int = 3,
          backend: str = "auto") -> Recipe:
    """Visual prompting (Bahng et al. 2022; hjbahng/visual_prompting ``models/prompters.py``): ``x + M ⊙ δ``.

    On the already normalised model-size image (224, CLIP's preprocessing). ``PadPrompter``: four
    ``N(0, 1)`` strips ``prompt_size`` wide; ``FixedPatchPrompter``: an ``N(0, 1)`` patch at ``(0, 0)``;
    ``RandomPatchPrompter``: the patch at a random location per forward.

    ``kind="pad"``: a learnable border ``prompt_size`` pixels wide (the paper's default: 30 on 224);
    ``kind="patch"``: a ``prompt_size`` square patch, fixed at the top-left or, with
    ``random_location=True``, at a random location per training step; ``kind="full"``: the whole image.
    Output: ``LabelMapping(method=mapping)`` (Bahng used CLIP's text head, ``nn.TextHeadMapping``; for
    a classifier the identity).

    Deliberate differences: the random patch location is drawn from all ``H - p + 1`` positions per
    axis (the original's ``np.random.choice(isize - psize)`` never reaches the last one), and only in
    training mode (the original also moves the patch at evaluation; here it sits at
    ``patch_location`` in eval mode, so evaluation is deterministic); the pad
    prompt is stored as one ``[3, H, W]`` program whose border is used (the same ``N(0, 1)`` values
    and gradients as the four strips).
    """
    prompt = AdditivePrompt(image_size, kind=kind, prompt_size=prompt_size, channels=channels,
                            random_location=random_location, backend=backend)
    return Recipe(prompt, LabelMapping(num_source, num_target, mapping, backend=backend))
