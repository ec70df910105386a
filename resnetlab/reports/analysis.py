"""What a model learned, from one evaluation pass: precision, recall and F1 per class, its
calibration (expected calibration error and a reliability diagram), every image's predictions
as a CSV, and a grid of the images it got wrong most confidently.

The inputs are the per-sample outputs of ``evaluate(per_sample=True)`` in the loader's order:
``targets`` [N], ``topk`` [N, k] classes by falling probability, ``probs`` [N, k] theirs.
Numbers are in percent, as the accuracies of `EvalResult`. Files go through `atomic_write`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from torch import Tensor

from resnetlab.data import InMemoryLoader
from resnetlab.data.folder import FolderLoader
from resnetlab.errors import UserError, first_line
from resnetlab.io import atomic_write

matplotlib.use("Agg")  # the pictures go to files: no display
DPI = 120
CELL = 1.8  # inches a side per image of the grid: 4 columns are 864 pixels, GitHub's width
HEADER = 0.5  # inches above the grid for its title
THUMBNAIL = 256  # pixels: folder images are shrunk to this before drawing


@dataclass
class ClassScores:
    precision: list[float]  # percent, per class
    recall: list[float]  # percent, per class: the per-class accuracy, 0 for a class of none
    f1: list[float]  # percent, per class
    support: list[int]  # true samples per class
    macro: dict[str, float]  # "precision", "recall", "f1": unweighted means over the classes

    def as_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        per_class = {
            name: {"precision": p, "recall": r, "f1": f, "support": s}
            for name, p, r, f, s in zip(
                classes, self.precision, self.recall, self.f1, self.support, strict=True
            )
        }
        return {"per_class": per_class, "macro": self.macro}


def class_scores(confusion: Sequence[Sequence[int]]) -> ClassScores:
    """Precision, recall and F1 of each class from a [true][predicted] confusion matrix.

    Undefined ratios are 0, as scikit-learn's ``zero_division=0``: precision of a class never
    predicted, recall of a class with no samples, F1 when both are 0. The macro average runs
    over the classes among the true or the predicted labels (scikit-learn's default labels):
    a class the split neither holds nor predicts says nothing about the model.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    hits, predicted, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision, recall = ratio(hits, predicted), ratio(hits, actual)
    f1 = ratio(2 * precision * recall, precision + recall)
    present = (predicted + actual) > 0
    macro = {
        name: 100.0 * float(v[present].mean()) if present.any() else 0.0
        for name, v in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    return ClassScores(
        precision=(100.0 * precision).tolist(),
        recall=(100.0 * recall).tolist(),
        f1=(100.0 * f1).tolist(),
        support=actual.astype(np.int64).tolist(),
        macro=macro,
    )


@dataclass
class Calibration:
    ece: float  # percent
    edges: list[float]  # bins + 1 confidences in [0, 1]: bin m holds (edges[m], edges[m + 1]]
    counts: list[int]  # samples per bin
    accuracy: list[float | None]  # percent correct per bin; None for an empty bin
    confidence: list[float | None]  # mean confidence per bin, percent; None for an empty bin

    def as_dict(self) -> dict[str, Any]:
        bins = [
            {"lower": lo, "upper": hi, "count": n, "accuracy": a, "confidence": c}
            for lo, hi, n, a, c in zip(
                self.edges[:-1], self.edges[1:], self.counts, self.accuracy, self.confidence,
                strict=True,
            )
        ]  # fmt: skip
        return {"ece": self.ece, "bins": bins}


def calibration(confidence: Tensor, correct: Tensor, bins: int = 15) -> Calibration:
    """Expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks"):
    ``bins`` equal-width confidence intervals ((m-1)/M, m/M], and the mean over the samples of
    their bin's |accuracy - mean confidence|, i.e. the bins' gaps weighted by their sizes."""
    conf = confidence.double().numpy()
    hit = correct.bool().numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.digitize(conf, edges[1:-1], right=True)  # edges[m] < conf <= edges[m + 1]
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=hit, minlength=bins)
    conf_sums = np.bincount(which, weights=conf, minlength=bins)
    n = max(len(conf), 1)
    ece = float(np.abs(hits - conf_sums).sum() / n)  # sum_m |B_m|/n |acc_m - conf_m|
    per_bin = [(None, None) if c == 0 else (100.0 * h / c, 100.0 * s / c)
               for c, h, s in zip(counts, hits, conf_sums, strict=True)]  # fmt: skip
    return Calibration(
        ece=100.0 * ece,
        edges=edges.tolist(),
        counts=counts.tolist(),
        accuracy=[a for a, _ in per_bin],
        confidence=[c for _, c in per_bin],
    )


def sample_ids(loader: Any) -> tuple[str, list[Any]]:
    """The column naming each evaluated image, in the loader's order: ``("path", files)`` for
    an image folder, else ``("index", positions in the split)``."""
    indices = loader.indices().tolist()
    if isinstance(loader, FolderLoader):
        return "path", [loader.dataset.samples[i][0] for i in indices]
    return "index", indices


def prediction_rows(
    ids: tuple[str, Sequence[Any]],
    targets: Tensor,
    topk: Tensor,
    probs: Tensor,
    classes: Sequence[str],
) -> list[list[Any]]:
    """predictions.csv: a header, then one row per image: its id, true class, predicted class,
    confidence (the predicted class's probability) and the top-k classes with probabilities."""
    column, values = ids
    if len(values) != len(targets):
        raise ValueError(f"{len(values)} image ids for {len(targets)} predictions")
    k = topk.shape[1]
    header = [column, "true", "predicted", "confidence"]
    header += [name for i in range(1, k + 1) for name in (f"top{i}", f"top{i}_prob")]
    rows = [header]
    for value, t, classes_k, probs_k in zip(
        values, targets.tolist(), topk.tolist(), probs.tolist(), strict=True
    ):
        ranked = [
            v for c, p in zip(classes_k, probs_k, strict=True) for v in (classes[c], f"{p:.6f}")
        ]
        rows.append([value, classes[t], classes[classes_k[0]], f"{probs_k[0]:.6f}", *ranked])
    return rows


def write_csv(path: str | os.PathLike, rows: Sequence[Sequence[Any]]) -> None:
    def write(tmp: Any) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)

    atomic_write(path, write)


def most_confident_wrong(
    confidence: Tensor, predicted: Tensor, targets: Tensor, n: int = 16
) -> list[int]:
    """Positions of the ``n`` misclassified samples of highest confidence, the most confident
    first (on a tie, the earlier sample)."""
    wrong = (predicted != targets).nonzero().flatten().numpy()
    order = np.argsort(-confidence.double().numpy()[wrong], kind="stable")
    return wrong[order[:n]].tolist()


def load_images(loader: Any, positions: Sequence[int]) -> list[np.ndarray]:
    """The images at ``positions`` of the loader's order, uint8 HxWxC (HxW if grayscale) as
    stored: an in-memory dataset's tensor, an image folder's files (shrunk to THUMBNAIL)."""
    indices = loader.indices()[list(positions)].tolist()
    if isinstance(loader, InMemoryLoader):
        pixels = loader.images[indices].permute(0, 2, 3, 1).cpu().numpy()
        return [p[:, :, 0] if p.shape[2] == 1 else p for p in pixels]
    if isinstance(loader, FolderLoader):
        images = []
        for i in indices:
            path = loader.dataset.samples[i][0]
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
            except OSError as e:  # gone or changed since it was evaluated
                raise UserError(f"cannot read image {path} ({first_line(e)})") from None
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            images.append(np.asarray(image))
        return images
    raise TypeError(f"no images to draw from a {type(loader).__name__}")


def _save(fig: Any, path: str | os.PathLike) -> None:
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid of ``n`` cells (at least one)."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def plot_image_grid(
    images: Sequence[np.ndarray], labels: Sequence[str], path: str | os.PathLike, title: str
) -> None:
    """Images in a near-square grid, each with its label above it, no axes: CELL inches a cell, so
    the PNG is ``cols * CELL * DPI`` pixels wide and ``(rows * CELL + HEADER) * DPI`` high."""
    rows, cols = grid_shape(len(images))
    width, height = cols * CELL, rows * CELL + HEADER
    fig = plt.figure(figsize=(width, height))
    pad, label = 0.08, 0.25  # inches: around each image, and above it for its label
    for i, (image, text) in enumerate(zip(images, labels, strict=True)):
        row, col = divmod(i, cols)
        bottom = height - HEADER - (row + 1) * CELL + pad  # placed by hand: no layout engine
        box = [(col * CELL + pad) / width, bottom / height]
        ax = fig.add_axes([*box, (CELL - 2 * pad) / width, (CELL - 2 * pad - label) / height])
        gray = image.ndim == 2
        ax.imshow(image, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(text, fontsize=8)
        ax.axis("off")
    if not images:
        fig.text(0.5, (height - HEADER) / 2 / height, "no misclassified images", ha="center")
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    _save(fig, path)


def plot_confident_errors(
    loader: Any,
    targets: Tensor,
    topk: Tensor,
    probs: Tensor,
    classes: Sequence[str],
    path: str | os.PathLike,
    title: str,
    n: int = 16,
) -> list[int]:
    """The grid of the ``n`` most confidently wrong images, each labelled
    "true → predicted (confidence%)"; returns their positions in the loader's order."""
    chosen = most_confident_wrong(probs[:, 0], topk[:, 0], targets, n)
    labels = [
        f"{classes[int(targets[i])]} → {classes[int(topk[i, 0])]} ({100 * float(probs[i, 0]):.1f}%)"
        for i in chosen
    ]
    heading = f"{title}\nthe {len(chosen)} most confident mistakes (true → predicted)"
    plot_image_grid(load_images(loader, chosen), labels, path, heading)
    return chosen


def plot_reliability(cal: Calibration, path: str | os.PathLike, title: str) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal of a perfectly
    calibrated model, the gap shaded, and below it how many images each bin holds."""
    lefts = 100.0 * np.asarray(cal.edges[:-1])
    width = 100.0 / len(cal.counts)
    acc = np.array([np.nan if a is None else a for a in cal.accuracy])
    conf = np.array([np.nan if c is None else c for c in cal.confidence])
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": (3, 1)}
    )
    ax.bar(lefts, acc, width, align="edge", color="tab:blue", edgecolor="black",
           label="accuracy in the bin")  # fmt: skip
    ax.bar(lefts, conf - acc, width, bottom=acc, align="edge", color="tab:red", alpha=0.3,
           edgecolor="tab:red", label="gap to the mean confidence")  # fmt: skip
    ax.plot([0, 100], [0, 100], "--", color="gray", label="perfectly calibrated")
    ax.set(xlim=(0, 100), ylim=(0, 100), ylabel="accuracy (%)")
    ax.set_title(f"expected calibration error {cal.ece:.2f}% ({len(cal.counts)} bins)")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    ax_n.bar(lefts, cal.counts, width, align="edge", color="gray", edgecolor="black")
    ax_n.set(xlabel="confidence: probability of the predicted class (%)", yscale="log",
             ylabel="images (log scale)")  # fmt: skip
    ax_n.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
