"""Images/s of the in-memory loader against torchvision's CIFAR-10 DataLoader pipeline.

Run:  .venv/bin/python benchmarks/input_pipeline.py --data-path /work/shared/data
      (or set RESNETLAB_DATA; --quick for a smoke run, --threads N for N intra-op threads)

Both pipelines produce the same thing, normalised float32 batches of 128 randomly
cropped (4 px zero padding) and flipped CIFAR-10 training images on the CPU, and
are timed in the same process, alternating, several repetitions each; the median
of each is reported with the ratio to the better torchvision configuration.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader, Subset

from resnetlab.data import DATASETS, InMemoryLoader, load_arrays
from resnetlab.data.root import default_data_root
from resnetlab.device import cpu_model


class _CIFAR10(torchvision.datasets.CIFAR10):
    """Skips only torchvision's MD5 check: the shared copy is a re-encoded, pixel-exact one."""

    def _check_integrity(self) -> bool:
        return True


def time_fast(images, labels, batch_size: int, epoch: int) -> float:
    info = DATASETS["cifar10"]
    loader = InMemoryLoader(
        images, labels, batch_size=batch_size, mean=info.mean, std=info.std, train=True
    )
    loader.set_epoch(epoch)
    start = time.perf_counter()
    n = 0
    for x, _ in loader:  # one full epoch, including its permutation and crop draws
        n += len(x)
    return n / (time.perf_counter() - start)


def tutorial_train_set(root: Path) -> _CIFAR10:
    """CIFAR-10 train as the PyTorch tutorial and akamaster's repo read it: per-image transforms."""
    info = DATASETS["cifar10"]
    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(info.mean, info.std),
        ]
    )
    return _CIFAR10(str(root), train=True, transform=transform)


def time_torchvision(root: Path, batch_size: int, workers: int, n_images: int, seed: int) -> float:
    dataset = tutorial_train_set(root)
    g = torch.Generator().manual_seed(seed)
    subset = Subset(dataset, torch.randperm(len(dataset), generator=g)[:n_images].tolist())
    loader = DataLoader(subset, batch_size=batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()  # includes starting the workers, as every epoch does
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", type=Path, default=None, help="root holding cifar-10-batches-py")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=5, help="repetitions of each measurement")
    p.add_argument(
        "--baseline-images", type=int, default=10_000, help="images per torchvision repetition"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads in this process (DataLoader workers always use 1); "
        "1 by default: on a small shared machine more threads only add contention",
    )
    p.add_argument("--quick", action="store_true", help="2 repetitions, 2,000 baseline images")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.reps, args.baseline_images = 2, 2_000
    root = args.data_path or default_data_root()
    if not (root / "cifar-10-batches-py").is_dir():
        print(f"no CIFAR-10 under {root}: pass --data-path or set RESNETLAB_DATA", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*MD5 differs.*")
    images, labels = load_arrays("cifar10", root, train=True)

    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}; batch {args.batch_size}, {args.reps} reps, "
        f"{args.baseline_images} images per torchvision rep"
    )
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    results: dict[str, list[float]] = {"fast": [], "tv0": [], "tv2": []}
    for rep in range(args.reps):  # alternate, so a burst of load hits all of them alike
        results["fast"].append(time_fast(images, labels, args.batch_size, rep))
        for w in (0, 2):
            ips = time_torchvision(root, args.batch_size, w, args.baseline_images, rep)
            results[f"tv{w}"].append(ips)
        print(
            f"rep {rep + 1}: fast {results['fast'][-1]:,.0f}  torchvision 0 workers "
            f"{results['tv0'][-1]:,.0f}  2 workers {results['tv2'][-1]:,.0f} images/s"
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    best = max(med["tv0"], med["tv2"])
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"median images/s: in-memory loader {med['fast']:,.0f}")
    print(f"                  torchvision DataLoader, 0 workers {med['tv0']:,.0f}")
    print(f"                  torchvision DataLoader, 2 workers {med['tv2']:,.0f}")
    print(f"ratio to the better baseline: {med['fast'] / best:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
