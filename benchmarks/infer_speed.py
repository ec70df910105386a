"""Images/s of our inference path against torchvision's eager fp32 ResNet-50, same weights.

Run:  .venv/bin/python benchmarks/infer_speed.py            # speed + logit difference, 1-3 min
      .venv/bin/python benchmarks/infer_speed.py --agreement --data-path /work/shared/data
          # also: top-1 agreement on the CIFAR-10 test set of a resnet20 trained here for
          # --train-epochs (default 1, ~5-10 min on 2 cores), or of --checkpoint RUN_DIR
      (--quick for a smoke run, --reps N, --precision auto|fp32|bf16, --threads N,
       --compile to also time the torch.compile variant, ~30 s more to compile)

Ours is `resnetlab.inference.fast.optimize_for_inference` (BatchNorm folded into the
convolutions, channels_last, bf16 where the hardware has it natively, inference_mode);
the baseline is torchvision's `resnet50()` in eval mode under `torch.inference_mode`
with contiguous fp32 inputs, as torchvision's reference scripts evaluate. All run the
same weights on the same batch (batch 32, 224x224), alternating, after one warm-up pass
each (with --compile, that pass is inductor's compile); medians are compared. A large
fp32 and bf16 matmul timed in the same run give the ceilings for the achieved GFLOP/s.
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
from torch import nn

from resnetlab.device import cpu_model, native_bf16
from resnetlab.inference.fast import optimize_for_inference
from resnetlab.reports.summary import count_macs

TARGET = 2.2  # the target for ResNet-50, batch 32, 224x224 (assumes native bf16)


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def matmul_gflops(dtype: torch.dtype, reps: int, max_n: int = 4096) -> tuple[float, int]:
    """Median GFLOP/s of an n x n matmul, n doubled until one product takes 0.2 s.

    Emulated bf16 runs at a few GFLOP/s, where a 4096 product would take minutes.
    """
    n = 256
    while True:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        start = time.perf_counter()
        a @ b
        if time.perf_counter() - start > 0.2 or n >= max_n:
            break
        n *= 2
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9, n


def time_alternating(fns: dict, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved so drifting load hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def speed(args: argparse.Namespace) -> None:
    batch, size = args.batch_size, args.image_size
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    gflop = 2 * count_macs(reference, (3, size, size)) / 1e9  # per image; folding keeps it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an explicit bf16 on emulating hardware warns
        models = {"torchvision": reference}
        models["ours"] = optimize_for_inference(reference, precision=args.precision)
        if args.compile:
            models["ours+compile"] = optimize_for_inference(
                reference, precision=args.precision, compile=True
            )
    ours = models["ours"]
    x = torch.randn(batch, 3, size, size)

    print(f"ours: {ours.dtype}, channels_last, {len(ours.folded)} BatchNorms folded")
    outputs = {}
    with torch.inference_mode():
        for name, model in models.items():  # warm-up: oneDNN primitives, inductor compile
            start = time.perf_counter()
            outputs[name] = model(x)
            print(f"warm-up {name}: {time.perf_counter() - start:.1f} s")
        ref_out = outputs["torchvision"]
        for name, out in outputs.items():
            if name != "torchvision":
                print(
                    f"largest logit difference {name} vs fp32 eager: "
                    f"{(out - ref_out).abs().max().item():.3g} (logits span "
                    f"{ref_out.min().item():.3g} .. {ref_out.max().item():.3g}; top-1 agrees "
                    f"on {(out.argmax(1) == ref_out.argmax(1)).sum().item()}/{batch})"
                )
        times = time_alternating({n: (lambda m=m: m(x)) for n, m in models.items()}, args.reps)
    fp32_gflops, n32 = matmul_gflops(torch.float32, max(3, args.reps))
    bf16_gflops, n16 = matmul_gflops(torch.bfloat16, max(3, args.reps))

    ips = {name: batch / statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"{name:>12}: {ips[name]:6.2f} images/s, median {statistics.median(t):.3f} s/batch"
            f" of {len(t)} ({', '.join(f'{s:.2f}' for s in t)}) = {ips[name] * gflop:.1f} GFLOP/s"
        )
    print(
        f"matmul ceilings: fp32 {fp32_gflops:.1f} GFLOP/s (n={n32}), "
        f"bf16 {bf16_gflops:.1f} GFLOP/s (n={n16}); ResNet-50: {gflop:.2f} GFLOP per image"
    )
    for name in models:
        if name == "torchvision":
            continue
        achieved = ips[name] * gflop
        ratio = ips[name] / ips["torchvision"]
        verdict = "met" if ratio >= TARGET else "NOT met"
        print(
            f"RATIO {name} / torchvision eager fp32: {ratio:.2f}x (target {TARGET}x: {verdict});"
            f" {100 * achieved / fp32_gflops:.0f}% of the fp32 matmul, "
            f"{100 * achieved / bf16_gflops:.0f}% of the bf16 matmul"
        )
    if not native_bf16("cpu"):
        ceiling = fp32_gflops / (ips["torchvision"] * gflop)
        print(
            "  no native bf16 on this CPU (no AVX-512 BF16 / AMX), which the target assumes; "
            f"the fp32 matmul rate is {ceiling:.2f}x the baseline's"
        )


# --- CIFAR-10 agreement --------------------------------------------------------------------


def cifar_loader(root: str | None, train: bool, batch_size: int, mean, std, seed: int = 0):
    from resnetlab.data import InMemoryLoader, load_arrays

    images, labels = load_arrays("cifar10", root, train=train)
    return InMemoryLoader(
        images,
        labels,
        batch_size=batch_size,
        mean=mean,
        std=std,
        train=train,
        seed=seed,
        drop_last=train,
    )


def train_briefly(root: str | None, epochs: float, seed: int) -> nn.Module:
    """A resnet20 trained for a few epochs: enough to classify, so agreement means something.

    A minimal loop (SGD with Nesterov momentum, one-cycle lr, crop-flip), not the paper's
    recipe: the point is a model with trained weights and BN statistics, quickly.
    """
    from resnetlab.data import DATASETS
    from resnetlab.models import create_model

    info = DATASETS["cifar10"]
    torch.manual_seed(seed)
    loader = cifar_loader(root, True, 128, info.mean, info.std, seed)
    steps = max(1, int(epochs * len(loader)))
    model = create_model("resnet20").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps, pct_start=0.2)
    model.train()
    step, start = 0, time.perf_counter()
    while step < steps:
        loader.set_epoch(step // len(loader))
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x.to(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0 or step == steps:
                print(
                    f"  train step {step}/{steps}  loss {loss.item():.3f}  "
                    f"{time.perf_counter() - start:.0f} s",
                    flush=True,
                )
            if step == steps:
                break
    return model.eval()


def agreement(args: argparse.Namespace) -> None:
    from resnetlab.data import DATASETS

    info = DATASETS["cifar10"]
    mean, std = info.mean, info.std
    if args.checkpoint:
        from resnetlab.models.weights import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint)
        mean, std = meta.get("mean") or mean, meta.get("std") or std
        print(f"CIFAR-10 model: {meta.get('model')} from {args.checkpoint}")
    else:
        print(f"training resnet20 on CIFAR-10 for {args.train_epochs} epoch(s) ...")
        start = time.perf_counter()
        model = train_briefly(args.data_path, args.train_epochs, args.seed)
        print(f"  trained in {time.perf_counter() - start:.0f} s")
    model = model.eval().to(memory_format=torch.contiguous_format)
    test = cifar_loader(args.data_path, False, 500, mean, std)
    limit = args.test_images or len(test.images)

    paths = {"fp32": optimize_for_inference(model, precision="fp32")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths["bf16"] = optimize_for_inference(model, precision="bf16")
    preds: dict[str, list[torch.Tensor]] = {"eager": [], **{k: [] for k in paths}}
    labels, max_diff = [], dict.fromkeys(paths, 0.0)
    start = time.perf_counter()
    with torch.inference_mode():
        for x, y in test:
            if sum(len(t) for t in labels) >= limit:
                break
            ref = model(x)
            preds["eager"].append(ref.argmax(1))
            for name, fast in paths.items():
                out = fast(x)
                preds[name].append(out.argmax(1))
                max_diff[name] = max(max_diff[name], (out - ref).abs().max().item())
            labels.append(y)
    y = torch.cat(labels)
    eager = torch.cat(preds["eager"])
    print(f"test set: {len(y)} images, {time.perf_counter() - start:.0f} s")
    print(f"  fp32 eager top-1 accuracy {100 * (eager == y).float().mean().item():.2f}%")
    for name in paths:
        p = torch.cat(preds[name])
        print(
            f"  ours {name}: top-1 agreement with fp32 eager "
            f"{100 * (p == eager).float().mean().item():.2f}% (target >= 99.5%), accuracy "
            f"{100 * (p == y).float().mean().item():.2f}%, largest logit difference "
            f"{max_diff[name]:.3g}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=7, help="timed passes of each model (median)")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's, all cores)")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 4, 112x112, 2 reps")
    p.add_argument("--agreement", action="store_true", help="also the CIFAR-10 top-1 agreement")
    p.add_argument("--data-path", help="dataset root (default $RESNETLAB_DATA or ./data)")
    p.add_argument("--checkpoint", metavar="RUN_DIR", help="a trained CIFAR-10 run to compare")
    p.add_argument("--train-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-images", type=int, help="compare on the first N test images only")
    p.add_argument("--skip-speed", action="store_true", help="only the agreement part")
    p.add_argument(
        "--compile", action="store_true", help="also time optimize_for_inference(compile=True)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.image_size, args.reps = 4, 112, 2
        args.train_epochs = min(args.train_epochs, 0.05)
        args.test_images = args.test_images or 1000
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}; native bf16: {native_bf16('cpu')}"
    )
    print(f"load average at start: {load()}")
    print(
        f"ResNet-50, batch {args.batch_size}, {args.image_size}x{args.image_size}, {args.reps} reps"
    )
    if not args.skip_speed:
        speed(args)
    if args.agreement:
        agreement(args)
    print(f"load average at end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
