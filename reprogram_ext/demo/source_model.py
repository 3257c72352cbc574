"""The source network (a small CNN for 32x32 grey images), its training and its weight cache."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from . import data
from .progress import ProgressBar

SOURCE_CLASSES = 5  # the source task: digits 0-4


def source_network(num_classes: int) -> nn.Sequential:
    """conv16-BN-ReLU-pool, conv32-BN-ReLU-pool, conv64-BN-ReLU, global average pool, linear."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


def features(model: nn.Sequential) -> nn.Sequential:
    """The network without its last (classification) layer: 64-d features."""
    return nn.Sequential(*list(model.children())[:-1])


def train_source(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int, generator: torch.Generator,
                 batch: int = 64, lr: float = 3e-3) -> nn.Sequential:
    model = source_network(num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = (x.shape[0] + batch - 1) // batch
    model.train()
    for epoch in range(epochs):
        bar = ProgressBar(steps, f"source epoch {epoch + 1}/{epochs}")
        perm = torch.randperm(x.shape[0], generator=generator)
        for i in range(0, x.shape[0], batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(loss=loss.item())
        bar.close()
    return model.eval()


def cached_source_model(path: str, build) -> tuple:
    """Load the source network from ``path`` when it is there, else ``build()`` it and save it.

    Returns ``(model, loaded_from_cache)``.
    """
    if os.path.exists(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = source_network(state["num_classes"])
        model.load_state_dict(state["weights"])
        return model.eval(), True
    model = build()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({"num_classes": model[-1].out_features, "weights": model.state_dict()}, path)
    return model, False


def digits_source(output: str, seed: int, generator: torch.Generator, *, epochs: int, copies: int,
                  retrain: bool = False) -> nn.Sequential:
    """The frozen digits-0-4 CNN that every demo reprograms.

    Trained for ``epochs`` on ``data.source_task(copies)`` and cached in ``output`` (one file per
    ``epochs``, ``copies``, ``seed``, so the demos share it); ``retrain`` drops the cached file first.
    """
    path = os.path.join(output, f"source_digits04_e{epochs}_c{copies}_s{seed}.pt")
    if retrain and os.path.exists(path):
        os.remove(path)

    def build():
        x, y = data.source_task(copies, generator)
        return train_source(x, y, SOURCE_CLASSES, epochs, generator)

    model, cached = cached_source_model(path, build)
    print(f"source model: {'loaded from ' + path if cached else 'trained and cached at ' + path}")
    return model
