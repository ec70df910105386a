"""Peak resident memory of a ResNet-20 CIFAR-10 training run (target: at most 1.5 GiB).

Run:  .venv/bin/python benchmarks/memory.py --data-path /work/shared/data
      (or set RESNETLAB_DATA; --iterations N, --model M; anything after -- goes to
      `resnetlab train` as it is, e.g. -- --precision bf16 --no-channels-last)

Runs `python -m resnetlab train --model resnet20 --dataset cifar10 --iterations N`
(the recipe's other settings: 45k/5k split, batch 128, evaluation of the validation and
test sets) in a subprocess and reads its peak resident set size from
resource.getrusage(RUSAGE_CHILDREN), which the kernel keeps for every waited-for child.
The floor, a process that only imports torch and resnetlab's training module, is
measured the same way, so the share of the run itself is visible.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from resnetlab.data.root import default_data_root

GIB = 1024**3
TARGET_GIB = 1.5


def peak_rss_of(cmd: list[str]) -> tuple[int, float]:
    """Run ``cmd`` to its end; its peak RSS in bytes (Linux: ru_maxrss is in KiB) and seconds.

    RUSAGE_CHILDREN holds the largest peak of all children waited for so far, so each
    measurement must be larger than every earlier one to show: the floor is measured first.
    """
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-2000:] + result.stderr[-2000:])
        raise SystemExit(f"command failed with exit status {result.returncode}: {' '.join(cmd)}")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, seconds


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", type=Path, default=None, help="root holding cifar-10-batches-py")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--iterations", type=int, default=30, help="training steps of the run")
    args = p.parse_args(argv)
    if platform.system() != "Linux":
        print("this benchmark reads Linux's ru_maxrss (KiB); other systems differ", file=sys.stderr)
        return 2
    root = args.data_path or default_data_root()
    if not (root / "cifar-10-batches-py").is_dir():
        print(f"no CIFAR-10 under {root}: pass --data-path or set RESNETLAB_DATA", file=sys.stderr)
        return 2
    print(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} cores")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    floor_cmd = [sys.executable, "-c", "import torch, resnetlab.training.engine"]
    floor, _ = peak_rss_of(floor_cmd)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "resnetlab", "train", "--model", args.model,
            "--dataset", "cifar10", "--data-path", str(root),
            "--iterations", str(args.iterations), "--output-dir", str(Path(tmp) / "run"),
            *extra,
        ]  # fmt: skip
        peak, seconds = peak_rss_of(cmd)
    shown = " ".join(["python", *cmd[1:12], "--output-dir", "TMP", *extra])
    print(f"command: {shown}")
    print(f"imports only (torch + resnetlab.training): {floor / GIB:.2f} GiB peak RSS")
    verdict = "within" if peak <= TARGET_GIB * GIB else "OVER"
    print(
        f"training run ({args.iterations} iterations, {seconds:.0f} s): {peak / GIB:.2f} GiB "
        f"peak RSS, {verdict} the {TARGET_GIB} GiB target"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0 if verdict == "within" else 1


if __name__ == "__main__":
    raise SystemExit(main())
