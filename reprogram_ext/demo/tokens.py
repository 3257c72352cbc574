"""Reprogram the frozen digit CNN to find motifs in DNA-like token sequences (tokens_to_canvas).

1. Source: the demo's small CNN trained on digits 0-4 (32x32 grey canvas; demo/source_model.py,
   weights cached as the digits demo caches them).
2. Target: random sequences of L = 16 tokens over {A, C, G, T} with one of 4 motifs (length 3)
   planted at a random place inside one grid row; the class is which motif (chance 0.25).
3. Reprogramming: each token is a learned 8x8 patch (``TokenCanvasPrompt``: tanh patches on a 4x4
   grid filling the canvas, plus a trainable full-canvas program), the CNN stays frozen, the
   label mapping is ILM-VP's iterative frequency mapping over its 5 source classes.
4. Report test accuracy against chance and against a linear probe (logistic regression on the
   frozen CNN's features of the same canvas with fixed, untrained patches); save the learned
   patches as token_patches.png.

Run: ``python -m reprogram_ext.demo.tokens`` (``--quick`` for the short run the tests use).
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from reprogram_ext.demo import session, source_model, training
from reprogram_ext.nn import LabelMapping, Reprogrammer, TokenCanvasPrompt

ALPHABET = "ACGT"
MOTIFS = ("GAT", "CCA", "TGC", "AAG")
LENGTH, GRID, PATCH = 16, 4, 8  # 4 x 4 cells of 8 x 8 = the source's 32 x 32 canvas
SOURCE_CLASSES = source_model.SOURCE_CLASSES


def motif_task(n: int, generator: torch.Generator):
    """``n`` sequences ``[n, LENGTH]`` of token ids and their motif class ``[n]``."""
    seqs = torch.randint(0, 4, (n, LENGTH), generator=generator)
    labels = torch.randint(0, len(MOTIFS), (n,), generator=generator)
    ids = torch.tensor([[ALPHABET.index(ch) for ch in m] for m in MOTIFS])
    row = torch.randint(0, GRID, (n,), generator=generator)
    col = torch.randint(0, GRID - ids.shape[1] + 1, (n,), generator=generator)
    start = row * GRID + col
    for i in range(n):
        seqs[i, start[i]:start[i] + ids.shape[1]] = ids[labels[i]]
    return seqs, labels


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run, as the tests do")
    parser.add_argument("--output", default="demo-output", help="where the PNG, results and source weights go")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def save_patches(path: str, table: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, table.shape[0], figsize=(2.2 * table.shape[0], 2.6))
    for ax, patch, ch in zip(axes, torch.tanh(table[:, 0]).detach(), ALPHABET):
        ax.imshow(patch.cpu(), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"token {ch}: tanh(patch)", fontsize=9)
        ax.axis("off")
    fig.suptitle("learned token patches (tokens_to_canvas)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    gen = session.begin(args)
    start = time.perf_counter()
    n_train, n_test, epochs = (1200, 400, 8) if args.quick else (4000, 1000, 20)
    # the digits demo's quick source, shared through its cache
    model = source_model.digits_source(args.output, args.seed, gen, epochs=3, copies=2)
    x_train, y_train = motif_task(n_train, gen)
    x_test, y_test = motif_task(n_test, gen)
    num_classes = len(MOTIFS)
    chance = 1.0 / num_classes

    fixed = TokenCanvasPrompt(4, PATCH, GRID, channels=1, init="randn", init_scale=1.0)
    probe = training.linear_probe(source_model.features(model), fixed(x_train).detach(), y_train,
                                  fixed(x_test).detach(), y_test, num_classes)

    prompt = TokenCanvasPrompt(4, PATCH, GRID, channels=1, program=True, init="randn", init_scale=0.5)
    mapping = LabelMapping(SOURCE_CLASSES, num_classes, "iterative")
    rp = Reprogrammer(model, prompt, mapping)
    with torch.no_grad():
        mapping.fit(rp.source_logits(x_train), y_train)
    mapping_only = training.accuracy(rp, x_test, y_test)
    training.train_reprogrammer(rp, x_train, y_train, epochs=epochs, lr=0.05, generator=gen, label="token canvas")
    acc = training.accuracy(rp, x_test, y_test)
    save_patches(os.path.join(args.output, "token_patches.png"), prompt.table)
    results = {"chance": chance, "mapping_only": mapping_only, "reprogrammed": acc, "linear_probe": probe,
               "seconds": time.perf_counter() - start}
    session.save_results(results, args.output, "tokens_results.json")
    print(f"\nmotif detection on DNA-like sequences ({n_test} test sequences, {num_classes} motifs) through the "
          "frozen digits-0-4 CNN")
    print(f"  chance                                   {chance:.3f}")
    print(f"  label mapping only (untrained patches)   {mapping_only:.3f}")
    print(f"  reprogrammed (token patches + program)   {acc:.3f}")
    print(f"  linear probe on frozen features          {probe:.3f}")
    print(f"saved {os.path.join(args.output, 'token_patches.png')} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
