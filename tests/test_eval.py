"""`evaluate` and `resnetlab eval`: numbers checked against hand computations."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TrainedRun
from fakedata import write_cifar10
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from resnetlab.cli import main
from resnetlab.models.weights import load_checkpoint
from resnetlab.reports.analysis import CELL, DPI, HEADER, grid_shape
from resnetlab.training.evaluate import evaluate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Logits(nn.Module):
    """The input is the logits (plus a fixed bias): outputs we can compute by hand."""

    def __init__(self, bias: list[float] | None = None) -> None:
        super().__init__()
        self.register_buffer("bias", torch.tensor(bias or [0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) + self.bias


def test_top1_top5_loss_per_class_and_confusion_by_hand() -> None:
    rows = [
        ([2.0, 1.0, 0.0, 0.0, 0.0, 0.0], 0),  # right
        ([2.0, 1.0, 0.0, 0.0, 0.0, 0.0], 1),  # wrong, but in the top 5
        ([0.5, 0.4, 0.3, 0.2, 0.1, -5.0], 5),  # wrong, and last: not in the top 5
        ([0.0, 0.0, 0.0, 3.0, 0.0, 0.0], 3),  # right
    ]
    x = torch.tensor([r for r, _ in rows])
    y = torch.tensor([c for _, c in rows])
    loader = [(x[:3], y[:3]), (x[3:], y[3:])]  # two batches: the counts must add up
    result = evaluate(Logits(), loader, num_classes=6)

    def nll(logits: list[float], c: int) -> float:
        return math.log(sum(math.exp(v) for v in logits)) - logits[c]

    assert result.num_samples == 4
    assert result.top1 == 50.0 and result.top5 == 75.0
    assert result.loss == pytest.approx(sum(nll(r, c) for r, c in rows) / 4)
    want = [100.0, 0.0, math.nan, 100.0, math.nan, 0.0]  # classes 2 and 4 have no samples
    assert all(
        (math.isnan(g) and math.isnan(w)) or g == w
        for g, w in zip(result.per_class, want, strict=True)
    )
    expected = [[0] * 6 for _ in range(6)]
    expected[0][0] = expected[1][0] = expected[5][0] = expected[3][3] = 1
    assert result.confusion == expected


def test_flip_tta_averages_the_softmax_of_both_views_by_hand() -> None:
    # logits = image row + bias [ln 2, 0, 0]; image [0, 0, ln 3] and its mirror [ln 3, 0, 0].
    model = Logits([math.log(2), 0.0, 0.0])
    x = torch.tensor([[[[0.0, 0.0, math.log(3)]]]])
    y = torch.tensor([2])
    plain = evaluate(model, [(x, y)], num_classes=3)
    assert plain.top1 == 100.0  # probabilities [2, 1, 3] / 6
    assert plain.loss == pytest.approx(-math.log(3 / 6))
    tta = evaluate(model, [(x, y)], num_classes=3, tta="flip")
    # mirror: logits [ln 6, 0, 0] -> [6, 1, 1] / 8; mean [13/24, 7/48, 15/48]: class 0 wins.
    assert tta.top1 == 0.0
    assert tta.loss == pytest.approx(-math.log(15 / 48))
    assert tta.confusion[2] == [1, 0, 0]


def test_per_sample_outputs_come_from_the_same_pass_by_hand() -> None:
    # The TTA case above: mean probabilities [26, 7, 15] / 48, so the top-3 is classes 0, 2, 1.
    model = Logits([math.log(2), 0.0, 0.0])
    x = torch.tensor([[[[0.0, 0.0, math.log(3)]]], [[[0.0, 0.0, 0.0]]]])
    y = torch.tensor([2, 1])
    loader = [(x[:1], y[:1]), (x[1:], y[1:])]
    for tta in (None, "flip"):
        plain = evaluate(model, loader, num_classes=3, tta=tta)
        both = evaluate(model, loader, num_classes=3, tta=tta, per_sample=True)
        assert plain.samples is None
        assert both.as_dict() == plain.as_dict()  # the numbers training logs do not change
    assert both.samples.targets.tolist() == [2, 1]
    # second image: logits [ln 2, 0, 0] both ways: [2, 1, 1] / 4, the tie in topk's order
    assert both.samples.topk[0].tolist() == [0, 2, 1]
    assert both.samples.probs[0].tolist() == pytest.approx([26 / 48, 15 / 48, 7 / 48])
    assert both.samples.topk[1, 0] == 0 and both.samples.probs[1].tolist() == pytest.approx(
        [0.5, 0.25, 0.25]
    )


def test_evaluate_restores_training_mode_and_needs_no_grad() -> None:
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(3))
    model.train()
    before = model[1].running_mean.clone()
    evaluate(model, [(torch.randn(4, 3) * 10, torch.tensor([0, 1, 2, 0]))], num_classes=3)
    assert model.training
    assert torch.equal(model[1].running_mean, before)  # eval mode: BN statistics untouched


# --- the command --------------------------------------------------------------------------


@pytest.fixture
def trained(trained_run: TrainedRun, mnist_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The shared run (tests/conftest.py), copied: eval writes its picture into the folder."""
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    return mnist_root, run


def test_eval_json_matches_a_reference_computation(
    trained: tuple[Path, Path], mnist_test_set: tuple, capsys
) -> None:
    root, run = trained
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)

    # Reference: the raw idx test files, normalised by hand, through the best checkpoint.
    model, meta = load_checkpoint(run / "best.safetensors")
    x, y = mnist_test_set
    with torch.inference_mode():
        logits = model(x)
    pred = logits.argmax(1)
    assert report["checkpoint"].endswith("best.safetensors")
    assert report["num_samples"] == len(y) and report["split"] == "test"
    assert report["top1"] == pytest.approx(100.0 * (pred == y).float().mean().item())
    top5 = (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    assert report["top5"] == pytest.approx(100.0 * top5)
    assert report["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    for c, name in enumerate(meta["classes"]):
        mask = y == c
        assert report["per_class"][name] == pytest.approx(
            100.0 * (pred[mask] == c).float().mean().item()
        )
    cm = torch.zeros(10, 10, dtype=torch.long)
    cm.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    assert report["confusion_matrix"] == cm.tolist()
    assert Path(report["confusion_png"]).read_bytes()[:4] == b"\x89PNG"


def test_eval_of_every_checkpoint_kind_and_the_val_split(
    trained: tuple[Path, Path], capsys
) -> None:
    root, run = trained
    capsys.readouterr()
    results = {}
    for name in ("last.safetensors", "last.state.pt"):
        assert main(["eval", "--checkpoint", str(run / name), "--json"]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    a, b = results.values()
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"])
    # The run's own held-out images (64 of them, by its seed), and their accuracy as trained.
    assert (
        main(["eval", "--checkpoint", str(run / "last.safetensors"), "--split", "val", "--json"])
        == 0
    )
    val = json.loads(capsys.readouterr().out)
    assert val["num_samples"] == 64
    last_row = (run / "metrics.csv").read_text().strip().splitlines()[-1].split(",")
    assert val["top1"] == pytest.approx(float(last_row[7]))  # eval_acc of the last epoch
    # The human-readable form has the table and the picture.
    assert main(["eval", "--checkpoint", str(run), "--tta", "flip"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "per-class accuracy" in out and "0 - zero" in out
    assert (run / "confusion-mnist-test.png").exists()


def test_eval_bad_input(trained: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    root, run = trained
    cifar = write_cifar10(tmp_path / "cifar", per_batch=4, n_test=8)
    cases = [
        (["--checkpoint", str(tmp_path / "nope")], "no such checkpoint"),
        (["--checkpoint", str(run), "--dataset", "cifar10", "--data-path", str(cifar)],
         "1-channel images"),
        (["--checkpoint", str(run), "-b", "0"], "batch-size must be at least 1"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((run / "last.safetensors").read_bytes()[:100])
    assert main(["eval", "--checkpoint", str(broken), "--data-path", str(root)]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- what eval writes beside the confusion matrix ----------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_analysis(report: dict, classes: list[str]) -> list[dict[str, str]]:
    """predictions.csv against evaluate()'s numbers in the report, the scores and the ECE
    recomputed from its rows by hand, and the pictures; returns the rows."""
    rows = read_csv(Path(report["predictions_csv"]))
    n, c = report["num_samples"], len(classes)
    assert len(rows) == n
    cm = [[0] * c for _ in range(c)]
    for r in rows:
        cm[classes.index(r["true"])][classes.index(r["predicted"])] += 1
        assert r["predicted"] == r["top1"] and r["confidence"] == r["top1_prob"]
        probs = [float(r[f"top{i}_prob"]) for i in range(1, min(5, c) + 1)]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
    assert cm == report["confusion_matrix"]
    right = [r["true"] == r["predicted"] for r in rows]
    assert 100 * sum(right) / n == pytest.approx(report["top1"])
    scores = report["precision_recall_f1"]["per_class"]
    for k, name in enumerate(classes):
        predicted = sum(row[k] for row in cm)
        want = 100 * cm[k][k] / predicted if predicted else 0.0
        assert scores[name]["precision"] == pytest.approx(want)
        assert scores[name]["support"] == sum(cm[k])
    ece = 0.0
    for m in range(1, 16):
        inside = [(float(r["confidence"]), ok) for r, ok in zip(rows, right, strict=True)
                  if (m - 1) / 15 < float(r["confidence"]) <= m / 15]  # fmt: skip
        if inside:
            ece += abs(sum(ok for _, ok in inside) - sum(p for p, _ in inside)) / n
    assert report["calibration"]["ece"] == pytest.approx(100 * ece, abs=1e-3)
    for key in ("confusion_png", "reliability_png", "errors_png"):
        assert Image.open(report[key]).format == "PNG"
    h, w = grid_shape(min(16, n - sum(right)))
    size = (round(w * CELL * DPI), round((h * CELL + HEADER) * DPI))
    assert Image.open(report["errors_png"]).size == size
    return rows


def eval_json(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main(["eval", *argv, "--json", "--workers", "0"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_analysis_of_the_mnist_cnn(
    trained: tuple[Path, Path], mnist_test_set: tuple, capsys
) -> None:
    root, run = trained
    report = eval_json(["--checkpoint", str(run)], capsys)
    model, meta = load_checkpoint(run / "best.safetensors")
    rows = check_analysis(report, meta["classes"])
    assert report["predictions_csv"] == str(run / "predictions-mnist-test.csv")
    assert report["errors_png"] == str(run / "errors-mnist-test.png")
    # Every row: the test image in file order, its top-5 from the hand-normalised idx files.
    x, y = mnist_test_set
    with torch.inference_mode():
        values, indices = torch.softmax(model(x), dim=1).topk(5)
    assert [int(r["index"]) for r in rows] == list(range(len(y)))
    for r, t, p, i in zip(rows, y.tolist(), values.tolist(), indices.tolist(), strict=True):
        assert r["true"] == meta["classes"][t]
        assert [r[f"top{j}"] for j in range(1, 6)] == [meta["classes"][c] for c in i]
        assert [float(r[f"top{j}_prob"]) for j in range(1, 6)] == pytest.approx(p, abs=1e-5)
    # The table and the lines naming the files.
    assert main(["eval", "--checkpoint", str(run), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "macro average" in out and "ECE" in out
    assert f"predictions: {run / 'predictions-mnist-test.csv'}" in out


def train_quietly(argv: list[str]) -> None:
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(["train", *argv, "--epochs", "1", "--workers", "0", "--precision", "fp32"]) == 0


def test_eval_analysis_of_a_cifar_resnet_in_memory(tmp_path: Path, capsys) -> None:
    data = write_cifar10(tmp_path / "cifar", per_batch=8, n_test=24)
    run = tmp_path / "run"
    train_quietly(["--model", "resnet20", "--dataset", "cifar10", "--data-path", str(data),
                   "-b", "8", "--val-split", "8", "--output-dir", str(run)])  # fmt: skip
    out = tmp_path / "analysis"
    report = eval_json(
        ["--checkpoint", str(run), "--output-dir", str(out), "--tta", "flip"], capsys
    )
    rows = check_analysis(report, load_checkpoint(run / "best.safetensors")[1]["classes"])
    assert [int(r["index"]) for r in rows] == list(range(24))
    assert sorted(p.name for p in out.iterdir()) == [
        f"{kind}-cifar10-test.{ext}"
        for kind, ext in (("confusion", "png"), ("errors", "png"), ("predictions", "csv"),
                          ("reliability", "png"))
    ]  # fmt: skip


def test_eval_analysis_of_an_imagenet_resnet_on_an_image_folder(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for k, name in enumerate(("cat", "dog", "fox")):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 96, (20, 20, 3), dtype=np.uint8)
                pixels[:, :, k] += 150
                Image.fromarray(pixels).save(tmp_path / "data" / split / name / f"{i}.png")
    run = tmp_path / "run"
    train_quietly(["--model", "resnet18", "--dataset", "folder", "--data-path",
                   str(tmp_path / "data"), "--image-size", "16", "--resize-size", "16", "-b", "8",
                   "--lr", "0.01", "--val-split", "0", "--output-dir", str(run)])  # fmt: skip
    report = eval_json(["--checkpoint", str(run), "-b", "4"], capsys)
    rows = check_analysis(report, ["cat", "dog", "fox"])
    files = [str(tmp_path / "data" / "test" / c / f"{i}.png") for c in ("cat", "dog", "fox")
             for i in range(3)]  # fmt: skip
    assert [r["path"] for r in rows] == files
    assert [r["true"] for r in rows] == ["cat"] * 3 + ["dog"] * 3 + ["fox"] * 3


def test_a_failing_write_keeps_the_previous_results(
    trained: tuple[Path, Path], capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, run = trained
    first = eval_json(["--checkpoint", str(run)], capsys)
    names = ("confusion_png", "reliability_png", "predictions_csv", "errors_png")
    before = {key: Path(first[key]).read_bytes() for key in names}

    def half_then_full_disk(self, fname, *args, **kwargs) -> None:
        Path(fname).write_bytes(b"\x89PNG half a picture")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_full_disk)
    assert main(["eval", "--checkpoint", str(run / "last.safetensors"), "--workers", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "No space left" in err[0], err
    assert {key: Path(first[key]).read_bytes() for key in names} == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
