"""What every demo does first and last: threads, seeds and output folder; the results file."""
from __future__ import annotations

import argparse
import json
import os

import torch


def begin(args: argparse.Namespace) -> torch.Generator:
    """Set ``args.threads`` torch threads and the global seed, create ``args.output``; return the
    demo's generator, seeded with ``args.seed``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)
    return torch.Generator().manual_seed(args.seed)


def save_results(results: dict, output: str, filename: str) -> str:
    """Write ``results`` as indented JSON to ``output/filename``; return the path."""
    path = os.path.join(output, filename)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=2)
    return path
