"""Pictures of a run: training curves and a confusion matrix, drawn with matplotlib (Agg).

Each picture reads without explanation: a title, labelled axes and a legend.
Files go through `atomic_write`, so a kill never leaves half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from resnetlab.io import atomic_write  # noqa: E402


def _save(fig: Any, path: str | os.PathLike) -> None:
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)


def plot_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Accuracy and loss per epoch, train against validation (or test), side by side.

    ``rows`` are metrics.csv rows: epoch, train_loss, train_acc, eval_loss, eval_acc,
    eval_split ("val" or "test"; empty, and no eval values, in epochs not evaluated).
    """
    epochs = [r["epoch"] for r in rows]
    split = next((r["eval_split"] for r in reversed(rows) if r.get("eval_split")), "val")
    eval_name = "validation" if split == "val" else split
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((ax_acc, "acc", "accuracy (%)"), (ax_loss, "loss", "loss")):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], marker=".", label="train")
        shown = [r for r in rows if r.get(f"eval_{key}") not in (None, "")]  # --eval-every
        if shown:
            ax.plot([r["epoch"] for r in shown], [r[f"eval_{key}"] for r in shown], marker=".",
                    label=eval_name)  # fmt: skip
        ax.set(xlabel="epoch", ylabel=label, title=f"{label.split(' ')[0]}: train vs {eval_name}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike, title: str
) -> None:
    """Row-normalised confusion matrix (true class down, prediction across), counts written in."""
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 30:
        ticks = list(range(n))
        ax.set_xticks(ticks, labels=list(classes), rotation=45, ha="right")
        ax.set_yticks(ticks, labels=list(classes))
        for i in range(n):
            for j in range(n):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    _save(fig, path)
