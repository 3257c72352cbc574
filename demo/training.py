"""Training and scoring of the demo: reprogramming (prompt + label mapping) and the linear-probe baseline."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from demo.progress import ProgressBar
from reprogram_ext.nn import Reprogrammer


@torch.no_grad()
def accuracy(predict, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Fraction of ``argmax(predict(x)) == y``."""
    correct = sum((predict(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def train_reprogrammer(rp: Reprogrammer, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                       generator: torch.Generator, label: str, batch: int = 64) -> None:
    """Adam on the prompt and mapping only; the label mapping counts during these passes (no extra pass)
    and is re-mapped by ``rp.end_epoch()`` after each epoch."""
    opt = torch.optim.Adam(rp.trainable_parameters(), lr=lr)
    steps = (len(x) + batch - 1) // batch
    for epoch in range(epochs):
        rp.train()
        bar = ProgressBar(steps, f"{label} {epoch + 1}/{epochs}")
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(rp(x[idx], y[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(loss=loss.item())
        bar.close()
        rp.end_epoch()
    rp.eval()


def linear_probe(feature_net: nn.Module, x_train, y_train, x_test, y_test, num_classes: int, steps: int = 300) -> float:
    """Test accuracy of logistic regression trained on the frozen network's features of the padded input."""
    with torch.no_grad():
        f_train, f_test = feature_net(x_train), feature_net(x_test)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    probe = nn.Linear(f_train.shape[1], num_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=0.02)
    for _ in range(steps):
        loss = F.cross_entropy(probe(f_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return accuracy(probe, f_test, y_test)
