"""resnetlab.reports.analysis: scores and calibration by hand, the grid of confident mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data import InMemoryLoader
from resnetlab.reports.analysis import (
    CELL,
    DPI,
    HEADER,
    calibration,
    class_scores,
    most_confident_wrong,
    plot_confident_errors,
    plot_reliability,
    prediction_rows,
)


def test_precision_recall_f1_by_hand_with_zero_division() -> None:
    # 5 classes, 10 samples, [true][predicted]:
    #   true 0: 3 right, 1 as class 1            (4 samples)
    #   true 1: 1 as 0, 2 right, 1 as class 3    (4 samples)
    #   true 2: both as class 1                  (2 samples; class 2 is never predicted)
    #   true 3: none, yet predicted once;  class 4: neither held nor predicted
    # predicted totals: class 0: 4, class 1: 5, class 2: 0, class 3: 1, class 4: 0
    # precision: 3/4, 2/5, 0 (0/0 -> 0), 0/1, 0 (0/0)
    # recall:    3/4, 2/4, 0/2, 0 (0/0 -> 0), 0 (0/0)
    # F1:        3/4, 2 * 0.4 * 0.5 / 0.9 = 4/9, 0, 0, 0
    # macro over the classes 0-3 (class 4 appears nowhere): precision (0.75 + 0.4) / 4,
    # recall (0.75 + 0.5) / 4, F1 (0.75 + 4/9) / 4
    confusion = [
        [3, 1, 0, 0, 0],
        [1, 2, 0, 1, 0],
        [0, 2, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    s = class_scores(confusion)
    assert s.precision == pytest.approx([75.0, 40.0, 0.0, 0.0, 0.0])
    assert s.recall == pytest.approx([75.0, 50.0, 0.0, 0.0, 0.0])
    assert s.f1 == pytest.approx([75.0, 400 / 9, 0.0, 0.0, 0.0])
    assert s.support == [4, 4, 2, 0, 0]
    assert s.macro["precision"] == pytest.approx(100 * 1.15 / 4)
    assert s.macro["recall"] == pytest.approx(100 * 1.25 / 4)
    assert s.macro["f1"] == pytest.approx(100 * (0.75 + 4 / 9) / 4)
    named = s.as_dict(list("abcde"))
    assert named["per_class"]["b"] == pytest.approx(
        {"precision": 40.0, "recall": 50.0, "f1": 400 / 9, "support": 4}
    )


def test_ece_by_hand() -> None:
    # 15 bins of width 1/15; 10 samples in three of them:
    #   bin 15 (14/15, 1]:    conf 1.0, 0.95, 0.95, 0.94, 3 of 4 right: |0.75 - 0.96| = 0.21
    #   bin 12 (11/15, 12/15]: conf 0.75, 0.79, 0.77, 0.79, all right:  |1 - 0.775| = 0.225
    #   bin 8 (7/15, 8/15]:   conf 0.5, 0.5, 1 of 2 right:              |0.5 - 0.5| = 0
    # ECE = 4/10 * 0.21 + 4/10 * 0.225 + 2/10 * 0 = 0.174
    conf = torch.tensor([1.0, 0.95, 0.95, 0.94, 0.75, 0.79, 0.77, 0.79, 0.5, 0.5])
    right = torch.tensor([1, 1, 1, 0, 1, 1, 1, 1, 1, 0]).bool()
    cal = calibration(conf, right)
    assert cal.ece == pytest.approx(17.4)
    assert len(cal.edges) == 16 and cal.edges[0] == 0.0 and cal.edges[-1] == 1.0
    assert [i for i, n in enumerate(cal.counts) if n] == [7, 11, 14]
    assert [cal.counts[i] for i in (7, 11, 14)] == [2, 4, 4]
    assert cal.accuracy[14] == pytest.approx(75.0) and cal.confidence[14] == pytest.approx(96.0)
    assert cal.accuracy[11] == pytest.approx(100.0) and cal.confidence[11] == pytest.approx(77.5)
    assert cal.accuracy[0] is None and cal.confidence[0] is None
    assert cal.as_dict()["bins"][14] == pytest.approx(
        {"lower": 14 / 15, "upper": 1.0, "count": 4, "accuracy": 75.0, "confidence": 96.0}
    )


def test_ece_matches_a_loop_over_the_bins_of_the_paper() -> None:
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(500, generator=g).clamp_min(0.1)
    right = torch.rand(500, generator=g) < conf  # roughly calibrated, not exactly
    ece = 0.0
    for m in range(1, 16):  # Guo et al.: I_m = ((m - 1)/M, m/M], ECE = sum |B_m|/n |acc - conf|
        inside = [(c, r) for c, r in zip(conf.tolist(), right.tolist(), strict=True)
                  if (m - 1) / 15 < c <= m / 15]  # fmt: skip
        if inside:
            acc = sum(r for _, r in inside) / len(inside)
            mean_conf = sum(c for c, _ in inside) / len(inside)
            ece += len(inside) / 500 * abs(acc - mean_conf)
    assert calibration(conf, right).ece == pytest.approx(100 * ece)


def test_reliability_diagram_is_a_png(tmp_path: Path) -> None:
    cal = calibration(torch.tensor([0.3, 0.9, 0.99]), torch.tensor([False, True, True]))
    plot_reliability(cal, tmp_path / "r.png", "a title")
    assert Image.open(tmp_path / "r.png").format == "PNG"


def test_most_confident_wrong_is_a_sort_of_the_mistakes() -> None:
    g = torch.Generator().manual_seed(1)
    n = 200
    targets = torch.randint(0, 4, (n,), generator=g)
    predicted = torch.randint(0, 4, (n,), generator=g)
    conf = (torch.rand(n, generator=g) * 8).round() / 8  # many ties: the earlier one first
    brute = sorted((i for i in range(n) if predicted[i] != targets[i]), key=lambda i: (-conf[i], i))
    assert most_confident_wrong(conf, predicted, targets, 25) == brute[:25]
    assert most_confident_wrong(conf, predicted, targets, n) == brute  # fewer than asked: all
    assert most_confident_wrong(conf, targets, targets, 16) == []


def solid_colours(n: int) -> torch.Tensor:
    """``n`` uint8 images of 8x8 pixels, each one distinct mid-range colour."""
    g = torch.Generator().manual_seed(2)
    colours = torch.randint(40, 216, (n, 3), generator=g, dtype=torch.uint8)
    assert len({tuple(c) for c in colours.tolist()}) == n
    return colours[:, :, None, None].expand(n, 3, 8, 8).contiguous()


def count_colour(pixels: np.ndarray, colour: list[int]) -> int:
    return int((pixels[:, :, :3] == np.array(colour, dtype=np.uint8)).all(axis=2).sum())


def test_the_grid_holds_exactly_the_most_confident_mistakes(tmp_path: Path) -> None:
    n = 40
    images = solid_colours(n)
    loader = InMemoryLoader(
        images, torch.zeros(n, dtype=torch.int64), batch_size=8, mean=[0.5] * 3, std=[0.5] * 3,
        train=False,
    )  # fmt: skip
    g = torch.Generator().manual_seed(3)
    targets = torch.randint(0, 3, (n,), generator=g)
    probs = torch.rand(n, 3, generator=g).sort(dim=1, descending=True).values
    topk = torch.randint(0, 3, (n, 3), generator=g)
    topk[:5, 0] = (targets[:5] + 1) % 3  # at least 20 mistakes among 40
    topk[5:10, 0] = (targets[5:10] + 2) % 3
    classes = ["cat", "dog", "bird"]
    path = tmp_path / "errors.png"
    chosen = plot_confident_errors(loader, targets, topk, probs, classes, path, "title", n=16)
    wrong = [i for i in range(n) if topk[i, 0] != targets[i]]
    assert len(wrong) >= 16
    assert chosen == sorted(wrong, key=lambda i: (-probs[i, 0].item(), i))[:16]
    pixels = np.asarray(Image.open(path).convert("RGB"))
    # 16 images: 4 x 4 cells of CELL inches at DPI, and a header for the title
    assert pixels.shape[:2] == (round((4 * CELL + HEADER) * DPI), round(4 * CELL * DPI))
    colours = images[:, :, 0, 0].tolist()
    for i in range(n):  # each cell shows its image scaled up; no other image appears
        count = count_colour(pixels, colours[i])
        assert count > 10_000 if i in chosen else count == 0, (i, count)


def test_a_grid_of_fewer_and_of_no_mistakes(tmp_path: Path) -> None:
    images = solid_colours(3)
    loader = InMemoryLoader(
        images, torch.zeros(3, dtype=torch.int64), batch_size=8, mean=[0.5] * 3, std=[0.5] * 3,
        train=False,
    )  # fmt: skip
    targets = torch.tensor([0, 1, 1])
    topk = torch.tensor([[1, 0], [0, 1], [0, 1]])
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])
    chosen = plot_confident_errors(
        loader, targets, topk, probs, ["a", "b"], tmp_path / "e.png", "t"
    )
    assert chosen == [0, 2, 1]
    # 3 images: 2 columns, 2 rows
    assert Image.open(tmp_path / "e.png").size == (
        round(2 * CELL * DPI),
        round((2 * CELL + HEADER) * DPI),
    )
    chosen = plot_confident_errors(loader, targets, targets[:, None], probs[:, :1], ["a", "b"],
                                   tmp_path / "none.png", "t")  # fmt: skip
    assert chosen == []
    assert Image.open(tmp_path / "none.png").size == (
        round(CELL * DPI),
        round((CELL + HEADER) * DPI),
    )


def test_prediction_rows_by_hand() -> None:
    rows = prediction_rows(
        ("index", [0, 1]),
        torch.tensor([2, 0]),
        torch.tensor([[2, 0], [1, 0]]),
        torch.tensor([[0.75, 0.25], [0.5, 0.375]]),
        ["cat", "dog", "bird"],
    )
    assert rows == [
        ["index", "true", "predicted", "confidence", "top1", "top1_prob", "top2", "top2_prob"],
        [0, "bird", "bird", "0.750000", "bird", "0.750000", "cat", "0.250000"],
        [1, "cat", "dog", "0.500000", "dog", "0.500000", "cat", "0.375000"],
    ]
    with pytest.raises(ValueError, match="3 image ids for 2 predictions"):
        prediction_rows(("index", [0, 1, 2]), *(torch.zeros(2, 1, dtype=torch.int64),) * 2,
                        torch.zeros(2, 1), ["a"])  # fmt: skip
