"""Black-box reprogramming demo: the frozen digits-0-4 CNN learns digits 5-9 through its probabilities only.

The source CNN of the main demo (``python -m reprogram_ext.demo``, weights cached in the same place)
is wrapped as a black box that returns predicted probabilities and refuses gradients
(``RefusesGradients``). A full-canvas prompt (the 16x16 target digit centred on the 32x32 canvas,
``delta`` added over the whole canvas, d = 1024) is trained by ``BlackBoxReprogrammer`` with BAR's
estimator (RGE: directions on the unit sphere, ``b = d``, β = 0.1) and BAR's optimiser (TensorFlow-1
Adam, here at lr 0.02), from the queries alone. The label mapping is ILM-VP's one-to-one frequency mapping, fitted once from the black box's
answers on the training set with the untrained prompt (those queries are counted too).

Reported: test accuracy against chance, against the mapping alone, and against the same prompt
trained white-box (gradients through the CNN), with the number of queries spent. Saved:
``blackbox_prompt.png`` (the learned prompts, a reprogrammed input, the loss curve) and
``blackbox_results.json`` in ``--output``.

Run: ``python -m reprogram_ext.demo.blackbox`` (a few minutes on 2 CPU cores) or ``--quick``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reprogram_ext.blackbox.optim import BarAdam  # noqa: E402
from reprogram_ext.blackbox.query import RefusesGradients  # noqa: E402
from reprogram_ext.blackbox.reprogrammer import BlackBoxReprogrammer  # noqa: E402
from reprogram_ext.blackbox.zo_estimator import ZOEstimator  # noqa: E402
from reprogram_ext.demo import data, session, source_model, training  # noqa: E402
from reprogram_ext.demo.progress import ProgressBar  # noqa: E402
from reprogram_ext.nn import LabelMapping, PaddingPrompt, Reprogrammer  # noqa: E402

NUM_CLASSES = 5
DEFAULT_OUTPUT = "demo-output"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute of training), as CI does")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="where the PNG, results and source weights go")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--q", type=int, default=10, help="random directions per step (default 10)")
    parser.add_argument("--epochs", type=int, default=None, help="black-box epochs (default 25; --quick 6)")
    return parser.parse_args(argv)


def probability_nll(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``−mean log p[y]`` on the mapped probabilities."""
    return F.nll_loss(probs.clamp_min(1e-12).log(), target)


def make_prompt() -> PaddingPrompt:
    """The full-canvas prompt ``pad(x) + delta`` (delta starts at 0: the plain padded digit)."""
    return PaddingPrompt(data.TARGET_SIZE, data.CANVAS, channels=1, activation="none", prompt_over_input=True)


def train_black_box(rp: BlackBoxReprogrammer, x, y, *, epochs: int, batch: int, generator) -> None:
    for epoch in range(epochs):
        bar = ProgressBar((len(x) + batch - 1) // batch, f"black-box {epoch + 1}/{epochs}")
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            out = rp.step(x[idx], y[idx])
            bar.update(loss=out["loss"], queries=rp.queries)
        bar.close()


def save_picture(path: str, panels, losses, steps_per_epoch: int) -> None:
    """Learned prompts (row 1), reprogrammed inputs (row 2) and the black-box loss curve (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3.2 * len(panels) + 4.5, 6.4))
    grid = fig.add_gridspec(2, len(panels) + 1, width_ratios=[1] * len(panels) + [1.4])
    for col, (title, prompt, example) in enumerate(panels):
        for row, (image, caption) in enumerate(((prompt, "learned prompt delta"),
                                                (example, "a reprogrammed target input"))):
            ax = fig.add_subplot(grid[row, col])
            im = ax.imshow(image.detach().float().cpu(), cmap="gray")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"{title}\n{caption}" if row == 0 else caption, fontsize=9)
            ax.axis("off")
    ax = fig.add_subplot(grid[:, -1])
    steps = torch.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.6, alpha=0.5, label="loss of each step (at θ)")
    smooth = torch.tensor(losses).unfold(0, steps_per_epoch, 1).mean(1) if len(losses) >= steps_per_epoch else None
    if smooth is not None:
        ax.plot(steps[steps_per_epoch - 1:], smooth, lw=1.8, label="mean over an epoch")
    ax.set_xlabel("zeroth-order step")
    ax.set_ylabel("training loss (−log p of the mapped class)")
    ax.set_title("black-box training loss", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    gen = session.begin(args)
    start = time.perf_counter()
    source_epochs, copies, white_epochs = (3, 2, 6) if args.quick else (4, 4, 15)
    q, epochs, batch = args.q, args.epochs or (6 if args.quick else 25), 32
    model = source_model.digits_source(args.output, args.seed, gen, epochs=source_epochs, copies=copies)
    x_train, y_train, x_test, y_test = data.target_task(gen)
    chance = 1.0 / NUM_CLASSES

    black_box = RefusesGradients(model)  # probabilities only, no gradient
    prompt = make_prompt()
    mapping = LabelMapping(NUM_CLASSES, NUM_CLASSES, "frequency", pre="none")
    rp = BlackBoxReprogrammer(black_box, prompt, mapping, ZOEstimator("rge", q=q, beta=0.1),
                              optimizer=lambda params: BarAdam(params, lr=0.02), loss=probability_nll, seed=args.seed)
    mapping.fit(rp.source_scores(x_train), y_train)  # FLM from the black box's answers (counted queries)
    mapping_only = training.accuracy(rp, x_test, y_test)
    queries_before = rp.queries
    train_black_box(rp, x_train, y_train, epochs=epochs, batch=batch, generator=gen)
    training_queries = rp.queries - queries_before
    black_acc = training.accuracy(rp, x_test, y_test)

    white_prompt = make_prompt()
    white_map = LabelMapping(NUM_CLASSES, NUM_CLASSES, "iterative")
    white = Reprogrammer(model, white_prompt, white_map)
    with torch.no_grad():
        white_map.fit(white.source_logits(x_train), y_train)
    training.train_reprogrammer(white, x_train, y_train, epochs=white_epochs, lr=0.05, generator=gen, label="white-box")
    white_acc = training.accuracy(white, x_test, y_test)

    with torch.no_grad():
        panels = [(name, p.delta[0], p(x_test[:1])[0, 0])
                  for name, p in (("black-box (queries only)", prompt), ("white-box (gradients)", white_prompt))]
    save_picture(os.path.join(args.output, "blackbox_prompt.png"), panels, rp.history,
                 (len(x_train) + batch - 1) // batch)
    results = {"chance": chance, "mapping_only": mapping_only, "black_box": black_acc, "white_box": white_acc,
               "training_queries": training_queries, "total_queries": rp.queries, "q": q, "epochs": epochs,
               "steps": rp.steps, "train_samples": len(x_train), "seconds": time.perf_counter() - start}
    session.save_results(results, args.output, "blackbox_results.json")

    print(f"\ntarget task: digits 5-9 at 16x16 -> frozen digits-0-4 CNN seen through its probabilities "
          f"({len(x_test)} test images)")
    print(f"  chance                                   {chance:.3f}")
    print(f"  label mapping only (untrained prompt)    {mapping_only:.3f}")
    print(f"  black-box prompt (RGE q={q}, BAR's Adam)  {black_acc:.3f}   "
          f"{training_queries} training queries ({rp.steps} steps x {q + 1} x batch), {rp.queries} in all")
    print(f"  white-box prompt (gradients, ILM)        {white_acc:.3f}")
    print(f"saved {os.path.join(args.output, 'blackbox_prompt.png')} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
