"""Resume: a run killed at any moment continues to the very weights of an uninterrupted run.

The reference is the same command run without interruption; "identical" is
``torch.equal`` on every tensor of last.safetensors and best.safetensors.

The SIGKILL test picks its moments from a seed it prints (on stdout, shown by pytest when
the test fails, and in its assertion messages); ``RESNETLAB_TEST_SEED=<seed>`` replays
the same choices.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from interrupt import SEED_VARIABLE, replay_seed, stopped_after_epoch_2
from safetensors.torch import load_file

from resnetlab.cli import main
from resnetlab.training import checkpoint as ckpt

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

EPOCHS = 5


@pytest.fixture
def data_root(mnist_root: Path) -> Path:
    return mnist_root


def train_args(data_root: Path, out: Path, epochs: int = EPOCHS) -> list[str]:
    # 384 - 224 held out: 160 training images, 5 steps of 32 per epoch
    return [
        "train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(data_root),
        "--epochs", str(epochs), "-b", "32", "--val-split", "224", "--workers", "0",
        "--print-freq", "2", "--output-dir", str(out), "--seed", "3",
        "--augment", "crop-flip",  # random crops and flips must resume exactly too
    ]  # fmt: skip


def cli(args: list[str]) -> int:
    return main(args)


def assert_same_weights(a: Path, b: Path, msg: str = "") -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys(), msg
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{a.name}: {key} differs; {msg}"


def metrics(run: Path) -> list[dict]:
    """metrics.csv without the timing columns, which differ between any two runs."""
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


@pytest.fixture(scope="module")
def reference(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    assert cli(train_args(mnist_root, out)) == 0
    return out


def test_kill_during_state_write_keeps_last_readable_and_resume_matches(
    data_root: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A crash half-way through writing epoch 2's state leaves epoch 1's whole."""
    out = tmp_path / "run"
    real_write = Path.write_bytes
    calls = {"n": 0}

    def half_write_then_die(path: Path, data) -> int:  # noqa: ANN001
        if path.name.startswith(f".{ckpt.STATE_FILE}."):  # the state's temporary file
            calls["n"] += 1
            if calls["n"] == 2:  # epoch 2's state
                real_write(path, bytes(data)[: len(data) // 2])
                raise KeyboardInterrupt  # as abrupt as it gets in-process
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", half_write_then_die)
    assert cli(train_args(data_root, out)) == 130
    monkeypatch.undo()

    state = ckpt.load_state(out / ckpt.STATE_FILE)
    assert state["run"]["epoch"] == 1
    assert not list(out.glob(".*.tmp"))
    capsys.readouterr()
    assert cli(["train", "--resume", str(out)]) == 0
    assert f"resuming {out} after epoch 1 " in capsys.readouterr().out
    assert_same_weights(out / ckpt.LAST_WEIGHTS, reference / ckpt.LAST_WEIGHTS)
    assert_same_weights(out / ckpt.BEST_WEIGHTS, reference / ckpt.BEST_WEIGHTS)
    assert metrics(out) == metrics(reference)


def test_kill_between_state_and_weights_is_repaired(
    data_root: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """State of epoch 2 committed, last.safetensors still epoch 1: resume must not mix them."""
    out = tmp_path / "run"
    stopped_after_epoch_2(train_args(data_root, out), monkeypatch)
    assert ckpt.load_state(out / ckpt.STATE_FILE)["run"]["epoch"] == 2
    assert len(metrics(out)) == 1  # derived files still at epoch 1
    capsys.readouterr()
    assert cli(["train", "--resume", str(out)]) == 0
    assert f"resuming {out} after epoch 2 " in capsys.readouterr().out
    assert_same_weights(out / ckpt.LAST_WEIGHTS, reference / ckpt.LAST_WEIGHTS)
    assert_same_weights(out / ckpt.BEST_WEIGHTS, reference / ckpt.BEST_WEIGHTS)
    assert metrics(out) == metrics(reference)


def committed_epoch(run: Path) -> int:
    """The last epoch whose state was committed (0 before the first)."""
    state_file = run / ckpt.STATE_FILE
    return ckpt.load_state(state_file)["run"]["epoch"] if state_file.exists() else 0


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "resnetlab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_sigterm_stops_with_one_line_and_resumes_bit_identical(
    data_root: Path, reference: Path, tmp_path: Path
) -> None:
    """kill (SIGTERM) after the first commit: exit 128 + 15, one line, the run resumes."""
    out = tmp_path / "run"
    proc = _spawn(train_args(data_root, out))
    while not (out / ckpt.STATE_FILE).exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)  # 4 epochs were left: it cannot have finished
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert err.decode().strip().splitlines() == ["resnetlab train: terminated"]
    assert not list(out.glob(".*.tmp")) and not (out / "summary.json").exists()
    assert cli(["train", "--resume", str(out)]) == 0
    assert_same_weights(out / ckpt.LAST_WEIGHTS, reference / ckpt.LAST_WEIGHTS)
    assert metrics(out) == metrics(reference)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(
    data_root: Path, reference: Path, tmp_path: Path
) -> None:
    """SIGKILL three times at random moments (during training, evaluation or a write).

    The moments come from a seed printed here and in the assertion messages; set
    ``RESNETLAB_TEST_SEED`` to it to replay them. The seed fixes each delay as a fraction
    of the rest of the run (timed by the reference run), so where a kill lands (which step,
    which write) is the same up to the jitter of the machine's speed.
    """
    out = tmp_path / "run"
    seed = replay_seed()
    print(f"replay with {SEED_VARIABLE}={seed}")
    rng = random.Random(seed)
    kills = 0
    args = train_args(data_root, out)
    window = json.loads((reference / "summary.json").read_text())["wall_time_s"]
    resumed_from = []  # the committed epoch each resumed process starts after
    while kills < 3:
        resuming = (out / "config.json").exists()
        if resuming:
            resumed_from.append(committed_epoch(out))
        proc = _spawn(["train", "--resume", str(out)] if resuming else args)
        # Start the clock when training starts: the run prints its header line then.
        for line in proc.stdout:
            if line.startswith(b"mnist_cnn on mnist"):
                break
        if kills == 0:  # the first kill after a commit, so that a real resume follows
            while not (out / ckpt.STATE_FILE).exists() and proc.poll() is None:
                time.sleep(0.01)
        done = len(metrics(out)) if (out / "metrics.csv").exists() else 0
        time.sleep(rng.uniform(0.0, window * (EPOCHS - done) / EPOCHS))
        if proc.poll() is not None:  # finished before the kill: nothing more to interrupt
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    if not (out / "summary.json").exists():
        start = committed_epoch(out)
        resumed_from.append(start)
        proc = _spawn(["train", "--resume", str(out)])
        stdout, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{SEED_VARIABLE}={seed}: {err.decode()}"
        if start:
            assert f"resuming {out} after epoch {start} ".encode() in stdout, seed
    msg = f"{SEED_VARIABLE}={seed} replays it; {kills} kills, resumed after epochs {resumed_from}"
    assert kills >= 1 and max(resumed_from) >= 1, msg
    assert (out / "summary.json").exists(), msg
    assert_same_weights(out / ckpt.LAST_WEIGHTS, reference / ckpt.LAST_WEIGHTS, msg)
    assert_same_weights(out / ckpt.BEST_WEIGHTS, reference / ckpt.BEST_WEIGHTS, msg)
    assert metrics(out) == metrics(reference), msg
    assert not list(out.glob(".*.tmp")), msg


class _Payload:
    """Pickles to a call of os.system: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_malicious_state_file_is_refused_without_running(
    data_root: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((reference / "config.json").read_bytes())
    marker = tmp_path / "pwned"
    state = ckpt.load_state(reference / ckpt.STATE_FILE)
    state["run"]["history"] = _Payload(marker)
    with open(run / ckpt.STATE_FILE, "wb") as f:
        pickle.dump(state, f)  # a plain pickle, as an attacker would write it
    torch.save(state, run / "zip.state.pt")  # and the same inside torch's zip format

    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    assert cli(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "unsafe pickle" in err
    assert (
        cli(["eval", "--checkpoint", str(run / "zip.state.pt"), "--data-path", str(data_root)]) == 2
    )
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before


def test_resume_refuses_changed_settings_and_other_models(
    reference: Path, capsys: pytest.CaptureFixture
) -> None:
    before = sorted((p.name, p.stat().st_mtime_ns) for p in reference.iterdir())
    assert cli(["train", "--resume", str(reference), "--model", "resnet20"]) == 2
    assert "holds a run of mnist_cnn, not resnet20" in capsys.readouterr().err
    assert cli(["train", "--resume", str(reference), "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in reference.iterdir()) == before


def test_resume_refuses_a_state_of_another_model(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((reference / "config.json").read_bytes())
    state = ckpt.load_state(reference / ckpt.STATE_FILE)
    state["meta"]["model"] = "resnet20"
    torch.save(state, run / ckpt.STATE_FILE)
    assert cli(["train", "--resume", str(run)]) == 2
    assert "is a checkpoint of resnet20, not mnist_cnn" in capsys.readouterr().err
    # Same name, other weights (a layer missing): the strict load names the mismatch.
    state["meta"]["model"] = "mnist_cnn"
    del state["model"]["fc.weight"]
    torch.save(state, run / ckpt.STATE_FILE)
    assert cli(["train", "--resume", str(run), "--workers", "0"]) == 2
    assert "1 missing key (fc.weight)" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["config.json", ckpt.STATE_FILE]


def test_rng_states_survive_a_weights_only_round_trip(tmp_path: Path) -> None:
    """Python, numpy and torch draws after a restore repeat the draws after the save."""
    import numpy as np

    ckpt.save_state(tmp_path / "s.pt", {"rng": ckpt.rng_state()})
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    ckpt.set_rng_state(ckpt.load_state(tmp_path / "s.pt")["rng"])
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    assert first == again
