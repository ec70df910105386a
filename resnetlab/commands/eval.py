"""Evaluate a trained model: top-1, top-5, loss, per-class precision/recall/F1, calibration.

  resnetlab eval --checkpoint runs/resnet20-cifar10-20260101-120000
  resnetlab eval --checkpoint runs/RUN/last.safetensors --split val --tta flip --json
  resnetlab eval --checkpoint model.safetensors --dataset cifar10 --data-path ~/data

A run folder gives its best checkpoint (else its last); the dataset, data root and
validation split default to the ones the run trained with. Accuracies, precision, recall,
F1 and the expected calibration error (ECE, 15 bins) are in percent. Beside the run (or in
--output-dir) it writes, for dataset D and split S: confusion-D-S.png, reliability-D-S.png
(the calibration), predictions-D-S.csv (every image's top-5) and errors-D-S.png (the most
confidently wrong images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnetlab.commands.flags import add_checkpoint, add_inference, add_setting
from resnetlab.data import build_loaders
from resnetlab.device import resolve_device, resolve_precision
from resnetlab.errors import UserError
from resnetlab.inference.fast import optimize_for_inference
from resnetlab.reports.analysis import (
    calibration,
    class_scores,
    plot_confident_errors,
    plot_reliability,
    prediction_rows,
    sample_ids,
    write_csv,
)
from resnetlab.training.checkpoint import load_trained
from resnetlab.training.curves import plot_confusion
from resnetlab.training.evaluate import evaluate


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p, "a run folder, a .safetensors file, or a last.state.pt")
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    add_setting(p, "data_path", help="dataset root (default: the run's, else $RESNETLAB_DATA)")
    add_setting(p, "download", default=False)
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--val-split", type=int, help="validation size (default: the run's)")
    p.add_argument("--seed", type=int, help="seed of the validation split (default: the run's)")
    add_setting(p, "tta", default="none")
    add_inference(p, batch_size=256, precision="fp32")
    add_setting(p, "workers", default=2)
    p.add_argument(
        "--output-dir", help="where the pictures and predictions go (default: the run folder)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    path = Path(args.checkpoint).expanduser()
    if not path.exists():
        raise UserError(f"no such checkpoint: {path}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    resolve_precision(args.precision, device)
    folder = path if path.is_dir() else path.parent
    try:  # the run's config.json gives the defaults below
        run_cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        run_cfg = {}
    if not isinstance(run_cfg, dict) or "val_split" not in run_cfg:  # e.g. a bundle's meta
        run_cfg = {}
    model, meta, source = load_trained(path, device)

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
    subset = run_cfg.get("classes") if same_data else None  # a run on some classes (--classes)
    subset = None if subset == "all" else subset
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
        classes=meta.get("classes") if dataset == "folder" and subset is None else None,
        class_subset=subset,
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
        model,
        loader,
        num_classes=bundle.num_classes,
        precision=args.precision,
        tta=tta,
        per_sample=True,
    )
    classes = list(bundle.classes)
    out = result.samples
    scores = class_scores(result.confusion)
    cal = calibration(out.probs[:, 0], out.topk[:, 0] == out.targets)

    out_dir = Path(args.output_dir).expanduser() if args.output_dir else folder
    stem = f"{dataset}-{args.split}"
    files = {
        "confusion": out_dir / f"confusion-{stem}.png",
        "reliability": out_dir / f"reliability-{stem}.png",
        "predictions": out_dir / f"predictions-{stem}.csv",
        "errors": out_dir / f"errors-{stem}.png",
    }
    name = f"{meta['model']} on {dataset} {args.split}"
    plot_confusion(
        result.confusion, classes, files["confusion"], f"{name}: top-1 {result.top1:.2f}%"
    )
    plot_reliability(cal, files["reliability"], name)
    rows = prediction_rows(sample_ids(loader), out.targets, out.topk, out.probs, classes)
    write_csv(files["predictions"], rows)
    plot_confident_errors(loader, out.targets, out.topk, out.probs, classes, files["errors"], name)

    report = {
        "checkpoint": source,
        "model": meta["model"],
        "epoch": meta.get("epoch"),
        "dataset": dataset,
        "split": args.split,
        "tta": args.tta,
        "device": str(device),
        **result.as_dict(classes),
        "precision_recall_f1": scores.as_dict(classes),
        "calibration": cal.as_dict(),
        **{f"{kind}_{path.suffix[1:]}": str(path) for kind, path in files.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"checkpoint  {source} ({meta['model']}, epoch {meta.get('epoch')})")
    print(f"data        {dataset} {args.split}, {result.num_samples} images, tta {args.tta}")
    print(f"top-1 {result.top1:.2f}%   top-5 {result.top5:.2f}%   loss {result.loss:.4f}")
    width = max(len(c) for c in [*classes, "macro average"])
    print("per-class accuracy (recall), precision and F1, in percent:")
    print(f"  {'class':<{width}}  {'recall':>7}  {'precision':>9}  {'F1':>7}  {'images':>7}")
    table = zip(classes, scores.recall, scores.precision, scores.f1, scores.support, strict=True)
    for label, r, p, f, n in table:
        print(f"  {label:<{width}}  {r:7.2f}  {p:9.2f}  {f:7.2f}  {n:7d}")
    m = scores.macro
    print(
        f"  {'macro average':<{width}}  {m['recall']:7.2f}  {m['precision']:9.2f}  {m['f1']:7.2f}"
    )
    print(f"calibration: ECE {cal.ece:.2f}% over {len(cal.counts)} confidence bins")
    for kind, path in files.items():
        print(f"{kind + ':':<13}{path}")
    return 0
