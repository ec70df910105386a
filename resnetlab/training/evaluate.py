"""Evaluate a trained model: top-1, top-5, loss, per-class accuracy and a confusion matrix.

  resnetlab eval --checkpoint runs/resnet20-cifar10-20260101-120000
  resnetlab eval --checkpoint runs/RUN/last.safetensors --split val --tta flip --json
  resnetlab eval --checkpoint model.safetensors --dataset cifar10 --data-path ~/data

A run folder gives its best checkpoint (else its last); the dataset, data root and
validation split default to the ones the run trained with. Accuracies are in percent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.device import resolve_device, resolve_precision
from resnetlab.errors import UserError


@dataclass
class EvalResult:
    num_samples: int
    loss: float  # mean cross-entropy (no label smoothing)
    top1: float  # percent
    top5: float  # percent; top-k with k = min(5, classes)
    per_class: list[float]  # percent correct per true class (nan for a class with no samples)
    confusion: list[list[int]]  # [true][predicted] counts

    def as_dict(self, classes: list[str] | None = None) -> dict[str, Any]:
        names = classes or [str(i) for i in range(len(self.per_class))]
        return {
            "num_samples": self.num_samples,
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "per_class": {
                n: (None if math.isnan(a) else a)
                for n, a in zip(names, self.per_class, strict=True)
            },
            "confusion_matrix": self.confusion,
        }


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU and CUDA, fp16 on CUDA, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    num_classes: int,
    precision: str = "fp32",
    tta: str | None = None,
) -> EvalResult:
    """Run ``model`` in eval mode over ``loader`` ((x, y) batches already on the device).

    Counts stay in device tensors and are read once at the end: no host sync per batch.
    With ``tta="flip"`` the softmax of the image and of its mirror image are averaged.
    A loader sharded over processes (``world_size`` > 1, each sample on one rank, none
    padded) gives every rank the sums over all shards: the numbers of one process.
    """
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    loss_sum = counts = None

    def zeros(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # correct top-1, correct top-k, samples, then the confusion matrix: one all_reduce
        counts = torch.zeros(3 + num_classes * num_classes, dtype=torch.int64, device=device)
        return torch.zeros((), dtype=torch.float64, device=device), counts

    try:
        with torch.inference_mode():
            for x, y in loader:
                if counts is None:
                    loss_sum, counts = zeros(y.device)
                    correct1, correct5, seen = counts[:3]  # views into counts
                    confusion = counts[3:]
                with autocast(x.device.type, precision):
                    logits = model(x)
                    if tta == "flip":
                        flipped = model(torch.flip(x, dims=[-1]))
                log_p = F.log_softmax(logits.float(), dim=1)
                if tta == "flip":
                    p = (log_p.exp() + F.softmax(flipped.float(), dim=1)) / 2
                    log_p = p.clamp_min(torch.finfo(p.dtype).tiny).log()
                loss_sum += F.nll_loss(log_p, y, reduction="sum").double()
                topk = log_p.topk(k, dim=1).indices
                hit = topk == y[:, None]
                correct1 += hit[:, 0].sum()
                correct5 += hit.any(dim=1).sum()
                confusion += torch.bincount(y * num_classes + topk[:, 0], minlength=num_classes**2)
                seen += y.shape[0]
    finally:
        model.train(was_training)
    if counts is None:  # an empty split, or a rank whose shard is empty: it still sums
        param = next(model.parameters(), None)
        loss_sum, counts = zeros(param.device if param is not None else torch.device("cpu"))
    if getattr(loader, "world_size", 1) > 1:
        from resnetlab.training.distributed import sum_across_ranks

        with torch.inference_mode():  # the sums are inference tensors: update them in it
            sum_across_ranks(loss_sum)
            sum_across_ranks(counts)
    n = int(counts[2].item())
    if n == 0:
        raise UserError("nothing to evaluate: the split is empty")
    matrix = counts[3:].view(num_classes, num_classes).cpu()
    totals = matrix.sum(dim=1)
    per_class = [
        100.0 * matrix[i, i].item() / totals[i].item() if totals[i] > 0 else float("nan")
        for i in range(num_classes)
    ]
    return EvalResult(
        num_samples=n,
        loss=loss_sum.item() / n,
        top1=100.0 * counts[0].item() / n,
        top5=100.0 * counts[1].item() / n,
        per_class=per_class,
        confusion=matrix.tolist(),
    )


# --- the `eval` command ---------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN_DIR_OR_FILE",
        help="a run folder, a .safetensors file, or a last.state.pt",
    )
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument(
        "--data-path", help="dataset root (default: the run's, else $RESNETLAB_DATA or ./data)"
    )
    p.add_argument("--download", action="store_true", help="download the dataset if missing")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--val-split", type=int, help="validation size (default: the run's)")
    p.add_argument("--seed", type=int, help="seed of the validation split (default: the run's)")
    p.add_argument(
        "--tta",
        choices=("none", "flip"),
        default="none",
        help="test-time augmentation: average with the mirror image",
    )
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--output-dir", help="where the confusion-matrix PNG goes (default: the run folder)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _run_config(path: Path) -> tuple[Path, dict]:
    """The folder the checkpoint belongs to and that run's config.json ({} if none)."""
    folder = path if path.is_dir() else path.parent
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            cfg = {}
        if isinstance(cfg, dict) and "val_split" in cfg:  # a training config, not a bundle's meta
            return folder, cfg
    return folder, {}


def load_model(path: Path, device: torch.device) -> tuple[nn.Module, dict, str]:
    """Any checkpoint `train` writes: a run folder, a .safetensors file or a state file."""
    from resnetlab.models import create_model
    from resnetlab.models.weights import load_checkpoint, load_into, resolve_weights_path
    from resnetlab.training.checkpoint import load_state

    if path.is_file() and path.name.endswith(".state.pt"):
        state = load_state(path)
        meta = state["meta"]
        model = create_model(
            meta["model"],
            num_classes=meta["num_classes"],
            in_channels=meta["in_channels"],
            **(meta.get("model_kwargs") or {}),
        )
        load_into(model, state["model"], source=f"weights in {path}")
        return model.to(device).eval(), meta, str(path)
    file = resolve_weights_path(path)
    model, meta = load_checkpoint(file, map_location=device)
    return model, meta, str(file)


def run(args: argparse.Namespace) -> int:
    from resnetlab.data import build_loaders
    from resnetlab.inference.fast import optimize_for_inference
    from resnetlab.reports.curves import plot_confusion

    path = Path(args.checkpoint).expanduser()
    if not path.exists():
        raise UserError(f"no such checkpoint: {path}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    resolve_precision(args.precision, device)
    folder, run_cfg = _run_config(path)
    model, meta, source = load_model(path, device)

    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise UserError(f"{source} does not say which dataset it was trained on; pass --dataset")
    same_data = dataset == run_cfg.get("dataset")
    data_path = args.data_path or (run_cfg.get("data_path") if same_data else None)
    val_split = args.val_split if args.val_split is not None else run_cfg.get("val_split", 0)
    seed = args.seed if args.seed is not None else run_cfg.get("seed", 0)
    if args.split == "val" and not val_split:
        raise UserError(
            "this run held out no validation set; pass --val-split N or use --split test"
        )
    image_size = (meta.get("input_size") or [None, None, 224])[-1] or 224
    bundle = build_loaders(
        dataset,
        data_path,
        download=args.download,
        batch_size=1,  # the training loader goes unused here
        eval_batch_size=args.batch_size,
        val_split=val_split if args.split == "val" else 0,
        seed=seed,
        device=str(device),
        workers=args.workers,
        image_size=image_size,
        resize_size=meta.get("resize_size") or 256,
        classes=meta.get("classes") if dataset == "folder" else None,
    )
    if bundle.in_channels != meta["in_channels"] or bundle.num_classes != meta["num_classes"]:
        raise UserError(
            f"{source} holds a {meta['model']} for {meta['in_channels']}-channel images and "
            f"{meta['num_classes']} classes; {dataset} has {bundle.in_channels} and "
            f"{bundle.num_classes}"
        )
    loader = bundle.val if args.split == "val" else bundle.test
    if loader is None:
        raise UserError(f"{dataset} has no {args.split} split")
    tta = None if args.tta == "none" else args.tta
    # BatchNorm folded and channels_last (fp32; --precision still decides the autocast).
    model = optimize_for_inference(model, precision="fp32")
    result = evaluate(
        model, loader, num_classes=bundle.num_classes, precision=args.precision, tta=tta
    )

    out_dir = Path(args.output_dir).expanduser() if args.output_dir else folder
    png = out_dir / f"confusion-{dataset}-{args.split}.png"
    title = f"{meta['model']} on {dataset} {args.split}: top-1 {result.top1:.2f}%"
    plot_confusion(result.confusion, list(bundle.classes), png, title)

    report = {
        "checkpoint": source,
        "model": meta["model"],
        "epoch": meta.get("epoch"),
        "dataset": dataset,
        "split": args.split,
        "tta": args.tta,
        "device": str(device),
        **result.as_dict(list(bundle.classes)),
        "confusion_png": str(png),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"checkpoint  {source} ({meta['model']}, epoch {meta.get('epoch')})")
    print(f"data        {dataset} {args.split}, {result.num_samples} images, tta {args.tta}")
    print(f"top-1 {result.top1:.2f}%   top-5 {result.top5:.2f}%   loss {result.loss:.4f}")
    width = max(len(c) for c in bundle.classes)
    print("per-class accuracy:")
    for name, acc in zip(bundle.classes, result.per_class, strict=True):
        print(f"  {name:<{width}}  {acc:6.2f}%")
    print(f"confusion matrix: {png}")
    return 0
