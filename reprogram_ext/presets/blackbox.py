"""Black-box presets: BAR (Tsai et al. 2020) and BlackVIP (Oh et al. 2023), trained from queries only.

Each returns a ``BlackBoxRecipe``: the input transformation, the output mapping, the zeroth-order
estimator, the optimiser (a factory ``params -> Optimizer``) and the loss, as the original code runs
them; ``recipe.reprogrammer(query)`` builds the ``BlackBoxReprogrammer`` (docs/blackbox.md).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blackbox.bar import MLM_NUM, TOP, bar_focal_loss, bar_frequency_mapping
from ..blackbox.coordinator import CLIP_MEAN, CLIP_STD, Coordinator, CoordinatorDecoder
from ..blackbox.optim import BarAdam, SpsaGC
from ..blackbox.reprogrammer import BlackBoxReprogrammer
from ..blackbox.zo_estimator import ZOEstimator
from ..nn.label_mapping import LabelMapping
from ..nn.layer_args import Size
from ..nn.text_head import CLIP_INIT_LOGIT_SCALE, TextHeadMapping
from . import IMAGENET_MEAN, IMAGENET_STD  # presets/__init__.py imports this module after defining them
from .source import takes_source


class BlackBoxRecipe(NamedTuple):
    """The parts of one black-box method; ``reprogrammer(query, **kwargs)`` assembles them."""

    input_transform: nn.Module
    output_mapping: nn.Module
    estimator: ZOEstimator
    optimizer: Callable
    loss: Callable

    def reprogrammer(self, query: Callable, **kwargs) -> BlackBoxReprogrammer:
        """``BlackBoxReprogrammer(query, input_transform, output_mapping, estimator, optimizer=, loss=, **kwargs)``
        (``budget=``, ``seed=``, ``inputs_per_call=``, ``as_numpy=``, ``process_group=`` pass through)."""
        return BlackBoxReprogrammer(query, self.input_transform, self.output_mapping, self.estimator,
                                    optimizer=self.optimizer, loss=self.loss, **kwargs)


@torch.no_grad()
def fit_bar_mapping(reprogrammer: BlackBoxReprogrammer, x: torch.Tensor, y: torch.Tensor, *, top: int = TOP,
                    batch: int = 256) -> torch.Tensor:
    """BAR's pre-pass: query ``x`` once with the current program and set the mapping's ``index [T, k]``
    from the top-``top`` statistics of each class (``bar_frequency_mapping``); costs ``len(x)`` queries."""
    mapping = reprogrammer.output_mapping
    if not isinstance(mapping, LabelMapping) or not hasattr(mapping, "index"):
        raise TypeError("fit_bar_mapping: the reprogrammer's output_mapping must be a sparse LabelMapping (index [T, k])")
    scores = torch.cat([reprogrammer.source_scores(x[i:i + batch]) for i in range(0, len(x), batch)])
    probs = scores.softmax(1) if mapping.pre == "softmax" else scores
    index = bar_frequency_mapping(probs, y, mapping.num_target, k=mapping.k, top=top)
    mapping.index.copy_(index.to(mapping.index.device))
    return mapping.index


@takes_source()
def bar_black_box(num_target: int, *, input_size: Size = 200, output_size: Size = 299, num_source: int = 1000,
                  k: Optional[int] = None, channels: int = 3, mean=None, std=None, activation: str = "tanh",
                  prompt_over_input: bool = True, generator: Optional[torch.Generator] = None,
                  backend: str = "auto", mapping: str = "bar",
                  q: int = 1, beta: float = 0.1, scale: Optional[float] = None, lr: float = 0.01,
                  lr_schedule: str = "constant", loss: str = "focal", clip=None) -> BlackBoxRecipe:
    """BAR, black-box (yunyuntsai/Black-box-Adversarial-Reprogramming): RGE, TF1 Adam, focal loss, top-30 mapping.

    Also ``presets.bar(..., black_box=True, **options)``. Input transformation: that of ``presets.bar``
    with the same arguments (the white-box preset).
    Estimator: RGE with ``q = 1`` random direction on the unit sphere per step and ``β = 0.1``
    (``q_batch = num_rand_vec = 1``, ``self.beta = 0.1``), ``ĝ = (b/q) Σ_j ((f_j − f_0)/β) u_j`` with
    ``b = d`` (``b_constant = d``); each step costs ``(q + 1)·B`` queries. Optimiser: ``BarAdam``
    (``AdamOptimizer(0.01)``; ``lr_schedule="polynomial"`` for the decay the original defines but does
    not use). Loss ``"focal"``: its ``multi_focal_loss(γ = 4, α = 0.8)`` on the mapped probabilities
    (``"cross_entropy"``: the log of the mapped probability). Output ``mapping="bar"``: its multi-label
    mapping, ``k = 6`` sources per target chosen by ``fit_bar_mapping`` (top-30 statistics of the
    queried training set) and averaged, ``out[:, t] = mean_j softmax(logits)[:, index[t, j]]``;
    ``mapping="random"``: the white-box preset's random ``k``-to-1 mapping (``k = 1`` by default).
    ``clip``: ZIP's norm clipping of ``ĝ`` (``"sqrt_d"`` or a number), off in BAR.

    Deliberate differences from the original code (docs/blackbox.md): its released training step
    applies TensorFlow's *white-box* gradient (``tf.gradients``; the line feeding the estimate is
    commented out) — here the update uses the zeroth-order estimate, as the paper and a black box
    require; its mapping is written for two classes and averages the wrong entries (``blackbox/bar.py``).
    """
    from . import bar  # the white-box preset, imported late: presets/__init__.py defines it

    if mapping not in ("bar", "random"):
        raise ValueError(f"bar_black_box: mapping must be 'bar' or 'random', got {mapping!r}")
    if loss not in ("focal", "cross_entropy"):
        raise ValueError(f"bar_black_box: loss must be 'focal' or 'cross_entropy', got {loss!r}")
    k = (MLM_NUM if mapping == "bar" else 1) if k is None else k
    white = bar(num_target, input_size=input_size, output_size=output_size, num_source=num_source, k=k,
                channels=channels, mean=mean, std=std, activation=activation, prompt_over_input=prompt_over_input,
                mapping="random", generator=generator, backend=backend)
    out_map = white.output_mapping
    if mapping == "bar":
        out_map = LabelMapping(num_source, num_target, "frequency", k=k, pre="softmax", reduce="mean", backend=backend)
    estimator = ZOEstimator("rge", q=q, beta=beta, directions="sphere", scale=scale)
    BarAdam([nn.Parameter(torch.zeros(1))], lr=lr, lr_schedule=lr_schedule, clip=clip)  # check the arguments now
    loss_fn = bar_focal_loss if loss == "focal" else _probability_nll
    return BlackBoxRecipe(white.input_transform, out_map, estimator,
                          lambda params: BarAdam(params, lr=lr, lr_schedule=lr_schedule, clip=clip), loss_fn)


def _probability_nll(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``−mean_b log p[b, y_b]`` on mapped probabilities (clamped at 1e-12)."""
    return F.nll_loss(probs.clamp_min(1e-12).log(), target)


def _feature_size(encoder: nn.Module, image_size: int) -> int:
    with torch.no_grad():
        z = encoder.eval()(torch.zeros(1, 3, image_size, image_size))
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"blackvip: the encoder must map images [N, 3, H, W] to features [N, z_dim], got "
                         f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
    return int(z.shape[1])


def blackvip(num_target: int, *, encoder: nn.Module, z_dim: Optional[int] = None, src_dim: int = 1568,
             grid: int = 7, arch: str = "vit", eps: float = 1.0, mean: Sequence[float] = CLIP_MEAN,
             std: Sequence[float] = CLIP_STD, text_features: Optional[torch.Tensor] = None,
             logit_scale: Optional[float] = None, num_source: Optional[int] = None, q: int = 5, a: float = 0.01,
             c: float = 0.01, o: float = 1.0, alpha: float = 0.4, gamma: float = 0.1, momentum: float = 0.9,
             gc: bool = True, clip=None) -> BlackBoxRecipe:
    """BlackVIP (changdaeoh/BlackVIP, ``trainers/blackvip.py``): a coordinator trained by SPSA-GC.

    Input transformation: ``Coordinator(encoder, CoordinatorDecoder(z_dim, src_dim, grid=grid, arch=arch),
    eps=eps)``, ``clip_c(x + ε·dec([encoder(x), φ]))`` on normalised images of ``32·grid`` pixels (224
    for ``grid = 7``); ``encoder`` is any frozen module returning ``[N, z_dim]`` features (``z_dim``
    found by one call when not given). Estimator: SPSA, ``q = SP_AVG = 5`` pairs θ ± c_k·Δ_j with Δ
    segmented uniform on ±[0.5, 1], ``ĝ = (1/q) Σ_j (f⁺ − f⁻)/(2 c_k) Δ_j⁻¹``; ``2q·B`` queries per
    step. Optimiser: ``SpsaGC`` with its ``SPSA_PARAMS`` ``[o, c, a, α, γ] = [1.0, 0.01, 0.01, 0.4,
    0.1]`` and ``MOMS = 0.9`` (``gc=False``: plain SPSA; ``clip="sqrt_d"`` with ``gc=False``: ZIP).
    Loss: cross entropy. Output: the black box's answer is CLIP's: with ``text_features [T, D]`` it
    returns image features and ``TextHeadMapping(text_features, logit_scale)`` makes the logits
    (``logit_scale``: the model's log scale, fixed; ``None``: CLIP's initial ``ln(1/0.07)``, learned
    only by white-box training); without, it returns class scores and the mapping is the identity over
    the first ``num_target`` of its ``num_source`` (default ``num_target``) scores.

    Deliberate differences: BlackVIP runs the queries under ``torch.autocast`` (fp16), which rounds
    the ±c_k differences away (its issue #2); here the canvases are float32. The encoder is passed in
    (BlackVIP loads ViT-MAE-base from Hugging Face).
    """
    z_dim = _feature_size(encoder, 32 * grid) if z_dim is None else z_dim
    coordinator = Coordinator(encoder, CoordinatorDecoder(z_dim, src_dim, grid=grid, arch=arch), eps=eps, mean=mean,
                              std=std)
    if text_features is not None:
        fixed = CLIP_INIT_LOGIT_SCALE if logit_scale is None else logit_scale
        out_map = TextHeadMapping(text_features, fixed, learn_scale=False)
    else:
        out_map = LabelMapping(num_source or num_target, num_target, "identity")
    SpsaGC([nn.Parameter(torch.zeros(1))], a=a, c=c, o=o, alpha=alpha, gamma=gamma, momentum=momentum, gc=gc,
           clip=clip)  # check the arguments now
    return BlackBoxRecipe(coordinator, out_map, ZOEstimator("spsa", q=q, beta=None, directions="segmented"),
                          lambda params: SpsaGC(params, a=a, c=c, o=o, alpha=alpha, gamma=gamma, momentum=momentum,
                                                gc=gc, clip=clip), F.cross_entropy)


__all__ = ["BlackBoxRecipe", "bar_black_box", "blackvip", "fit_bar_mapping"]
