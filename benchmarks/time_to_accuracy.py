"""Minutes and epochs to a CIFAR-10 test accuracy, against the baseline's 200-epoch recipe.

Run:  .venv/bin/python benchmarks/time_to_accuracy.py --data-path /work/shared/data
      (--target 91.25, --max-epochs 200, --threads N; anything after -- goes to
      `resnetlab train`, e.g. -- --model resnet56 --epochs 40, or -- --recipe default)

The default target, 91.25%, is ResNet-20's published test accuracy (8.75% error, He et
al. 2015, Table 6), which akamaster/pytorch_resnet_cifar10 trains for 200 epochs to
reach. Ours: `python -m resnetlab train --model resnet20 --dataset cifar10 --recipe fast
--val-split 0` plus the flags given (--val-split 0 trains on all 50,000 images and
evaluates the test set after every epoch, as the baseline does; the fast recipe has its
own length, 30 epochs, another recipe runs for --max-epochs). The run's metrics.csv
is read as it grows; at the first epoch whose test accuracy reaches the target the run
is interrupted and its wall time (start-up, data loading, evaluation, checkpoints
included) and epochs are reported. The baseline is not run for 200 epochs: its epoch
time is measured here (training images/s of the better of 0 and 2 DataLoader workers,
from benchmarks/train_speed.py, plus its per-epoch test evaluation) and multiplied by 200.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from input_pipeline import _CIFAR10  # noqa: E402
from train_speed import BATCH, Baseline, load_average, machine_lines  # noqa: E402

from resnetlab.data import DATASETS  # noqa: E402
from resnetlab.data.root import default_data_root  # noqa: E402

BASELINE_EPOCHS = 200
TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000


def baseline_epoch_seconds(model: str, root: Path, steps: int, reps: int) -> float:
    """One epoch of the baseline: 50,000 training images and the 10,000 test images."""
    train_ips = []
    for workers in (0, 2):
        base = Baseline(model, root, workers)
        base.run(2)  # warm-up
        train_ips.append(statistics.median(base.run(steps) for _ in range(reps)))
    info = DATASETS["cifar10"]
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(info.mean, info.std)])
    test = _CIFAR10(str(root), train=False, transform=to_tensor)
    net = base.model.eval()
    n, start = 0, time.perf_counter()
    with torch.no_grad():
        for i, (x, _) in enumerate(DataLoader(test, batch_size=BATCH, num_workers=0)):
            net(x)
            if i == 0:  # warm-up: eval-mode kernels are set up on the first batch
                start = time.perf_counter()
                continue
            n += len(x)
            if n >= steps * BATCH:
                break
    eval_ips = n / (time.perf_counter() - start)
    print(
        f"baseline: training {train_ips[0]:,.1f} img/s (0 workers), {train_ips[1]:,.1f} "
        f"(2 workers); test evaluation {eval_ips:,.0f} img/s"
    )
    return TRAIN_IMAGES / max(train_ips) + TEST_IMAGES / eval_ips


def read_rows(metrics: Path) -> list[dict[str, str]]:
    """metrics.csv as far as written (it is replaced atomically after every epoch)."""
    try:
        with open(metrics, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def run_to_target(
    cmd: list[str], metrics: Path, target: float, max_epochs: int, log: Path
) -> tuple[int | None, float, float | None, list[dict[str, str]]]:
    """(epoch reaching ``target`` or None, wall seconds, its test accuracy, rows)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        reached, acc, rows = None, None, []
        try:
            while True:
                done = proc.poll() is not None
                rows = read_rows(metrics)
                for row in rows:
                    if row["eval_split"] == "test" and float(row["eval_acc"]) >= target:
                        reached, acc = int(row["epoch"]), float(row["eval_acc"])
                        break
                if reached or done or len(rows) >= max_epochs:
                    break
                time.sleep(1.0)
            seconds = time.perf_counter() - start
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # the run stops cleanly (exit status 130)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if proc.returncode not in (0, 130, -signal.SIGINT) and reached is None:
        sys.stderr.write(log.read_text()[-3000:])
        raise SystemExit(f"`resnetlab train` failed with exit status {proc.returncode}")
    return reached, seconds, acc, rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", type=Path, default=None, help="root holding cifar-10-batches-py")
    p.add_argument("--target", type=float, default=91.25, help="test accuracy in percent")
    p.add_argument("--max-epochs", type=int, default=BASELINE_EPOCHS, help="stop here at most")
    p.add_argument("--threads", type=int, help="torch threads, here and in the run")
    p.add_argument("--baseline-steps", type=int, default=10, help="0: skip the baseline")
    p.add_argument("--baseline-reps", type=int, default=3)
    p.add_argument("--keep", type=Path, help="keep the run in this folder (default: a temp one)")
    args = p.parse_args(argv)
    if not 0 < args.target <= 100 or args.max_epochs < 1:
        p.error("--target must be in (0, 100] and --max-epochs at least 1")
    root = args.data_path or default_data_root()
    if not (root / "cifar-10-batches-py").is_dir():
        print(f"no CIFAR-10 under {root}: pass --data-path or set RESNETLAB_DATA", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*MD5 differs.*")
    model = extra[extra.index("--model") + 1] if "--model" in extra else "resnet20"
    for line in machine_lines():
        print(line)
    print(f"load average before: {load_average()}")

    baseline_s = None
    if args.baseline_steps:
        baseline_s = baseline_epoch_seconds(model, root, args.baseline_steps, args.baseline_reps)
        print(
            f"baseline epoch {baseline_s:,.0f} s x {BASELINE_EPOCHS} epochs = "
            f"{baseline_s * BASELINE_EPOCHS / 60:,.1f} min"
        )

    flags = ["--dataset", "cifar10", "--data-path", str(root), "--val-split", "0"]
    if "--model" not in extra:
        flags += ["--model", model]
    if "--recipe" not in extra:
        flags += ["--recipe", "fast"]
    given = flags + extra
    own_length = given[given.index("--recipe") + 1] == "fast"  # 30 epochs, one cycle
    if not own_length and "--epochs" not in extra and "--iterations" not in extra:
        flags += ["--epochs", str(args.max_epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "run"
        cmd = [sys.executable, "-m", "resnetlab", "train", *flags, *extra]
        cmd += ["--output-dir", str(out)]
        env_threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
        os.environ.update(env_threads)
        print("command: python -m resnetlab train " + " ".join([*flags, *extra]), flush=True)
        log = Path(tmp) / "train.log"
        reached, seconds, acc, rows = run_to_target(
            cmd, out / "metrics.csv", args.target, args.max_epochs, log
        )
    print(f"load average after: {load_average()}")
    epoch_s = sum(float(r["seconds"]) for r in rows[: reached or len(rows)])
    if reached is None:
        best = max((float(r["eval_acc"]) for r in rows if r["eval_acc"]), default=float("nan"))
        print(
            f"target {args.target}% not reached in {len(rows)} epochs "
            f"({seconds / 60:.1f} min; best test accuracy {best:.2f}%)"
        )
        return 1
    print(
        f"reached {acc:.2f}% (target {args.target}%) after {reached} epochs: "
        f"{seconds / 60:.2f} min wall ({epoch_s / 60:.2f} min in the epochs themselves)"
    )
    if baseline_s is not None:
        total = baseline_s * BASELINE_EPOCHS
        print(
            f"ratio: baseline {BASELINE_EPOCHS} epochs {total / 60:,.1f} min / ours "
            f"{seconds / 60:.2f} min = {total / seconds:.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
