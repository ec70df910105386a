"""`evaluate` and `resnetlab eval`: numbers checked against hand computations."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TrainedRun
from fakedata import write_cifar10
from torch import nn

from resnetlab.cli import main
from resnetlab.models.weights import load_checkpoint
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
