"""Fixtures shared by the test files: one torch thread, the tiny data, one trained run.

The trained run is session-scoped and shared read-only: a test that changes a run folder
(eval writes its confusion picture next to the checkpoint, resume rewrites it) works on a
``shutil.copytree`` of it in its own ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fakedata import read_idx, single_thread, write_mnist

from resnetlab.cli import main

# 384 - 64 held out = 320 training images: 10 steps of 32 (or of 2 x 16 under DDP).
MNIST_TRAIN, MNIST_TEST = 384, 97  # 97: odd, so two evaluation shards differ (49 and 48)


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for the whole session (see fakedata.single_thread); the
    subprocesses the tests start get OMP_NUM_THREADS=1."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MNIST in torchvision's raw idx layout (tests/fakedata.py)."""
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=MNIST_TRAIN, n_test=MNIST_TEST)


@pytest.fixture(scope="session")
def mnist_test_set(mnist_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images normalised by hand from the raw idx files, without resnetlab.data."""
    raw = mnist_root / "MNIST" / "raw"
    x = torch.from_numpy(read_idx(raw / "t10k-images-idx3-ubyte").copy()).float()
    y = torch.from_numpy(read_idx(raw / "t10k-labels-idx1-ubyte").copy()).long()
    return ((x / 255 - 0.1307) / 0.3081).unsqueeze(1), y


def train_argv(data_root: Path, out: Path, *extra: str, epochs: int = 3) -> list[str]:
    """`resnetlab train` of mnist_cnn on the tiny MNIST: 10 steps of 32 per epoch, fp32."""
    return [
        "train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(data_root),
        "--epochs", str(epochs), "-b", "32", "--val-split", "64", "--workers", "0",
        "--output-dir", str(out), "--print-freq", "2", "--precision", "fp32", *extra,
    ]  # fmt: skip


@dataclass(frozen=True)
class TrainedRun:
    path: Path  # the run folder: read it, never write into it
    stdout: str  # what `resnetlab train` printed
    argv: tuple[str, ...]


@pytest.fixture(scope="session")
def trained_run(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One finished 3-epoch run of mnist_cnn, for the train, eval, predict, export and DDP
    tests. fp32, so its logged numbers can be checked against an fp32 reference to 1e-5
    (auto is bf16 on native-bf16 CPUs: tests/test_fast_path.py checks that path)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    argv = train_argv(mnist_root, out)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "384 images, the official has 60000"
        assert main(argv) == 0
    return TrainedRun(out, buf.getvalue(), tuple(argv))
