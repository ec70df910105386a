"""`--logger tensorboard`: event files that hold metrics.csv's numbers, the first batch and
the settings, read back with TensorBoard's own reader; and a training that is bit for bit
the one without them (the shared 3-epoch run of conftest.py, trained without the logger).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TrainedRun, train_argv
from fakedata import read_idx
from interrupt import stopped_after_epoch_2
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from resnetlab.cli import main
from resnetlab.data import build_loaders
from resnetlab.training import checkpoint as ckpt
from resnetlab.training.tensorboard import IMAGES_TAG, LOG_DIR, create_logger, first_batch_grid

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

EPOCHS = 3  # the shared run's
PER_EPOCH = {  # metrics.csv column -> tag (the run has a validation split, no EMA)
    "train_loss": "loss/train",
    "train_acc": "accuracy/train",
    "eval_loss": "loss/val",
    "eval_acc": "accuracy/val",
    "lr": "schedule/lr",
    "image_size": "schedule/image_size",
    "images_per_s": "speed/images_per_s",
}
FINAL = ("final/best_val_accuracy", "final/test_accuracy", "final/test_top5", "final/test_loss")
MNIST_SIDE, GRID_PADDING = 28, 2  # torchvision's make_grid pads each image by 2


def read_events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / LOG_DIR), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def metrics_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def assert_epochs_logged_once(run: Path) -> EventAccumulator:
    """Every per-epoch tag at steps 1..EPOCHS exactly once, holding metrics.csv's float32s."""
    acc = read_events(run)
    rows = metrics_rows(run)
    for column, tag in PER_EPOCH.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(range(1, EPOCHS + 1)), tag
        assert [e.value for e in events] == [np.float32(r[column]) for r in rows], tag
    assert [image.step for image in acc.Images(IMAGES_TAG)] == [0]
    return acc


@pytest.fixture(scope="module")
def logged_run(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("logged") / "run"
    assert main(train_argv(mnist_root, out, "--logger", "tensorboard")) == 0
    return out


def test_events_hold_the_metrics_csv_numbers_the_settings_and_the_results(
    logged_run: Path,
) -> None:
    acc = assert_epochs_logged_once(logged_run)
    summary = json.loads((logged_run / "summary.json").read_text())
    config = json.loads((logged_run / "config.json").read_text())
    final = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in FINAL}
    assert final == {
        "final/best_val_accuracy": [(EPOCHS, np.float32(summary["best_val_acc"]))],
        "final/test_accuracy": [(EPOCHS, np.float32(summary["test"]["top1"]))],
        "final/test_top5": [(EPOCHS, np.float32(summary["test"]["top5"]))],
        "final/test_loss": [(EPOCHS, np.float32(summary["test"]["loss"]))],
    }
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    logged = {k: v.string_value or v.number_value for k, v in hparams.items()}
    assert logged == {k: v for k, v in config.items() if v is not None}  # True == 1.0
    assert config["logger"] == "tensorboard" and logged["lr"] == 0.05  # the MNIST recipe's
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert metrics == {"loss/train", "accuracy/train", "loss/val", "accuracy/val", *FINAL}


def test_the_image_grid_shows_training_images_as_they_are_stored(
    logged_run: Path, mnist_root: Path
) -> None:
    """De-normalised, each tile is one of the raw uint8 training images (to the rounding of
    the PNG); the first batch of 32 gives 4 rows of 8 (MNIST's recipe does not augment)."""
    (image,) = read_events(logged_run).Images(IMAGES_TAG)
    grid = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("L"))
    step = MNIST_SIDE + GRID_PADDING
    assert grid.shape == (4 * step + GRID_PADDING, 8 * step + GRID_PADDING)
    raw = read_idx(mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").astype(int)
    found = []
    for r in range(4):
        for c in range(8):
            y, x = GRID_PADDING + r * step, GRID_PADDING + c * step
            tile = grid[y : y + MNIST_SIDE, x : x + MNIST_SIDE].astype(int)
            distance = np.abs(raw - tile).max(axis=(1, 2))
            assert distance.min() <= 1, (r, c)
            found.append(int(distance.argmin()))
    assert len(set(found)) == 32


def test_training_is_bit_identical_with_the_logger(
    logged_run: Path, trained_run: TrainedRun, mnist_root: Path
) -> None:
    assert trained_run.argv == tuple(train_argv(mnist_root, trained_run.path))  # no --logger
    assert not (trained_run.path / LOG_DIR).exists()
    ours, theirs = metrics_rows(logged_run), metrics_rows(trained_run.path)
    assert without_timing(ours) == without_timing(theirs)
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(logged_run / name, trained_run.path / name)


@pytest.mark.parametrize("first", ["tensorboard", "none"])
def test_resume_continues_the_events_without_a_step_twice(
    first: str,
    mnist_root: Path,
    trained_run: TrainedRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopped after epoch 2's commit and resumed with the logger (on from the start, or
    turned on by the resume): steps 1..3 once, the grid once, the weights of one run."""
    out = tmp_path / "run"
    stopped_after_epoch_2(train_argv(mnist_root, out, "--logger", first), monkeypatch)
    if first == "tensorboard":
        assert [e.step for e in read_events(out).Scalars("loss/train")] == [1, 2]
    assert main(["train", "--resume", str(out), "--logger", "tensorboard"]) == 0
    assert_epochs_logged_once(out)
    assert without_timing(metrics_rows(out)) == without_timing(metrics_rows(trained_run.path))
    assert_same_weights(out / "last.safetensors", trained_run.path / "last.safetensors")


def test_the_first_batch_grid_draws_nothing_from_the_global_generator(tmp_path: Path) -> None:
    """A folder's DataLoader takes its base seed from torch's global generator when iterated;
    the grid must leave that generator as it found it. The images are solid colours, so any
    crop of them de-normalises to the colour itself."""
    colours = {"red": (255, 0, 0), "teal": (0, 128, 128)}
    for name, rgb in colours.items():
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 16), rgb).save(tmp_path / "train" / name / f"{i}.png")
    bundle = build_loaders(
        "folder", tmp_path, batch_size=4, image_size=8, resize_size=10, workers=0
    )  # augment: the default crop-flip
    torch.manual_seed(5)
    before = torch.get_rng_state()
    grid = first_batch_grid(bundle)
    assert torch.equal(torch.get_rng_state(), before)
    assert grid.shape == (3, 12, 42)  # one row of 4 tiles of 8, 2 between and around
    for i in range(4):
        centre = torch.tensor([255 * v for v in grid[:, 6, 2 + 10 * i + 4].tolist()])
        distance = min((centre - torch.tensor(rgb)).abs().max() for rgb in colours.values())
        assert distance < 1, (i, centre)


def test_only_the_main_process_writes(tmp_path: Path, trained_run: TrainedRun) -> None:
    """The calls of a run in a process other than rank 0 (or with --logger none) leave no
    file; the same calls on rank 0 write the events."""
    history = ckpt.load_state(trained_run.path / ckpt.STATE_FILE)["run"]["history"]
    summary = json.loads((trained_run.path / "summary.json").read_text())
    config = json.loads((trained_run.path / "config.json").read_text())
    bundle = build_loaders("mnist", config["data_path"], batch_size=32, val_split=64)
    for logger, main_process in [("tensorboard", False), ("none", True), ("tensorboard", True)]:
        run = tmp_path / f"{logger}-{main_process}"
        run.mkdir()
        tb = create_logger(logger, run, main_process)
        tb.start(bundle, history[:1])
        tb.epoch(history[1])
        tb.end(config, summary)
        tb.close()
        written = (run / LOG_DIR).exists()
        assert written == (logger == "tensorboard" and main_process), run.name
    acc = read_events(tmp_path / "tensorboard-True")
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]


def test_without_tensorboard_the_run_stops_before_it_starts(
    mnist_root: Path,
    trained_run: TrainedRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    out = tmp_path / "run"
    assert main(train_argv(mnist_root, out, "--logger", "tensorboard")) == 2
    line = "logger tensorboard needs the tensorboard package: pip install tensorboard"
    assert capsys.readouterr().err.splitlines() == [f"resnetlab train: error: {line}"]
    assert not out.exists()
    # A resume that turns it on is refused the same way, its folder untouched.
    copy = tmp_path / "copy"
    shutil.copytree(trained_run.path, copy)
    (copy / "summary.json").unlink()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in copy.iterdir())
    assert main(["train", "--resume", str(copy), "--logger", "tensorboard"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"resnetlab train: error: {line}"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in copy.iterdir()) == before
