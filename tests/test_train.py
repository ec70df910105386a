"""`resnetlab train`: it learns, it leaves a complete run, it stops on NaN, it refuses bad input.

Runs use a tiny generated MNIST (tests/fakedata.py) and mnist_cnn, a few seconds each.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TrainedRun
from fakedata import write_cifar10

from resnetlab.cli import main
from resnetlab.models import create_model
from resnetlab.models.weights import load_checkpoint, read_weights
from resnetlab.training.config import fill_recipe, merge, recipe
from resnetlab.training.optim import build_optimizer
from resnetlab.training.schedule import LrSchedule, build_scheduler

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

STEPS = 10  # (384 train - 64 val) / 32 per batch


@pytest.fixture
def data_root(mnist_root: Path) -> Path:
    return mnist_root


def args(data_root: Path, out: Path, *extra: str, epochs: int = 3) -> list[str]:
    return [
        "train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(data_root),
        "--epochs", str(epochs), "-b", "32", "--val-split", "64", "--workers", "0",
        "--output-dir", str(out), "--print-freq", "2", *extra,
    ]  # fmt: skip


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the hash of its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def reference_eval(model: torch.nn.Module, test_set: tuple) -> tuple[float, float]:
    """Test loss and top-1 of ``model`` on the hand-normalised idx test set."""
    x, y = test_set
    model.eval()
    with torch.inference_mode():
        logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    return loss, 100.0 * (logits.argmax(1) == y).float().mean().item()


@pytest.fixture
def finished(trained_run: TrainedRun) -> tuple[Path, str]:
    """The shared 3-epoch run (tests/conftest.py): read it, never write into it."""
    return trained_run.path, trained_run.stdout


# --- a complete run -----------------------------------------------------------------------------


def test_training_lowers_the_loss(finished: tuple[Path, str], mnist_test_set: tuple) -> None:
    run, _ = finished
    torch.manual_seed(0)
    untrained = create_model("mnist_cnn")
    trained, meta = load_checkpoint(run / "last.safetensors")
    loss_before, _ = reference_eval(untrained, mnist_test_set)
    loss_after, acc_after = reference_eval(trained, mnist_test_set)
    assert loss_before > 2.0  # ~ln(10) for an untrained 10-way classifier
    assert loss_after < 0.5 * loss_before
    assert acc_after > 50.0  # chance is 10%
    rows = read_metrics(run)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_a_run_leaves_config_metrics_summary_curves_and_checkpoints(
    finished: tuple[Path, str], mnist_test_set: tuple
) -> None:
    run, stdout = finished
    epochs = 3
    cfg = json.loads((run / "config.json").read_text())
    # Fully resolved: what the flags left unset is the recipe's, written out (so that
    # `--config config.json` repeats the run), and the length in both units.
    assert cfg["epochs"] == epochs and cfg["iterations"] == epochs * STEPS
    mnist_recipe = recipe("mnist_cnn", "mnist", "mnist")
    given = {"epochs", "batch_size", "val_split", "precision"}
    assert {k: cfg[k] for k in mnist_recipe if k not in given | {"iterations"}} == {
        k: v for k, v in mnist_recipe.items() if k not in given | {"iterations"}
    }
    assert cfg["eval_batch_size"] == 2 * 32  # `train --help`: "default: twice --batch-size"
    assert Path(cfg["data_path"]).is_absolute()
    not_applicable = ("resize_size", "per_class", "subset_seed", "weights")  # no folder, no subset
    unresolved = [k for k, v in cfg.items() if v is None and k not in not_applicable]
    assert unresolved == []

    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert [int(r["iteration"]) for r in rows] == [STEPS * e for e in range(1, epochs + 1)]
    assert {r["eval_split"] for r in rows} == {"val"}
    # The lr the run used, read back: the cosine curve of its config's lr and length,
    # at the last step of each epoch (the formula of Loshchilov & Hutter, without restarts).
    assert cfg["schedule"] == "cosine"
    for r in rows:
        it = int(r["iteration"]) - 1
        expected = cfg["lr"] * 0.5 * (1 + math.cos(math.pi * it / (epochs * STEPS)))
        assert float(r["lr"]) == pytest.approx(expected)

    summary = json.loads((run / "summary.json").read_text())
    accs = [float(r["eval_acc"]) for r in rows]
    assert summary["best_val_acc"] == max(accs)
    assert summary["best_epoch"] == accs.index(max(accs)) + 1
    assert read_weights(run / "best.safetensors")[1]["epoch"] == summary["best_epoch"]
    assert read_weights(run / "last.safetensors")[1]["epoch"] == epochs
    trained, meta = load_checkpoint(run / "last.safetensors")
    loss, top1 = reference_eval(trained, mnist_test_set)
    assert summary["test"]["top1"] == pytest.approx(top1)
    assert summary["test"]["loss"] == pytest.approx(loss, rel=1e-5)
    assert meta["classes"][0] == "0 - zero" and meta["input_size"] == [1, 28, 28]
    assert meta["mean"] == [0.1307] and meta["num_classes"] == 10
    for key in ("wall_time_s", "images_per_s", "device", "versions"):
        assert summary[key]
    assert set(summary["versions"]) >= {"torch", "torchvision", "resnetlab"}
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    epoch_lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == epochs
    assert all(
        "train loss" in line and "val loss" in line and "img/s" in line for line in epoch_lines
    )
    assert "total time" in stdout.splitlines()[-2]
    assert str(run / "summary.json") in stdout.splitlines()[-1]  # where to look next
    assert str(run / "curves.png") in stdout.splitlines()[-1]
    assert "\r" not in stdout and "\x1b" not in stdout  # not a terminal: plain lines only


def test_config_file_is_overridden_by_flags_and_config_json_reproduces_the_run(
    data_root: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "my.yaml"
    conf.write_text("lr: 0.02\nmomentum: 0.5\nepochs: 4\nlabel-smoothing: 0.1\n")
    first = tmp_path / "a"
    assert main([*args(data_root, first, epochs=1), "--config", str(conf), "--lr", "0.03"]) == 0
    cfg = json.loads((first / "config.json").read_text())
    assert cfg["lr"] == 0.03  # flag over file
    assert cfg["momentum"] == 0.5 and cfg["label_smoothing"] == 0.1  # file over recipe
    assert cfg["epochs"] == 1  # the flag's length replaces the file's
    assert cfg["weight_decay"] == recipe("mnist_cnn", "mnist", "mnist")["weight_decay"]  # recipe
    again = tmp_path / "b"
    assert main(["train", "--config", str(first / "config.json"), "--output-dir", str(again)]) == 0
    cfg2 = json.loads((again / "config.json").read_text())
    assert {**cfg2, "output_dir": None} == {**cfg, "output_dir": None}
    w1, _ = read_weights(first / "last.safetensors")
    w2, _ = read_weights(again / "last.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # same seed, same config: same weights


def test_without_a_validation_split_there_is_no_best(
    data_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    argv = args(data_root, out, epochs=1)
    argv[argv.index("--val-split") + 1] = "0"
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "no best checkpoint" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] is None and "no validation split" in summary["best_note"]
    assert not (out / "best.safetensors").exists()
    rows = read_metrics(out)
    assert rows[0]["eval_split"] == "test"


def test_bf16_channels_last_run_on_cpu(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*args(data_root, out, epochs=1), "--precision", "bf16", "--channels-last"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bf16" and math.isfinite(summary["test"]["loss"])


def test_iterations_decide_the_length_and_the_paper_schedule_scales(tmp_path: Path) -> None:
    """resnet20 on a tiny CIFAR-10: 24 train images, batch 8 -> 3 steps per epoch.

    --iterations 8 gives epochs of 3, 3 and 2 steps; the paper's lr drops sit at 50% and
    75% of the run: iterations 4 and 6 of 8 (0-based), as 32k and 48k of 64k.
    """
    root = write_cifar10(tmp_path / "data", per_batch=8, n_test=16)
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-path", str(root),
            "--iterations", "8", "-b", "8", "--val-split", "16", "--workers", "0",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["schedule"], cfg["momentum"], cfg["weight_decay"]) == ("paper", 0.9, 1e-4)
    assert (cfg["iterations"], cfg["epochs"]) == (8, 3)
    rows = read_metrics(out)
    assert [int(r["iteration"]) for r in rows] == [3, 6, 8]
    # lr of each epoch's last step: iteration 2 (before the drops), 5 (after the first), 7.
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1, 0.01, 0.001])


# --- recipes and schedules ----------------------------------------------------------------------


def paper_lr_curve(model: str, **given: object) -> dict[int, float]:
    """The lr at chosen iterations of the schedule a run of ``model`` on CIFAR-10 builds
    from its resolved config (as `train` does: resnetlab/training/config.py)."""
    cfg = fill_recipe(merge({}, {"model": model, "dataset": "cifar10", **given}), "cifar")
    s = LrSchedule(cfg.schedule, total=cfg.iterations, steps_per_epoch=352,
                   warmup=cfg.warmup_iterations or 0, warmup_method=cfg.warmup_method,
                   warmup_factor=cfg.warmup_factor)  # fmt: skip
    return {it: cfg.lr * s(it) for it in (0, 399, 400, 31_999, 32_000, 47_999, 48_000, 63_999)}


def test_paper_recipe_gives_the_papers_lr_curve_and_warms_up_only_the_deep_nets() -> None:
    """He et al. 2015, section 4.2: lr 0.1, divided by 10 at 32k and 48k iterations, stop at
    64k; for ResNet-110 "we use 0.01 to warm up the training until the training error is
    below 80% (about 400 iterations), and then go back to 0.1"."""
    paper = {0: 0.1, 399: 0.1, 400: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01,
             48_000: 0.001, 63_999: 0.001}  # fmt: skip
    assert paper_lr_curve("resnet56") == pytest.approx(paper)
    warm = {**paper, 0: 0.01, 399: 0.01}
    assert paper_lr_curve("resnet110") == pytest.approx(warm)
    assert paper_lr_curve("resnet110", warmup_epochs=0.0) == pytest.approx(paper)  # turned off
    # The user's length replaces the recipe's; everything else stays.
    cfg = fill_recipe(merge({}, {"model": "resnet20", "dataset": "cifar10", "epochs": 10}), "cifar")
    full = fill_recipe(merge({}, {"model": "resnet20", "dataset": "cifar10"}), "cifar")
    assert (cfg.epochs, cfg.iterations) == (10, None)
    assert {**vars(cfg), "epochs": None, "iterations": None} == {
        **vars(full),
        "epochs": None,
        "iterations": None,
    }


def test_paper_schedule_with_warmup_by_hand() -> None:
    s = LrSchedule("paper", total=64_000, steps_per_epoch=352, warmup=400,
                   warmup_method="constant", warmup_factor=0.1)  # fmt: skip
    assert s.milestones() == [32_000, 48_000]
    lr = {it: 0.1 * s(it) for it in (0, 399, 400, 31_999, 32_000, 47_999, 48_000, 63_999)}
    assert lr == pytest.approx(
        {
            0: 0.01,
            399: 0.01,
            400: 0.1,
            31_999: 0.1,
            32_000: 0.01,
            47_999: 0.01,
            48_000: 0.001,
            63_999: 0.001,
        }  # fmt: skip
    )
    short = LrSchedule("paper", total=6_400, steps_per_epoch=352)
    assert short.milestones() == [3_200, 4_800]  # same shape, a tenth of the length


def test_step_cosine_onecycle_and_linear_warmup_by_hand() -> None:
    step = LrSchedule("step", total=100, steps_per_epoch=10, step_size=3, gamma=0.1)
    assert [step(i) for i in (29, 30, 59, 60, 99)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.001])
    cos = LrSchedule("cosine", total=110, steps_per_epoch=10, warmup=10, warmup_factor=0.01)
    assert cos(0) == pytest.approx(0.01)
    assert cos(5) == pytest.approx(0.01 + 0.99 * 0.5)  # linear warm-up, half-way
    assert cos(10) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5)  # half-way through the cosine
    one = LrSchedule("onecycle", total=100, steps_per_epoch=10)
    assert one(0) == pytest.approx(1 / 25) and one(30) == pytest.approx(1.0)
    assert one(100) == pytest.approx(1 / 25 / 1e4)


def test_scheduler_drives_the_optimizer_per_iteration() -> None:
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, "sgd", 0.1, 0.9, False, 1e-4, False)
    sched = build_scheduler(opt, LrSchedule("paper", total=8, steps_per_epoch=4))
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    # Its state is plain numbers: it survives a weights_only round trip.
    restored = torch.load(_roundtrip(sched.state_dict()), weights_only=True)
    assert restored["last_epoch"] == 8


def _roundtrip(obj: object) -> object:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_no_wd_norm_bias_puts_every_1d_parameter_in_the_no_decay_group() -> None:
    model = create_model("resnet20")
    opt = build_optimizer(model, "sgd", 0.1, 0.9, True, 1e-4, True)
    decay, no_decay = opt.param_groups
    # In a conv/BN/linear net the 1-D parameters are exactly the BN scales, shifts and biases.
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in model.parameters() if p.ndim == 1}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    assert opt.defaults["foreach"] is True and opt.defaults["nesterov"] is True
    plain = build_optimizer(model, "sgd", 0.1, 0.9, False, 1e-4, False)
    assert len(plain.param_groups) == 1


# --- failures -------------------------------------------------------------------------------


def test_non_finite_loss_stops_at_once_and_keeps_the_last_checkpoint(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """After epoch 1 is committed, poison a weight: the first step of epoch 2 gives NaN."""
    from resnetlab.training.run_folder import RunFolder

    out = tmp_path / "run"
    real_commit = RunFolder.commit_epoch
    after_epoch_1 = {}

    def commit_then_poison(folder, state, model, *rest):  # noqa: ANN001
        real_commit(folder, state, model, *rest)
        after_epoch_1.update(snapshot(folder.path))
        with torch.no_grad():
            model.fc.bias.fill_(float("nan"))

    monkeypatch.setattr(RunFolder, "commit_epoch", commit_then_poison)
    assert main(args(data_root, out)) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"iteration {STEPS + 1} " in err[0] and "epoch 2" in err[0]
    base_lr = recipe("mnist_cnn", "mnist", "mnist")["lr"]
    lr = base_lr * 0.5 * (1 + math.cos(math.pi * STEPS / (3 * STEPS)))  # cosine, iteration 10
    assert f"lr {lr:.4g}" in err[0]
    assert "last checkpoint (epoch 1)" in err[0]
    assert snapshot(out) == after_epoch_1  # untouched: no state, weights or metrics of epoch 2
    assert not (out / "summary.json").exists()


def test_huge_lr_diverges_before_any_checkpoint(data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(args(data_root, out, "--lr", "1e12")) == 3
    err = capsys.readouterr().err
    assert "loss is not finite at iteration" in err and "no checkpoint was written" in err
    assert not (out / "last.state.pt").exists() and not (out / "last.safetensors").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "resnet21"], "unknown model 'resnet21'"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--lr", "-0.1"], "lr must be positive"),
        (["--lr", "nan"], "lr must be positive"),
        (["-b", "100000"], "is larger than the"),
        (["--data-path", "/nonexistent/root"], "mnist not found"),
        (["--val-split", "5000"], "val-split must be between"),
        (["--precision", "fp16", "--device", "cpu"], "fp16 needs CUDA"),
        (["--momentum", "1.5"], "momentum must be below 1"),
        (["--eval-every", "0"], "eval-every must be at least 1"),
        (["--min-res", "40"], "--min-res 40 is larger than the images (28)"),
        (["--min-res", "12"], "mnist_cnn cannot take --min-res 12 images"),
        (["--res-ramp-start", "0.8", "--res-ramp-end", "0.2"], "res-ramp-start <= res-ramp-end"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    data_root: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    out = tmp_path / "run"
    argv = args(data_root, out)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resnetlab train: error:"), err
    assert message in err[0]
    assert snapshot(out) == {}


def test_missing_names_and_torchrun_are_one_line_errors(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    assert main(["train", "--output-dir", str(tmp_path / "run")]) == 2
    assert "--model and --dataset are required" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # half a torchrun environment: no RANK, no MASTER_ADDR
    assert main(args(data_root, tmp_path / "run")) == 2
    assert "torchrun" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_config_files(tmp_path: Path, capsys) -> None:
    for text, message in [
        ("model: mnist_cnn\ndataset: svhn\n", "unknown dataset 'svhn'"),
        (
            "model: mnist_cnn\ndataset: mnist\nlearning_rate: 0.1\n",
            "unknown setting(s) learning_rate",
        ),
        ("model: mnist_cnn\ndataset: mnist\nlr: fast\n", "lr must be float"),
        ("model: mnist_cnn\ndataset: mnist\nepochs: 2.5\n", "epochs must be int"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("lr: [unclosed\n", "cannot parse config file"),
    ]:
        conf = tmp_path / "c.yaml"
        conf.write_text(text)
        assert main(["train", "--config", str(conf), "--output-dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (text, err)
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_never_overwritten_by_mistake(
    finished: tuple[Path, str], data_root: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished[0], run)  # the shared run stays safe if this test fails
    before = snapshot(run)
    assert main(args(data_root, run)) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    # Even with --overwrite, bad input is found before anything is removed.
    assert main([*args(data_root, run), "--overwrite", "-b", "100000"]) == 2
    assert "is larger than the" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    assert snapshot(run) == before


@pytest.mark.skipif(not os.environ.get("RESNETLAB_DATA"), reason="needs the real MNIST")
def test_real_mnist_a_few_hundred_steps_learn(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "mnist_cnn", "--dataset", "mnist", "--iterations", "300",
            "-b", "64", "--workers", "0", "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["top1"] > 90.0  # LeNet passes 90% on MNIST within a few hundred steps
