"""The weight EMA and the fast recipe: the average by hand, what a run evaluates and saves,
and a resumed run that ends on the very weights of an uninterrupted one."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from fakedata import write_cifar10
from interrupt import stopped_after_epoch_2
from safetensors.torch import load_file
from torch import nn

from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.training import checkpoint as ckpt
from resnetlab.training.config import TrainConfig, fill_recipe
from resnetlab.training.ema import create_ema, ema_decay_at

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_ema_follows_the_hand_computed_average() -> None:
    """Weights 1, 3, 3 with decay 0.9: copy, then decays 2/11 and 3/12 (the warm-up)."""
    lin = nn.Linear(2, 1, bias=False)
    ema = create_ema(lin, decay=0.9, every=1)
    for value in (1.0, 3.0, 3.0):
        lin.weight.data.fill_(value)
        ema.update_parameters(lin)
    # 1 -> 1 * 2/11 + 3 * 9/11 = 29/11 -> 29/11 * 1/4 + 3 * 3/4 = 32/11
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 32 / 11))
    assert ema_decay_at(10_000, 0.9) == 0.9  # long after the warm-up: the decay itself
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)


def test_updating_every_k_steps_applies_the_decay_k_times() -> None:
    lin = nn.Linear(1, 1, bias=False)
    ema = create_ema(lin, decay=0.99, every=4)
    lin.weight.data.fill_(0.0)
    ema.update_parameters(lin)  # copy
    lin.weight.data.fill_(1.0)
    ema.update_parameters(lin)  # 4 steps in: per-step decay min(0.99, 5/14), four times
    d = (5 / 14) ** 4
    assert ema.module.weight.item() == pytest.approx(1 - d)


def test_batchnorm_statistics_are_averaged_and_counts_copied() -> None:
    bn = nn.BatchNorm1d(3)
    ema = create_ema(bn, decay=0.5, every=1)
    ema.update_parameters(bn)  # copy: zeros
    bn.running_mean.fill_(2.0)
    bn.num_batches_tracked.fill_(7)
    ema.update_parameters(bn)  # decay min(0.5, 2/11)
    assert torch.allclose(ema.module.running_mean, torch.full((3,), 2 * 9 / 11))
    assert ema.module.num_batches_tracked.item() == 7


def test_the_average_keeps_channels_last() -> None:
    conv = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    ema = create_ema(conv, decay=0.9, every=1)
    assert ema.module.weight.is_contiguous(memory_format=torch.channels_last)


def test_flags_over_the_fast_recipe_change_only_what_they_set() -> None:
    """What the user sets wins; every other field is the fast recipe's, untouched."""
    fast = fill_recipe(TrainConfig(model="resnet56", dataset="cifar100", recipe="fast"), "cifar")
    given = {"lr": 0.1, "tta": "none", "model_ema": True}
    mine = fill_recipe(
        TrainConfig(model="resnet56", dataset="cifar100", recipe="fast", **given), "cifar"
    )
    assert {k: getattr(mine, k) for k in given} == given
    assert dataclasses.replace(mine, **{k: getattr(fast, k) for k in given}) == fast
    # The fast recipe differs from the default one (else --recipe would do nothing), and
    # the default is what an unset --recipe gives.
    default = fill_recipe(TrainConfig(model="resnet56", dataset="cifar100"), "cifar")
    assert default.recipe == "default" and default != dataclasses.replace(fast, recipe="default")
    with pytest.raises(UserError, match="fast recipe is for CIFAR models"):
        fill_recipe(TrainConfig(model="mnist_cnn", dataset="mnist", recipe="fast"), "mnist")


def test_bad_ema_flags_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["train", "--model", "resnet20", "--dataset", "cifar10", "--output-dir", str(tmp_path)]
    for extra, message in (
        (["--model-ema-decay", "1.5"], "model-ema-decay must be in [0, 1)"),
        (["--model-ema-steps", "0"], "model-ema-steps must be at least 1"),
        (["--recipe", "fast", "--model", "resnet18", "--dataset", "mnist"], "fast recipe"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 5 x 32 images - 64 held out: 3 steps of 32 per epoch
    root = write_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=32, n_test=32)
    out = tmp_path_factory.mktemp("fast") / "run"
    args = ["train", "--model", "resnet20", "--dataset", "cifar10", "--recipe", "fast"]
    args += ["--data-path", str(root), "--epochs", "2", "-b", "32", "--val-split", "64"]
    args += ["--workers", "0", "--output-dir", str(out), "--model-ema", "--model-ema-steps", "2"]
    args += ["--eval-every", "1"]  # the recipe's is 5: here both epochs log the average and raw
    assert main(args) == 0
    return out


def test_a_fast_run_evaluates_and_saves_the_average(
    fast_run: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = json.loads((fast_run / "config.json").read_text())
    assert (cfg["recipe"], cfg["model_ema"], cfg["tta"], cfg["epochs"]) == ("fast", True, "flip", 2)
    state = ckpt.load_state(fast_run / ckpt.STATE_FILE)
    averaged = {k.removeprefix("module."): v for k, v in state["model_ema"].items()}
    saved = load_file(str(fast_run / ckpt.LAST_WEIGHTS))
    assert saved.keys() == state["model"].keys()
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert not torch.equal(saved["conv1.weight"], state["model"]["conv1.weight"])
    rows = list(csv.DictReader(open(fast_run / "metrics.csv")))  # noqa: SIM115
    assert all(r["eval_acc"] and r["raw_eval_acc"] for r in rows)
    # The saved file, evaluated on its own, gives the number the run logged for it.
    capsys.readouterr()
    checkpoint = str(fast_run / ckpt.LAST_WEIGHTS)
    assert (
        main(["eval", "--checkpoint", checkpoint, "--split", "val", "--tta", "flip", "--json"]) == 0
    )  # noqa: E501
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(float(rows[-1]["eval_acc"]), abs=1e-6)
    summary = json.loads((fast_run / "summary.json").read_text())
    assert (summary["evaluated"], summary["tta"]) == ("ema", "flip")


def test_resume_with_an_ema_ends_on_the_uninterrupted_weights(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the state and the weights of epoch 2: the average resumes too."""
    args = ["train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(mnist_root)]
    args += ["--epochs", "3", "-b", "32", "--val-split", "224", "--workers", "0"]  # 5 steps
    args += ["--model-ema", "--model-ema-decay", "0.9", "--model-ema-steps", "1"]
    assert main([*args, "--output-dir", str(tmp_path / "ref")]) == 0

    stopped_after_epoch_2([*args, "--output-dir", str(tmp_path / "run")], monkeypatch)
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    for name in (ckpt.LAST_WEIGHTS, ckpt.BEST_WEIGHTS):
        a, b = load_file(str(tmp_path / "ref" / name)), load_file(str(tmp_path / "run" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
