"""Reprogram a frozen classifier of digits 0-4 into a classifier of digits 5-9.

1. Source: a small CNN learns digits 0-4 drawn at random sizes and places on a 32x32 canvas
   (scikit-learn's digits, shipped with the package: no download). Its weights are cached.
2. Target: digits 5-9 at 16x16. The CNN stays frozen; only an input prompt (on the 32x32 canvas)
   and an output label mapping (which source digit stands for which target digit) are trained:
   - "padding prompt" (ILM-VP): the digit padded into the canvas, sigmoid(delta) on the border;
   - "full-canvas prompt": delta added over the whole canvas, digit included;
   both with ILM-VP's iterative label mapping, re-mapped after each epoch from the counts gathered
   during that epoch's training pass.
3. Report target test accuracy against chance, against the label mapping alone (no trained prompt)
   and against a linear probe on the frozen CNN's features; save demo/output/prompt.png and
   demo/output/label_mapping.png.

Run: ``python -m reprogram_ext.demo`` or ``python reprogram_ext/demo/reprogram_digits.py`` from the repository root
(``--quick`` for a < 1 minute run).
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

from reprogram_ext.demo import data, plots, session, source_model, training  # noqa: E402
from reprogram_ext.mapping import count_matrix  # noqa: E402
from reprogram_ext.nn import LabelMapping, PaddingPrompt, Reprogrammer  # noqa: E402

NUM_CLASSES = 5
DEFAULT_OUTPUT = "demo-output"  # relative to the working directory


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 1 minute), as CI does")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="where the PNGs, results and source weights go")
    parser.add_argument("--retrain-source", action="store_true", help="ignore the cached source weights")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small convolutions gain little from more, and lose a lot "
                             "on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def prompts(quick: bool):
    """(name, prompt layer, learning rate) of each reprogramming run."""
    runs = [("full-canvas prompt", PaddingPrompt(data.TARGET_SIZE, data.CANVAS, channels=1, activation="none",
                                                 prompt_over_input=True), 0.05)]
    if not quick:
        runs.insert(0, ("padding prompt (ILM-VP)", PaddingPrompt(data.TARGET_SIZE, data.CANVAS, channels=1,
                                                                 activation="sigmoid"), 0.1))
    return runs


def main(argv=None) -> dict:
    args = parse_args(argv)
    gen = session.begin(args)
    start = time.perf_counter()
    source_epochs, copies, target_epochs = (3, 2, 6) if args.quick else (4, 4, 15)
    model = source_model.digits_source(args.output, args.seed, gen, epochs=source_epochs, copies=copies,
                                       retrain=args.retrain_source)
    x_src, y_src = data.source_task(1, torch.Generator().manual_seed(args.seed + 1))
    source_acc = training.accuracy(model, x_src, y_src)
    print(f"source task (digits 0-4, random size/place) accuracy: {source_acc:.3f}")

    x_train, y_train, x_test, y_test = data.target_task(gen)
    chance = 1.0 / NUM_CLASSES
    results = {"source_accuracy": source_acc, "chance": chance, "runs": {}}
    pad = (data.CANVAS - data.TARGET_SIZE) // 2
    padded = lambda x: F.pad(x, (pad, pad, pad, pad))  # noqa: E731
    results["linear_probe"] = training.linear_probe(source_model.features(model), padded(x_train), y_train,
                                                    padded(x_test), y_test, NUM_CLASSES)

    panels = []
    for name, prompt, lr in prompts(args.quick):
        mapping = LabelMapping(NUM_CLASSES, NUM_CLASSES, "iterative")
        rp = Reprogrammer(model, prompt, mapping)
        with torch.no_grad():  # initial mapping from the untrained prompt, as ILM-VP starts
            mapping.fit(rp.source_logits(x_train), y_train)
        mapping_only = training.accuracy(rp, x_test, y_test)
        training.train_reprogrammer(rp, x_train, y_train, epochs=target_epochs, lr=lr, generator=gen, label=name[:14])
        acc = training.accuracy(rp, x_test, y_test)
        results["runs"][name] = {"mapping_only": mapping_only, "reprogrammed": acc,
                                 "index": mapping.index[:, 0].tolist()}
        with torch.no_grad():
            perturbation = prompt.mask[0] * {"sigmoid": torch.sigmoid, "none": lambda t: t}[prompt.activation](prompt.delta[0])
            example = prompt(x_test[:1])[0, 0]
            counts = count_matrix(rp.source_logits(x_train), y_train, NUM_CLASSES)
        panels.append((name, perturbation, example))
        last = (name, counts, mapping.index)

    plots.save_prompts(os.path.join(args.output, "prompt.png"), panels)
    plots.save_label_mapping(os.path.join(args.output, "label_mapping.png"), *last,
                             source_names=[str(d) for d in range(5)], target_names=[str(d) for d in range(5, 10)])
    results["seconds"] = time.perf_counter() - start
    session.save_results(results, args.output, "results.json")

    print(f"\ntarget task: digits 5-9 at 16x16 -> frozen digits-0-4 CNN ({len(x_test)} test images)")
    print(f"  chance                                  {chance:.3f}")
    for name, r in results["runs"].items():
        print(f"  {name:<26} mapping only    {r['mapping_only']:.3f}")
        print(f"  {name:<26} reprogrammed    {r['reprogrammed']:.3f}   "
              f"(target digit d -> source digit {dict(zip(range(5, 10), r['index']))})")
    print(f"  linear probe on frozen features         {results['linear_probe']:.3f}")
    print(f"saved {os.path.join(args.output, 'prompt.png')} and label_mapping.png ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
