"""End-to-end training images/s: `resnetlab train`'s default path against the usual way.

Run:  .venv/bin/python benchmarks/train_speed.py --data-path /work/shared/data
      (or set RESNETLAB_DATA; --models resnet20 resnet56, --reps 5, --steps 10,
      --threads N, --compile to also time torch.compile, --quick for a smoke run)

"resnetlab" is what `resnetlab train --model M --dataset cifar10` runs: the recipe, the
precision and memory format "auto" resolves to on this machine, the in-memory loader,
the optimizer and schedule of the recipe and `train_one_epoch` itself. "resnetlab
fp32 NCHW" is the same with precision fp32 and channels_last off, to tell the gain of
the format from that of the loader and loop. The baseline trains the same model the way
the PyTorch CIFAR-10 tutorial and akamaster/pytorch_resnet_cifar10 do: torchvision's
CIFAR10 with per-image RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize in a
DataLoader with 0 or 2 workers, fp32, NCHW, plain SGD (momentum 0.9, wd 1e-4), loss and
accuracy read every step. All variants run interleaved in one process, batch 128,
``--reps`` repetitions of ``--steps`` steps each after warm-up; medians are compared.
The baseline's epoch start (worker start-up, first batch) is left out of its timing,
which favours it.

Also printed: training FLOPs per image (forward and backward, counted by
torch.utils.flop_counter), the GFLOP/s each variant achieves, and a large fp32 and
bf16 matmul measured in the same run: the matmul rate over the FLOPs per image is the
images/s this machine could reach if every convolution ran as fast as a big matmul.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from resnetlab.data import build_loaders
from resnetlab.data.root import default_data_root
from resnetlab.device import (
    cpu_flags,
    cpu_model,
    native_bf16,
    resolve_channels_last,
    resolve_precision,
)
from resnetlab.models import create_model
from resnetlab.reports.summary import count_macs
from resnetlab.training.config import resolve_config
from resnetlab.training.engine import TrainStep, train_one_epoch
from resnetlab.training.optim import build_optimizer
from resnetlab.training.schedule import LrSchedule, build_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from input_pipeline import tutorial_train_set  # noqa: E402  (the baseline's dataset)

BATCH = 128


def machine_lines() -> list[str]:
    """CPU model, the SIMD flags that matter here, versions, threads and load."""
    cpu, flags = cpu_model(), cpu_flags()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return [
        f"cpu: {cpu}, {os.cpu_count()} cores, flags {' '.join(simd) or 'unknown'}, "
        f"torch capability {torch.backends.cpu.get_cpu_capability()}, "
        f"torch threads {torch.get_num_threads()}",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}",
    ]


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def matmul_gflops(dtype: torch.dtype, n: int = 1024, tries: int = 3) -> float:
    """GFLOP/s of an n x n matmul in ``dtype``: the machine's practical compute ceiling.

    The best of ``tries`` timings of at least 0.3 s: other load only ever slows it down.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(tries):
        reps, start = 0, time.perf_counter()
        while reps == 0 or time.perf_counter() - start < 0.3:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def train_flops_per_image(name: str) -> tuple[float, float]:
    """(forward MACs, forward + backward FLOPs) of one CIFAR-10 image through ``name``."""
    model = create_model(name, num_classes=10, in_channels=3)
    macs = count_macs(model, (3, 32, 32))
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    counter = FlopCounterMode(display=False)
    with counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return macs, counter.get_total_flops() / 2


class Ours:
    """The objects `resnetlab train` builds, stepped by its own `train_one_epoch`."""

    def __init__(self, name: str, root: Path, flags: dict, compile: bool = False) -> None:
        cfg = resolve_config({}, {"model": name, "dataset": "cifar10", "data_path": str(root)})
        for key, value in flags.items():
            setattr(cfg, key, value)
        device = torch.device("cpu")
        cfg.precision = resolve_precision(cfg.precision, device)
        cfg.channels_last = resolve_channels_last(cfg.channels_last, device)
        self.cfg = cfg
        bundle = build_loaders(
            "cifar10",
            root,
            batch_size=cfg.batch_size,
            val_split=cfg.val_split,
            seed=cfg.seed,
            augment=cfg.augment,
            device=device,
            channels_last=cfg.channels_last,
        )
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_channels=3).to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(
            model,
            cfg.opt,
            cfg.lr,
            cfg.momentum,
            cfg.nesterov,
            cfg.weight_decay,
            cfg.no_wd_norm_bias,
        )
        steps_per_epoch = len(bundle.train)
        schedule = LrSchedule(
            name=cfg.schedule,
            total=cfg.iterations or cfg.epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
        )
        self.step = TrainStep(
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, schedule),
            scaler=torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16"),
            criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
            precision=cfg.precision,
        )
        self.net = torch.compile(model) if compile else model
        self.loader = bundle.train
        self.epoch = 0

    def label(self) -> str:
        fmt = "channels_last" if self.cfg.channels_last else "NCHW"
        return f"{self.cfg.precision} {fmt}"

    def run(self, steps: int) -> float:
        """Images/s of ``steps`` steps of `train_one_epoch`, loader included."""
        self.loader.set_epoch(self.epoch)
        self.epoch += 1
        start = time.perf_counter()
        quiet = lambda *a, **k: None  # noqa: E731
        stats = train_one_epoch(
            self.net, self.loader, self.step, epoch=0, epochs=1, start=0, total=steps,
            print_freq=self.cfg.print_freq, log=quiet,
        )  # fmt: skip
        return stats["images"] / (time.perf_counter() - start)


class Baseline:
    """The tutorial's / akamaster's loop: per-image transforms in a DataLoader, fp32, NCHW."""

    def __init__(self, name: str, root: Path, workers: int) -> None:
        dataset = tutorial_train_set(root)
        self.loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
        torch.manual_seed(0)
        self.model = create_model(name, num_classes=10, in_channels=3)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4
        )
        self.criterion = nn.CrossEntropyLoss()

    def run(self, steps: int) -> float:
        """Images/s of ``steps`` steps after the epoch's first batch (workers started)."""
        self.model.train()
        batches = iter(self.loader)
        next(batches)
        n, loss_sum, correct = 0, 0.0, 0.0
        start = time.perf_counter()
        for _ in range(steps):
            x, y = next(batches)
            out = self.model(x)
            loss = self.criterion(out, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.item() * len(y)  # akamaster's AverageMeter updates, every step
            correct += (out.topk(1, dim=1).indices[:, 0] == y).float().sum().item()
            n += len(y)
        seconds = time.perf_counter() - start
        del batches  # stops the workers
        return n / seconds


def timed_first(run: Callable[[int], float], steps: int) -> float:
    """Seconds of the first ``steps`` steps (compilation, oneDNN primitive creation)."""
    start = time.perf_counter()
    run(steps)
    return time.perf_counter() - start


def bench_model(name: str, root: Path, args: argparse.Namespace) -> None:
    macs, flops = train_flops_per_image(name)
    print(
        f"\n== {name}: forward {macs / 1e6:.1f} MMACs = {2 * macs / 1e9:.4f} GFLOP per image; "
        f"training (forward + backward, counted) {flops / 1e9:.4f} GFLOP per image "
        f"({flops / (2 * macs):.2f} x forward)"
    )
    flags = {}
    if args.precision:
        flags["precision"] = args.precision
    if args.channels_last is not None:
        flags["channels_last"] = args.channels_last
    variants: dict[str, Callable[[int], float]] = {}
    ours = Ours(name, root, flags)
    variants[f"resnetlab ({ours.label()})"] = ours.run
    if args.plain:
        plain = Ours(name, root, {"precision": "fp32", "channels_last": False})
        variants["resnetlab fp32 NCHW"] = plain.run
    for w in (0, 2):
        variants[f"baseline, {w} workers"] = Baseline(name, root, w).run
    if args.compile:
        compiled = Ours(name, root, flags, compile=True)
        first = timed_first(compiled.run, 2)
        print(f"torch.compile: first 2 steps took {first:.1f} s (compilation included)")
        variants["resnetlab + torch.compile"] = compiled.run
    for run in variants.values():
        run(args.warmup)
    results: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.reps):  # interleaved, so a burst of load hits all of them alike
        for key, run in variants.items():
            results[key].append(run(args.steps))
        print(
            f"rep {rep + 1} (load {load_average()}): "
            + ", ".join(f"{k} {v[-1]:,.1f}" for k, v in results.items())
            + " images/s",
            flush=True,
        )
    # Again after the model's runs: a burst of load at the start would understate the ceiling.
    args.mm_fp32 = max(args.mm_fp32, matmul_gflops(torch.float32))
    med = {k: statistics.median(v) for k, v in results.items()}
    best_key = max((k for k in med if k.startswith("baseline")), key=med.get)
    ours_key = next(iter(med))
    print(f"median images/s over {args.reps} reps of {args.steps} steps (batch {BATCH}):")
    for key, value in med.items():
        print(
            f"  {key:<38} {value:8,.1f} img/s  {value * flops / 1e9:6.1f} GFLOP/s  "
            f"{value / med[best_key]:5.2f}x the better baseline"
        )
    print(f"ratio {ours_key} / {best_key}: {med[ours_key] / med[best_key]:.2f}x")
    if args.compile:
        gain = 1 / med[ours_key] - 1 / med["resnetlab + torch.compile"]  # s per image saved
        note = (
            f"pays back its compile time after {first / gain:,.0f} images"
            if gain > 0
            else "is not faster in steady state"
        )
        print(f"torch.compile {note}")
    for label, gf in (("fp32", args.mm_fp32), ("bf16", args.mm_bf16)):
        if label == "bf16" and not native_bf16(torch.device("cpu")):
            print("no bf16 ceiling: bf16 is emulated on this CPU (see the matmul rate above)")
            continue
        print(
            f"ceiling at the {label} matmul rate ({gf:.1f} GFLOP/s): "
            f"{gf * 1e9 / flops:,.0f} img/s; {ours_key} reaches "
            f"{100 * med[ours_key] * flops / 1e9 / gf:.0f}% of it"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", type=Path, default=None, help="root holding cifar-10-batches-py")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--reps", type=int, default=5, help="repetitions of each measurement")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--precision", help="force resnetlab's precision (default: auto)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="also time resnetlab + torch.compile")
    p.add_argument("--quick", action="store_true", help="resnet20 only, 1 rep of 3 steps")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.models, args.reps, args.steps, args.warmup = ["resnet20"], 1, 3, 1
    root = args.data_path or default_data_root()
    if not (root / "cifar-10-batches-py").is_dir():
        print(f"no CIFAR-10 under {root}: pass --data-path or set RESNETLAB_DATA", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*MD5 differs.*")
    warnings.filterwarnings("ignore", message=".*GradScaler.*")
    for line in machine_lines():
        print(line)
    cpu = torch.device("cpu")
    print(f"native bf16 on this CPU: {native_bf16(cpu)}; load average before: {load_average()}")
    args.mm_fp32 = matmul_gflops(torch.float32)
    args.mm_bf16 = matmul_gflops(torch.bfloat16, n=512 if not native_bf16(cpu) else 1024, tries=1)
    print(f"matmul: fp32 {args.mm_fp32:.1f} GFLOP/s, bf16 {args.mm_bf16:.1f} GFLOP/s")
    for name in args.models:
        bench_model(name, root, args)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
