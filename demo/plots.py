"""The demo's pictures: the learned prompts (prompt.png) and the label mapping (label_mapping.png)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def save_prompts(path: str, panels) -> None:
    """``panels``: (title, perturbation [H, W], example reprogrammed input [H, W]) per prompt."""
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6.4), squeeze=False)
    for col, (title, perturbation, example) in enumerate(panels):
        for row, (image, caption) in enumerate(((perturbation, "learned prompt M*act(delta)"),
                                                (example, "a reprogrammed target input"))):
            ax = axes[row][col]
            im = ax.imshow(image.detach().float().cpu(), cmap="gray")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"{title}\n{caption}" if row == 0 else caption, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_label_mapping(path: str, run: str, counts: torch.Tensor, index: torch.Tensor, *, source_names,
                       target_names) -> None:
    """Heat map of ``p(source prediction | target class)`` with the chosen source of each target boxed."""
    share = counts / counts.sum(0, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(share.cpu(), cmap="viridis", vmin=0, vmax=1)
    for t, sources in enumerate(index.tolist()):
        for s in sources:
            ax.add_patch(plt.Rectangle((t - 0.5, s - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(target_names)), target_names)
    ax.set_yticks(range(len(source_names)), source_names)
    ax.set_xlabel("target class (digits 5-9)")
    ax.set_ylabel("source prediction (digits 0-4)")
    ax.set_title(f"label mapping after training ({run}):\nshare of each target's samples predicted as each source "
                 "class\n(red: the source class mapped to it)", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
