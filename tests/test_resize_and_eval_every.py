"""The fast recipe's two time savers: progressive resizing and evaluating every N epochs.

Sizes are checked against values worked out by hand from the schedule's definition,
and a run is checked for what the model actually received, not just what it logged.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fakedata import write_cifar10
from interrupt import stopped_after_epoch_2
from safetensors.torch import load_file

from resnetlab.cli import main
from resnetlab.training.config import TrainConfig, fill_recipe
from resnetlab.training.schedule import train_image_size

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 training images: 5 steps of 16 per epoch (the sizes do not depend on the count)."""
    return write_cifar10(tmp_path_factory.mktemp("data"), per_batch=16, n_test=24)


def test_the_fast_recipes_sizes_by_hand_and_their_cost() -> None:
    """The sizes the fast recipe's own settings give over its 30 epochs, worked out by hand,
    and what they save: config.py and docs/results.md say about 0.78 of full resolution."""
    cfg = fill_recipe(TrainConfig(model="resnet20", dataset="cifar10", recipe="fast"), "cifar")
    ramp = (cfg.res_ramp_start, cfg.res_ramp_end)
    sizes = [train_image_size(e, cfg.epochs, 32, cfg.min_res, ramp) for e in range(cfg.epochs)]
    # 30 epochs, 24 -> 32 between 35% and 65% of the run, steps of 32 / 8 = 4 pixels.
    # Epoch e (0-based) ends at (e + 1) / 30 of the run; the side there is
    # 24 + 8 * ((e + 1) / 30 - 0.35) / 0.3, rounded to a multiple of 4:
    # e = 11: 25.3 -> 24; e = 12: 26.2 -> 28; e = 16: 29.8 -> 28; e = 17: 30.7 -> 32.
    assert sizes == [24] * 12 + [28] * 5 + [32] * 13
    # A conv net's cost grows with the pixels: (12 * 24^2 + 5 * 28^2 + 13 * 32^2) / (30 * 32^2)
    cost = sum(s * s for s in sizes) / (len(sizes) * 32 * 32)
    assert cost == pytest.approx(24_144 / 30_720) and round(cost, 2) in (0.78, 0.79)


def test_sizes_keep_their_shape_in_a_shortened_run_and_the_last_epochs_are_full_size() -> None:
    ramp = (0.35, 0.65)
    # 3 epochs end at 1/3, 2/3 and 1 of the run: before, after and after the ramp's end.
    assert [train_image_size(e, 3, 32, 24, ramp) for e in range(3)] == [24, 32, 32]
    # ImageNet-style 224, steps of 28: 0.6 -> 181.3 -> 168, 0.7 -> 202.7 -> 196, 0.8 -> full
    assert [train_image_size(e, 10, 224, 160, (0.5, 0.8)) for e in range(10)] == (
        [160] * 5 + [168, 196, 224, 224, 224]
    )
    # The default recipe trains every epoch at full size; 0, or a side not below the full
    # one, turns resizing off.
    default = fill_recipe(TrainConfig(model="resnet20", dataset="cifar10"), "cifar")
    default_ramp = (default.res_ramp_start, default.res_ramp_end)
    assert {train_image_size(e, 5, 32, default.min_res, default_ramp) for e in range(5)} == {32}
    assert {train_image_size(e, 5, 32, 0, ramp) for e in range(5)} == {32}
    assert {train_image_size(e, 5, 32, 40, ramp) for e in range(5)} == {32}


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_trains_at_the_scheduled_sizes_and_evaluates_every_n_epochs(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, ...]] = []
    real = F.interpolate

    def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
        out = real(x, *args, **kwargs)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr(F, "interpolate", spy)
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--recipe", "fast",
            "--data-path", str(cifar_root), "--epochs", "5", "-b", "16", "--eval-every", "2",
            "--min-res", "16", "--res-ramp-start", "0.4", "--res-ramp-end", "0.8",
            "--precision", "fp32", "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = _metrics(out)
    # epochs end at 0.2 .. 1.0 of the run: 16, 16, 16 + 16 * 0.5 = 24, 32, 32
    assert [int(r["image_size"]) for r in rows] == [16, 16, 24, 32, 32]
    # 80 images / 16 = 5 batches per epoch; the three small epochs were resized, on the batch
    assert seen == [(16, 3, 16, 16)] * 10 + [(16, 3, 24, 24)] * 5
    # evaluated after epochs 2 and 4, and after the last, 5
    assert [r["eval_split"] for r in rows] == ["", "test", "", "test", "test"]
    assert [r["eval_acc"] != "" for r in rows] == [False, True, False, True, True]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["top1"] == pytest.approx(float(rows[-1]["eval_acc"]))
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _untimed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


def test_a_resumed_run_resizes_and_evaluates_like_an_uninterrupted_one(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["train", "--model", "resnet20", "--dataset", "cifar10", "--recipe", "fast",
            "--data-path", str(cifar_root), "-b", "16", "--epochs", "4", "--eval-every", "3",
            "--min-res", "16", "--precision", "fp32"]  # fmt: skip
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main([*base, "--output-dir", str(whole)]) == 0
    stopped_after_epoch_2([*base, "--output-dir", str(part)], monkeypatch)
    assert main(["train", "--resume", str(part)]) == 0
    rows = _metrics(whole)
    # epochs end at 0.25, 0.5, 0.75, 1 of the run (ramp 0.35 -> 0.65): 16, 24, 32, 32
    assert [int(r["image_size"]) for r in rows] == [16, 24, 32, 32]
    assert [r["eval_split"] for r in rows] == ["", "", "test", "test"]
    assert _untimed(_metrics(part)) == _untimed(rows)
    _same_weights(part / "last.safetensors", whole / "last.safetensors")


def test_a_run_from_before_these_settings_still_resumes(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json without eval_every, min_res and the ramp: every epoch, full size."""
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-path",
            str(cifar_root), "-b", "16", "--epochs", "3", "--val-split", "32",
            "--precision", "fp32", "--output-dir", str(out)]  # fmt: skip
    stopped_after_epoch_2(argv, monkeypatch)
    config = json.loads((out / "config.json").read_text())
    for key in ("eval_every", "min_res", "res_ramp_start", "res_ramp_end"):
        del config[key]
    (out / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(out)]) == 0
    rows = _metrics(out)
    assert [r["eval_split"] for r in rows] == ["val"] * 3
    assert [r["image_size"] for r in rows[2:]] == ["32"]
