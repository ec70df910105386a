"""A run folder belongs to one process, and a write that fails ends the run in one line.

Runs use a tiny generated MNIST (tests/fakedata.py) and mnist_cnn.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from interrupt import stopped_after_epoch_2

from resnetlab.cli import main
from resnetlab.training.run_folder import RunFolder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def data_root(mnist_root: Path) -> Path:
    return mnist_root


def train_args(data_root: Path, out: Path, epochs: int = 2) -> list[str]:
    return [
        "train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(data_root),
        "--epochs", str(epochs), "-b", "32", "--val-split", "32", "--workers", "0",
        "--output-dir", str(out), "--precision", "fp32",
    ]  # fmt: skip


def hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_a_training_into_a_folder_in_use_is_refused(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.lock()  # as a training that is running there holds it
    try:
        assert main(train_args(data_root, out, epochs=1)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another resnetlab train" in err[0]
        assert not (out / "config.json").exists()  # nothing written
    finally:
        holder.unlock()
    assert main(train_args(data_root, out, epochs=1)) == 0  # released: the folder is free
    assert (out / "summary.json").is_file()


def test_two_trainings_started_at_once_into_one_folder(data_root, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "resnetlab", *train_args(data_root, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2).splitlines()
    refused = [line for line in refused if "warning:" not in line]  # tiny data
    assert len(refused) == 1, refused
    # Refused while the first runs (the lock), or after it (a folder holding a run or a
    # finished one): on a busy machine the second may start only once the first is done.
    assert "in use by another" in refused[0] or "already holds a" in refused[0]


def _limit_file_size() -> None:
    """In the child: files may not grow past 4 KiB, and going past is an error, not a kill."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_write_that_fails_is_one_line_and_keeps_the_checkpoint(data_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    stopped_after_epoch_2(train_args(data_root, out, epochs=3), monkeypatch)
    before = hashes(out)
    cmd = [sys.executable, "-m", "resnetlab", "train", "--resume", str(out)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300
    )
    err = [line for line in done.stderr.splitlines() if "warning:" not in line]  # tiny data
    assert done.returncode == 1, done.stderr
    assert len(err) == 1 and "Traceback" not in done.stderr
    assert err[0].startswith("resnetlab train: error: cannot write ") and str(out) in err[0]
    assert "File too large" in err[0] or "disk full" in err[0]
    after = hashes(out)
    assert after == before  # the last checkpoint and every record; no temporary left behind
    assert main(["train", "--resume", str(out)]) == 0  # and the run still resumes


@pytest.mark.parametrize(("extra", "looks"), [((), 1), (("--val-split", "0"), 3)])
def test_summary_counts_the_looks_at_the_test_set(data_root, tmp_path, extra, looks):
    """With a validation split the test set is seen once, at the end; without one, at every
    evaluated epoch (here 1, 2, 3), the final figure reusing the last look."""
    out = tmp_path / "run"
    assert main([*train_args(data_root, out, epochs=3), *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_evaluations"] == looks
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert sum(",test," in row for row in rows) == (looks if extra else 0)
