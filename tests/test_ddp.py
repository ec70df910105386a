"""Several processes (torchrun, DDP on CPU with gloo): the same training as one process.

The independent fact: with the loaders' sharding, step k of 2 ranks x batch B sees exactly
the samples of step k of one process x batch 2B (rank r takes positions r, r + 2, ... of
the epoch's permutation), and DDP averages the two ranks' mean gradients, which is the
mean over the 2B samples. So for mnist_cnn (no BatchNorm, no augmentation on MNIST) the
weights, losses and accuracies must match a single-process run within float rounding.

Three groups of 2 processes are started (gloo on CPU): two by the real `torchrun -m
resnetlab` (one resuming a single-process checkpoint, one training a BatchNorm model), one
by torch.multiprocessing with probes inside (a fresh run, stopped in epoch 2 by a NaN on
one rank, resumed in one process).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import MNIST_TEST, TrainedRun
from fakedata import write_cifar10
from safetensors.torch import load_file

from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.training.config import TrainConfig
from resnetlab.training.distributed import World, world_from_env
from resnetlab.training.engine import resplit_batch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_TEST = MNIST_TEST  # 97, odd: the two evaluation shards differ (49 and 48), as padding would hide
TIMEOUT_S = 240  # a group that hangs fails the test instead of the suite


@pytest.fixture
def data_root(mnist_root: Path) -> Path:
    # 384 - 64 held out = 320 training images: 10 steps of 32, or of 2 x 16.
    return mnist_root


def args(data_root: Path, out: Path, batch: int, *extra: str) -> list[str]:
    """The shared run's command (tests/conftest.py: train_argv) with another batch."""
    return [
        "train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(data_root),
        "--epochs", "3", "-b", str(batch), "--val-split", "64", "--workers", "0",
        "--output-dir", str(out), "--print-freq", "4", "--precision", "fp32", *extra,
    ]  # fmt: skip


# A weight EMA updated every step: averaged on each rank, saved by rank 0, resumed by all.
EMA = ("--model-ema", "--model-ema-decay", "0.9", "--model-ema-steps", "1")


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_numbers(a: dict[str, str], b: dict[str, str]) -> None:
    """A metrics row equal up to float rounding (timings excluded)."""
    assert a["epoch"] == b["epoch"] and a["iteration"] == b["iteration"]
    for key in ("lr", "train_loss", "train_acc", "eval_loss", "eval_acc"):
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-6), key


def assert_close_weights(a: Path, b: Path) -> None:
    """Float32 sums in another order (batch split, conv kernels) drift by ~1e-5 in 20 steps; a wrong
    gradient average (e.g. a sum: twice the lr) or other samples per step move them by ~1e-1."""
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()  # also: no "module." prefix from the DDP wrapper
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-4)


def reference_eval(weights: Path, test_set: tuple) -> tuple[float, float]:
    """Test loss and top-1 from the hand-normalised idx test set and a plain forward."""
    from resnetlab.models.weights import load_checkpoint

    model, _ = load_checkpoint(weights)
    x, y = test_set
    with torch.inference_mode():
        logits = model(x)
    return F.cross_entropy(logits, y).item(), 100.0 * (logits.argmax(1) == y).float().mean().item()


def torchrun() -> list[str]:
    """The installed torchrun, 2 processes on this machine, starting `python -m resnetlab`."""
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe), "--standalone", "--nproc-per-node", "2", "-m", "resnetlab"]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_at_epoch_2(real):  # noqa: ANN001, ANN201
    """train_one_epoch that raises KeyboardInterrupt (as Ctrl-C) when epoch 2 starts."""

    def wrapped(model, loader, *a, epoch, **k):  # noqa: ANN001, ANN202
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, loader, *a, epoch=epoch, **k)

    return wrapped


# --- references: one process, global batch 32 ---------------------------------------------------


@pytest.fixture
def reference(trained_run: TrainedRun, mnist_root: Path) -> Path:
    """The shared run (tests/conftest.py) is this file's command with batch 32."""

    def settings(argv: list[str]) -> list[str]:  # what decides the numbers
        drop = {i + d for i, a in enumerate(argv) if a in ("--print-freq", "--output-dir")
                for d in (0, 1)}  # fmt: skip
        return [a for i, a in enumerate(argv) if i not in drop]

    assert settings(list(trained_run.argv)) == settings(args(mnist_root, trained_run.path, 32))
    return trained_run.path


@pytest.fixture(scope="module")
def reference_ema(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref-ema") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args(mnist_root, out, 32, *EMA)) == 0
    return out


# --- a fresh run of 2 processes, stopped in epoch 2 by a NaN on rank 1, resumed in one --------


class _Poisoned:
    """A loader whose first batch has NaN images."""

    def __init__(self, loader) -> None:  # noqa: ANN001
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):  # noqa: ANN204
        for i, (x, y) in enumerate(self.loader):
            yield (torch.full_like(x, float("nan")) if i == 0 else x), y


def _rank_main(rank: int, port: int, argvs: list[list[str]], logs: str, data_root: str) -> None:
    """One of two processes: the CLI as torchrun would start it, with probes at epoch 2.

    At the start of epoch 2 (after rank 0 committed epoch 1) each rank saves its parameters
    and evaluates the sharded test set; then rank 1 alone gets a NaN batch, which DDP's
    averaged gradient spreads to rank 0 one step later.
    """
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    import resnetlab.training.engine as train_mod
    from resnetlab.data import build_loaders
    from resnetlab.training.evaluate import evaluate

    log_dir = Path(logs)
    real = train_mod.train_one_epoch

    def probe(model, loader, *a, epoch, **k):  # noqa: ANN001, ANN202
        if epoch == 1:
            dist.barrier()
            bare = model.module  # the DDP wrapper's model
            torch.save(dict(bare.named_parameters()), log_dir / f"params-{rank}.pt")
            bundle = build_loaders(
                "mnist", data_root, batch_size=16, rank=rank, world_size=2, augment="none"
            )
            result = evaluate(bare, bundle.test, num_classes=10)
            (log_dir / f"eval-{rank}.json").write_text(json.dumps(result.as_dict()))
            if rank == 1:
                loader = _Poisoned(loader)
        return real(model, loader, *a, epoch=epoch, **k)

    train_mod.train_one_epoch = probe
    with (
        open(log_dir / f"stdout-{rank}", "w") as out,
        open(log_dir / f"stderr-{rank}", "w") as err,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(argvs[rank])
        except SystemExit as e:
            code = e.code
    (log_dir / f"code-{rank}").write_text(str(code))


@pytest.fixture(scope="module")
def ddp_run(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Rank 0 writes to run/, rank 1 is pointed at elsewhere/ (which must stay absent)."""
    import torch.multiprocessing as mp

    base = tmp_path_factory.mktemp("ddp")
    run, elsewhere, logs = base / "run", base / "elsewhere", base / "logs"
    logs.mkdir()
    argvs = [args(mnist_root, run, 16), args(mnist_root, elsewhere, 16)]
    ctx = mp.start_processes(
        _rank_main,
        args=(free_port(), argvs, str(logs), str(mnist_root)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two processes did not finish in time")
    shutil.copy(run / "last.safetensors", logs / "epoch1.safetensors")  # before any resume
    return {"run": run, "elsewhere": elsewhere, "logs": logs}


def test_ranks_hold_identical_parameters_and_only_rank_0_prints_or_writes(
    ddp_run: dict[str, Path],
) -> None:
    logs = ddp_run["logs"]
    p0 = torch.load(logs / "params-0.pt", weights_only=True)
    p1 = torch.load(logs / "params-1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and len(p0) == 10
    saved = load_file(str(logs / "epoch1.safetensors"))  # what rank 0 wrote after epoch 1
    for key in p0:  # after 10 steps on different samples: DDP's averaged gradients
        assert torch.equal(p0[key], p1[key]), key
        assert torch.equal(p0[key], saved[key]), key

    assert (logs / "code-0").read_text() == "3" and (logs / "code-1").read_text() == "3"
    assert not ddp_run["elsewhere"].exists()  # rank 1 wrote nothing, not even a folder
    assert (logs / "stdout-1").read_text() == ""
    err1 = (logs / "stderr-1").read_text().splitlines()
    assert all(line.startswith("resnetlab: warning:") for line in err1), err1  # data warnings
    out0 = (logs / "stdout-0").read_text()
    assert "2 processes x batch 16 = global batch 32; lr 0.05 as given" in out0
    # Rank 1's loss is NaN at iteration 11, rank 0's at 12: both stop at the same check
    # and name the first one (rank 0 alone would say 12 and run on into a lone all_reduce).
    err0 = (logs / "stderr-0").read_text().splitlines()[-1]
    assert err0.startswith("resnetlab train: error: loss is not finite at iteration 11 (epoch 2")
    assert "last checkpoint (epoch 1)" in err0
    run = ddp_run["run"]
    assert {p.name for p in run.iterdir()} >= {"config.json", "last.state.pt", "curves.png"}
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["batch_size"], cfg["world_size"]) == (16, 2)  # per process, and how many


def test_sharded_evaluation_counts_each_sample_once_and_equals_one_process(
    ddp_run: dict[str, Path], data_root: Path, mnist_test_set: tuple
) -> None:
    from resnetlab.data import build_loaders
    from resnetlab.models.weights import load_checkpoint
    from resnetlab.training.evaluate import evaluate

    logs = ddp_run["logs"]
    r0 = json.loads((logs / "eval-0.json").read_text())
    r1 = json.loads((logs / "eval-1.json").read_text())
    assert r0 == r1  # every rank gets the totals
    assert r0["num_samples"] == N_TEST  # not 98: no padded duplicate
    assert sum(map(sum, r0["confusion_matrix"])) == N_TEST
    # The weights rank 0 saved after epoch 1 are the ones both ranks evaluated.
    weights = logs / "epoch1.safetensors"
    model, meta = load_checkpoint(weights)
    assert meta["epoch"] == 1
    bundle = build_loaders("mnist", data_root, batch_size=16, augment="none")
    single = evaluate(model, bundle.test, num_classes=10).as_dict()
    assert r0["confusion_matrix"] == single["confusion_matrix"]
    assert r0["per_class"] == single["per_class"]
    assert (r0["top1"], r0["top5"]) == (single["top1"], single["top5"])
    assert r0["loss"] == pytest.approx(single["loss"], rel=1e-6)
    assert len(mnist_test_set[1]) == N_TEST
    loss, top1 = reference_eval(weights, mnist_test_set)
    assert r0["top1"] == pytest.approx(top1) and r0["loss"] == pytest.approx(loss, rel=1e-5)


def test_ddp_checkpoint_resumes_in_one_process_as_one_run_of_the_global_batch(
    ddp_run: dict[str, Path], reference: Path, capsys: pytest.CaptureFixture
) -> None:
    run = ddp_run["run"]
    first = rows(run)
    assert len(first) == 1
    assert_same_numbers(first[0], rows(reference)[0])  # 2 x 16 == 1 x 32, epoch 1
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0  # one process: batch 32 per process
    assert f"resuming {run} after epoch 1 " in capsys.readouterr().out
    for ours, theirs in zip(rows(run), rows(reference), strict=True):
        assert_same_numbers(ours, theirs)
    assert_close_weights(run / "last.safetensors", reference / "last.safetensors")


# --- torchrun resuming a single-process run ----------------------------------------------------


@pytest.mark.parametrize("ema", [False, True], ids=["weights", "ema"])
def test_torchrun_resumes_a_single_process_run_with_the_same_global_batch(
    data_root: Path,
    mnist_test_set: tuple,
    ema: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """`torchrun -m resnetlab train --resume` over 2 processes continues a run of 1 x 32."""
    import resnetlab.training.engine as train_mod

    reference = request.getfixturevalue("reference_ema" if ema else "reference")
    run = tmp_path / "run"
    monkeypatch.setattr(train_mod, "train_one_epoch", stop_at_epoch_2(train_mod.train_one_epoch))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(args(data_root, run, 32, *(EMA if ema else ()))) == 130
    monkeypatch.undo()
    assert len(rows(run)) == 1

    done = subprocess.run(
        [*torchrun(), "train", "--resume", str(run)],
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith(f"resuming {run}") for line in lines) == 1  # rank 0 only
    assert "2 processes x batch 16 = global batch 32" in done.stdout
    assert sum(line.startswith("epoch   2/3") for line in lines) == 1
    assert sum(line.startswith("epoch   3/3") for line in lines) == 1

    for ours, theirs in zip(rows(run), rows(reference), strict=True):
        assert_same_numbers(ours, theirs)  # epoch 2 by DDP: global train loss and accuracy
    assert_close_weights(run / "last.safetensors", reference / "last.safetensors")
    ours = json.loads((run / "summary.json").read_text())["test"]
    theirs = json.loads((reference / "summary.json").read_text())["test"]
    assert ours == pytest.approx(theirs, rel=1e-5)
    loss, top1 = reference_eval(run / "last.safetensors", mnist_test_set)
    assert ours["top1"] == pytest.approx(top1) and ours["loss"] == pytest.approx(loss, rel=1e-5)


def test_batchnorm_model_evaluates_as_the_checkpoint_rank_0_saves(tmp_path: Path) -> None:
    """resnet20 under torchrun: each rank's BatchNorm statistics saw its own batches, so
    without rank 0's being shared before evaluation the reported numbers would not be
    those of the saved model (here the losses differ by about 0.3%)."""
    from resnetlab.data import build_loaders
    from resnetlab.models.weights import load_checkpoint
    from resnetlab.training.evaluate import evaluate

    root = write_cifar10(tmp_path / "data", per_batch=16, n_test=33)  # 33: uneven shards
    run = tmp_path / "run"
    done = subprocess.run(
        [*torchrun(), "train", "--model", "resnet20", "--dataset", "cifar10",
         "--data-path", str(root), "--iterations", "6", "-b", "8", "--val-split", "16",
         "--workers", "0", "--precision", "fp32", "--output-dir", str(run)],
        env=quiet_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    model, _ = load_checkpoint(run / "last.safetensors")
    bundle = build_loaders("cifar10", root, batch_size=8, val_split=16, augment="none")
    val = evaluate(model, bundle.val, num_classes=10)
    test = evaluate(model, bundle.test, num_classes=10)
    last = rows(run)[-1]
    assert float(last["eval_loss"]) == pytest.approx(val.loss, rel=1e-5)
    assert float(last["eval_acc"]) == pytest.approx(val.top1)
    summary = json.loads((run / "summary.json").read_text())["test"]
    assert summary == pytest.approx({"top1": test.top1, "top5": test.top5, "loss": test.loss})


# --- refusals, before any process waits for another ---------------------------------------------


def test_sync_bn_on_cpu_is_one_line_and_exit_2_before_the_rendezvous(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import torch.distributed as dist

    def must_not_join(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("joined the process group before refusing the flags")

    monkeypatch.setattr(dist, "init_process_group", must_not_join)
    out = tmp_path / "run"
    argv = [*args(data_root, out, 16), "--sync-bn"]
    assert main(argv) == 2  # one process
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["resnetlab train: error: --sync-bn needs CUDA (nccl): PyTorch's "
                   "SyncBatchNorm does not run on CPU/gloo"]  # fmt: skip
    torchrun_env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in torchrun_env.items():
        monkeypatch.setenv(key, value)
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        try:
            code = main(argv)
        except SystemExit as e:  # the other ranks leave quietly with the same status
            code = e.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == (1 if rank == 0 else 0) and all("--sync-bn needs CUDA" in e for e in err)
    assert not out.exists()


def test_world_from_env_and_the_global_batch_on_resume() -> None:
    full = {"RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert world_from_env({**full, "WORLD_SIZE": "4"}) == World(1, 4, 1)
    assert world_from_env({}) == World()
    with pytest.raises(UserError, match="MASTER_ADDR, MASTER_PORT not: .* torchrun"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    with pytest.raises(UserError, match="outside 0..1"):
        world_from_env({**full, "RANK": "2", "WORLD_SIZE": "2"})
    cfg = TrainConfig(batch_size=64, world_size=2)  # global batch 128
    resplit_batch(cfg, World(0, 4, 0))
    assert (cfg.batch_size, cfg.world_size) == (32, 4)
    resplit_batch(cfg, World())
    assert (cfg.batch_size, cfg.world_size) == (128, 1)
    with pytest.raises(UserError, match="global batch 128 .* does not split over 3"):
        resplit_batch(cfg, World(0, 3, 0))


# Per-image augmentation is drawn from (seed, epoch, image index) and the balanced order from
# the run's generator, so two ranks see the images one process would, augmented the same.
PER_IMAGE = ("--auto-augment", "ta_wide", "--random-erase", "0.5", "--sampler", "balanced")


def test_per_image_augmentation_and_the_balanced_sampler_split_over_ranks_as_one_process(
    data_root: Path, reference: Path, tmp_path: Path
) -> None:
    one = tmp_path / "one"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args(data_root, one, 32, *PER_IMAGE)) == 0
    two = tmp_path / "two"
    done = subprocess.run(
        [*torchrun(), *args(data_root, two, 16, *PER_IMAGE)],
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for ours, theirs in zip(rows(two), rows(one), strict=True):
        assert_same_numbers(ours, theirs)
    assert_close_weights(two / "last.safetensors", one / "last.safetensors")
    # The options are on: without them the same command (the reference) trains other weights.
    on = load_file(str(one / "last.safetensors"))
    off = load_file(str(reference / "last.safetensors"))
    assert not torch.allclose(on["fc2.weight"], off["fc2.weight"], atol=1e-3)
