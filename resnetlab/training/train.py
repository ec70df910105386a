"""Train a model. Every run leaves config.json, metrics.csv, summary.json, curves.png and
checkpoints (last, and best by validation accuracy) in its output folder.

  resnetlab train --model resnet20 --dataset cifar10 --download     # the paper's recipe, 64k it.
  resnetlab train --model resnet110 --dataset cifar10 --epochs 30   # shorter, same lr shape
  resnetlab train --model mnist_cnn --dataset mnist --epochs 2
  resnetlab train --model resnet20 --dataset cifar10 --recipe fast  # 30 epochs, one cycle, flip TTA
  resnetlab train --config my.yaml --lr 0.05                        # flags override the file
  resnetlab train --resume runs/resnet20-cifar10-20260101-120000    # continue where it stopped
  torchrun --standalone --nproc-per-node 4 -m resnetlab train ...   # 4 GPUs, -b per GPU

Unset options come from the recipe of the model and dataset (resnetlab/training/config.py
has the table); config.json holds the resolved values and `--config` reads it back.
Exit status: 0 done, 2 bad input (nothing written), 3 the loss became NaN or infinite
(the last checkpoint is kept), 130 interrupted (resume with --resume).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from resnetlab.device import device_name, native_bf16, resolve_device, resolve_precision
from resnetlab.errors import UserError
from resnetlab.io import atomic_write_json, atomic_write_text
from resnetlab.training import checkpoint as ckpt
from resnetlab.training import distributed
from resnetlab.training.config import (
    BEFORE_SETTINGS,
    DATASET_CHOICES,
    DEVICES,
    FIELD_NAMES,
    OPTIMIZERS,
    PRECISIONS,
    RECIPES,
    SCHEDULES,
    TTA_CHOICES,
    WARMUP_METHODS,
    TrainConfig,
    fill_recipe,
    load_config_file,
    merge,
    validate,
)
from resnetlab.training.distributed import World, world_from_env
from resnetlab.training.ema import create_ema
from resnetlab.training.evaluate import autocast, evaluate
from resnetlab.training.fast_path import resolve_fast_path
from resnetlab.training.optim import build_optimizer
from resnetlab.training.schedule import LrSchedule, build_scheduler, train_image_size

# What a run writes; --overwrite removes exactly these (and the eval pictures) first.
RUN_FILES = (
    "config.json",
    "metrics.csv",
    "summary.json",
    "curves.png",
    ckpt.STATE_FILE,
    ckpt.LAST_WEIGHTS,
    ckpt.BEST_WEIGHTS,
)
METRICS_COLUMNS = (
    "epoch",
    "iteration",
    "lr",
    "train_loss",
    "train_acc",
    "eval_split",
    "eval_loss",
    "eval_acc",
    "raw_eval_acc",  # with --model-ema: the accuracy of the weights themselves, not the average
    "seconds",
    "images_per_s",
    "image_size",  # the side trained at (progressive resizing: --min-res)
)
# A resumed run keeps its configuration; only these may differ from the first start.
# Seconds between redraws of curves.png (and always after the last epoch).
PLOT_EVERY_S = 60.0
RESUME_OVERRIDES = ("device", "workers", "data_path", "download", "eval_batch_size", "print_freq")


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last checkpoint is left as it was."""

    exit_code = 3


# --- the command line -----------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flag names follow torchvision's reference train.py and timm's train.py."""
    # Every default is None: unset means "the config file's, else the recipe's".
    flag = argparse.BooleanOptionalAction
    p.add_argument("--model", help="a registered model (see `resnetlab models`)")
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        help="the defaults of unset options: default (the paper's where it has one) or fast",
    )
    p.add_argument("--dataset", choices=DATASET_CHOICES)
    p.add_argument("--data-path", help="dataset root (default: $RESNETLAB_DATA or ./data)")
    p.add_argument("--download", action="store_true", default=None, help="download if missing")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="default: the recipe's length")
    length.add_argument("--iterations", type=int, help="total optimizer steps (the paper's unit)")
    p.add_argument("-b", "--batch-size", type=int, help="default: the recipe's (128 for CIFAR)")
    p.add_argument("--eval-batch-size", type=int, help="default: twice --batch-size")
    p.add_argument("--opt", choices=OPTIMIZERS, help="default: sgd")
    p.add_argument("--lr", type=float, help="base learning rate (default: the recipe's)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action=flag)
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float)
    p.add_argument(
        "--no-wd-norm-bias",
        action="store_true",
        default=None,
        help="no weight decay on normalization layers and biases",
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="paper: lr/10 at 50%% and 75%% of the run (32k, 48k of 64k)",
    )
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--warmup-method", choices=WARMUP_METHODS)
    p.add_argument("--warmup-factor", type=float, help="lr multiplier at the start of warm-up")
    p.add_argument("--lr-step-size", type=int, help="epochs between decays (step schedule)")
    p.add_argument("--lr-gamma", type=float, help="decay factor (paper and step schedules)")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument(
        "--model-ema",
        action=flag,
        help="evaluate and save an exponential moving average of the weights",
    )
    p.add_argument("--model-ema-decay", type=float, help="EMA decay per optimizer step")
    p.add_argument("--model-ema-steps", type=int, help="optimizer steps between EMA updates")
    p.add_argument("--tta", choices=TTA_CHOICES, help="test-time augmentation of evaluations")
    p.add_argument(
        "--eval-every", type=int, help="epochs between evaluations (the last is always evaluated)"
    )
    p.add_argument(
        "--min-res", type=int, help="progressive resizing: the first epochs' image side (0: off)"
    )
    p.add_argument("--res-ramp-start", type=float, help="fraction of the run where sides grow")
    p.add_argument("--res-ramp-end", type=float, help="fraction of the run at the full size")
    p.add_argument("--val-split", type=int, help="images held out of train for validation")
    p.add_argument("--seed", type=int, help="model init, data order and split (default: 0)")
    p.add_argument("--output-dir", help="default: runs/MODEL-DATASET-TIMESTAMP")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    p.add_argument("--device", choices=DEVICES, help="default: auto (CUDA if present)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="default: auto (bf16 where the hardware has it natively, else fp32); fp16 needs CUDA",
    )
    p.add_argument(
        "--channels-last", action=flag, help="NHWC memory format (default: on for CPU and CUDA)"
    )
    p.add_argument("--compile", action=flag, help="torch.compile the model")
    p.add_argument(
        "--sync-bn",
        action="store_true",
        default=None,
        help="BatchNorm statistics over all processes (torchrun, CUDA only)",
    )
    p.add_argument("-j", "--workers", type=int, help="loader processes (default: 2)")
    p.add_argument("--augment", help="crop-flip, flip, cutout or none")
    p.add_argument("--skip-bad-images", action="store_true", default=None)
    p.add_argument("--image-size", type=int, help="folder datasets: crop size")
    p.add_argument("--resize-size", type=int, help="folder datasets: eval resize")
    p.add_argument("--print-freq", type=int, help="steps between progress updates")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON settings; flags override them")


def run(args: argparse.Namespace) -> int:
    """One process, or one of torchrun's: every rank runs this with the same flags.

    Everything that can refuse the input happens before the processes meet, so a bad
    flag is one line (from local rank 0) and exit 2 on every rank, never a hang.
    """
    world = world_from_env()
    try:
        flags = {k: getattr(args, k) for k in FIELD_NAMES if getattr(args, k, None) is not None}
        if args.resume:
            if args.overwrite:
                raise UserError("--resume continues a run and --overwrite replaces it: pick one")
            out_dir = Path(args.resume).expanduser()
            cfg, state = prepare_resume(out_dir, flags, args.config)
            if (out_dir / "summary.json").is_file():
                if world.is_main:
                    print(f"{out_dir} holds a finished run; nothing to resume")
                return 0
            resplit_batch(cfg, world)
        else:
            cfg = resolve_config(load_config_file(args.config) if args.config else {}, flags)
            out_dir = Path(cfg.output_dir).expanduser()
            check_output_dir(out_dir, args.overwrite)
            state = None
        device = resolve_device(cfg.device)
        resolve_precision(cfg.precision, device)
        distributed.check_sync_bn(cfg.sync_bn, device)
    except UserError as e:
        if world.local_rank != 0:  # every rank read the same flags and files: one says so
            raise SystemExit(e.exit_code) from None
        raise
    quiet = open(os.devnull, "w") if not world.is_main else None  # noqa: SIM115
    try:
        with (
            contextlib.redirect_stdout(quiet or sys.stdout),  # tqdm and print: rank 0 only
            distributed.process_group(world, device),
        ):
            if cfg.download and world.world_size > 1:
                download_once(cfg, world)
            train(
                cfg,
                out_dir,
                state=state,
                world=world,
                overwrite=args.overwrite,
                resume=bool(args.resume),
            )
    except (KeyboardInterrupt, TrainingDiverged) as e:
        if not world.is_main:  # every rank stops at the same step; rank 0 says it
            raise SystemExit(getattr(e, "exit_code", 130)) from None
        raise
    except UserError as e:
        if not world.is_main:  # this rank's own trouble (e.g. an image in its shard)
            e.args = (f"rank {world.rank}: {e}",)
        raise
    finally:
        if quiet is not None:
            quiet.close()
    return 0


def resplit_batch(cfg: TrainConfig, world: World) -> None:
    """A resumed run keeps its global batch: the per-process batch follows the world size.

    So a run of 2 processes x 64 continues as 1 x 128 or 4 x 32 (the same steps, the same
    schedule), and a global batch that does not split evenly is refused.
    """
    if cfg.world_size == world.world_size:
        return
    global_batch = cfg.batch_size * cfg.world_size
    if global_batch % world.world_size:
        raise UserError(
            f"the run's global batch {global_batch} ({cfg.world_size} processes x "
            f"{cfg.batch_size}) does not split over {world.world_size} processes"
        )
    cfg.batch_size, cfg.world_size = global_batch // world.world_size, world.world_size


def download_once(cfg: TrainConfig, world: World) -> None:
    """--download under torchrun: each machine's first process fetches, the others wait."""
    import torch.distributed as dist

    from resnetlab.data.arrays import load_arrays
    from resnetlab.data.info import get_info
    from resnetlab.data.root import resolve_root

    if world.local_rank == 0 and cfg.dataset != "folder":
        name = get_info(cfg.dataset).name
        for split_is_train in (True, False):
            load_arrays(name, resolve_root(cfg.data_path), train=split_is_train, download=True)
    dist.barrier()


def resolve_config(file_values: dict[str, Any], flags: dict[str, Any]) -> TrainConfig:
    """recipe < config file < flags, checked; the length is resolved later, from the data."""
    from resnetlab.models import get_model_entry

    cfg = merge(file_values, flags)
    if not cfg.model or not cfg.dataset:
        raise UserError("--model and --dataset are required (or a --config that sets them)")
    validate(cfg)  # names and numbers first, so the error names what the user typed
    cfg = fill_recipe(cfg, get_model_entry(cfg.model).family)
    validate(cfg)
    if cfg.output_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.output_dir = str(Path("runs") / f"{cfg.model}-{cfg.dataset}-{stamp}")
    return cfg


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Never write over a run unless asked to; say how to continue it instead."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output-dir {out_dir} is a file")
    existing = next(p for p in (out_dir.absolute(), *out_dir.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--output-dir {out_dir}: {existing} is not writable")
    if overwrite:
        return
    if (out_dir / "summary.json").exists():
        raise UserError(
            f"{out_dir} already holds a finished run; pass --overwrite to replace it "
            "or choose another --output-dir"
        )
    if any((out_dir / name).exists() for name in RUN_FILES):
        raise UserError(
            f"{out_dir} already holds a run; pass --resume {out_dir} to continue it "
            "or --overwrite to replace it"
        )


def prepare_resume(
    run_dir: Path, flags: dict[str, Any], config_file: str | None
) -> tuple[TrainConfig, dict | None]:
    """The run's own config.json, and its training state (None if no epoch finished yet)."""
    if config_file:
        raise UserError("--config cannot be combined with --resume: the run's config.json is used")
    cfg_file = run_dir / "config.json"
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such run folder")
    if not cfg_file.is_file():
        raise UserError(f"--resume {run_dir}: no config.json there (not a resnetlab run)")
    try:
        values = json.loads(cfg_file.read_text(encoding="utf-8"))
        cfg = TrainConfig(**{**BEFORE_SETTINGS, **values})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise UserError(f"--resume: cannot read {cfg_file} ({e})") from None
    for key, value in flags.items():
        if key in RESUME_OVERRIDES:
            setattr(cfg, key, value)
        elif key == "output_dir":
            if Path(value).expanduser().resolve() != run_dir.resolve():
                raise UserError(f"--output-dir {value} and --resume {run_dir} name different runs")
        elif key == "model" and value != cfg.model:
            raise UserError(f"{run_dir} holds a run of {cfg.model}, not {value}")
        elif value != getattr(cfg, key):
            raise UserError(
                f"--{key.replace('_', '-')} {value} differs from the run's {getattr(cfg, key)}; "
                "a resumed run keeps its configuration (start a new run to change it)"
            )
    validate(cfg)
    cfg.output_dir = str(run_dir)
    state_file = run_dir / ckpt.STATE_FILE
    state = ckpt.load_state(state_file) if state_file.exists() else None
    if state is not None:
        if state["meta"].get("model") != cfg.model:
            raise UserError(
                f"{state_file} is a checkpoint of {state['meta'].get('model')}, not {cfg.model}"
            )
        # The state holds the per-process batch of its last world size: compare global batches.
        skip = (*RESUME_OVERRIDES, "output_dir", "batch_size", "world_size")
        state_cfg = {**BEFORE_SETTINGS, **state["config"]}  # older states
        saved = {k: v for k, v in state_cfg.items() if k not in skip}
        now = {k: v for k, v in asdict(cfg).items() if k not in skip}
        if state_cfg["batch_size"] * state_cfg["world_size"] != cfg.batch_size * cfg.world_size:
            now["batch_size"], saved["batch_size"] = cfg.batch_size, None
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise UserError(f"{state_file} and config.json disagree on {', '.join(diff)}")
    return cfg, state


# --- the run ----------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    out_dir: Path,
    *,
    state: dict | None = None,
    world: World | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> dict:
    """Run (or continue from ``state``) the training ``cfg`` describes; returns the summary."""
    from resnetlab import __version__
    from resnetlab.data import build_loaders
    from resnetlab.data.root import resolve_root
    from resnetlab.models import create_model

    world = world or World()
    log = print if world.is_main else _quiet
    if world.world_size > 1 and not distributed.active():
        raise RuntimeError("train() of several processes runs inside distributed.process_group")
    device = distributed.local_device(world, resolve_device(cfg.device))
    resolve_fast_path(cfg, device)  # "auto" precision / channels_last -> this hardware's best
    distributed.check_sync_bn(cfg.sync_bn, device)
    if resume:
        resplit_batch(cfg, world)  # the run's global batch, over this many processes
    else:
        cfg.world_size = world.world_size
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)

    cfg.data_path = str(resolve_root(cfg.data_path).resolve())
    bundle = build_loaders(
        cfg.dataset,
        cfg.data_path,
        download=cfg.download,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        val_split=cfg.val_split,
        seed=cfg.seed,
        augment=cfg.augment,
        device=str(device),
        channels_last=cfg.channels_last,
        rank=world.rank,
        world_size=world.world_size,
        workers=cfg.workers,
        image_size=cfg.image_size or 224,
        resize_size=cfg.resize_size or 256,
        skip_bad_images=cfg.skip_bad_images,
    )
    if cfg.batch_size > bundle.train.num_samples:
        raise UserError(
            f"--batch-size {cfg.batch_size} is larger than the training set "
            f"({bundle.train.num_samples} images after holding out {cfg.val_split})"
        )
    model = create_model(cfg.model, num_classes=bundle.num_classes, in_channels=bundle.in_channels)
    check_input(model, cfg.model, cfg.dataset, tuple(bundle.input_size), bundle.num_classes)
    if cfg.min_res:
        if cfg.min_res > bundle.input_size[-1]:
            raise UserError(
                f"--min-res {cfg.min_res} is larger than the images ({bundle.input_size[-1]})"
            )
        small = (bundle.input_size[0], cfg.min_res, cfg.min_res)
        check_input(model, cfg.model, f"--min-res {cfg.min_res}", small, bundle.num_classes)
    if cfg.sync_bn:  # same parameter and buffer names: checkpoints stay plain BatchNorm ones
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    # The length: iterations decide when given, epochs follow (the last one may be partial).
    steps_per_epoch = len(bundle.train)
    total = cfg.iterations or cfg.epochs * steps_per_epoch
    cfg.iterations, cfg.epochs = total, math.ceil(total / steps_per_epoch)
    if cfg.warmup_epochs:
        cfg.warmup_iterations = round(cfg.warmup_epochs * steps_per_epoch)
    cfg.warmup_iterations = cfg.warmup_iterations or 0
    cfg.eval_batch_size = cfg.eval_batch_size or 2 * cfg.batch_size
    cfg.image_size = cfg.image_size or bundle.input_size[-1]
    cfg.resize_size = cfg.resize_size or bundle.resize_size

    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    # With an EMA, the average is what gets evaluated and saved (last/best.safetensors).
    ema = create_ema(model, cfg.model_ema_decay, cfg.model_ema_steps) if cfg.model_ema else None
    published = ema.module if ema is not None else model
    optimizer = build_optimizer(
        model, cfg.opt, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.no_wd_norm_bias
    )
    schedule = LrSchedule(
        name=cfg.schedule,
        total=total,
        steps_per_epoch=steps_per_epoch,
        warmup=cfg.warmup_iterations if cfg.schedule != "onecycle" else 0,
        warmup_method=cfg.warmup_method,
        warmup_factor=cfg.warmup_factor,
        step_size=cfg.lr_step_size,
        gamma=cfg.lr_gamma,
    )
    scheduler = build_scheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    meta = {
        "model": cfg.model,
        "num_classes": bundle.num_classes,
        "in_channels": bundle.in_channels,
        "model_kwargs": {},
        "dataset": cfg.dataset,
        "classes": list(bundle.classes),
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "input_size": list(bundle.input_size),
        "resize_size": bundle.resize_size,
        "resnetlab_version": __version__,
        "weights": "ema" if ema is not None else "model",  # which weights the files hold
    }

    eval_loader, eval_split = (
        (bundle.val, "val") if bundle.val is not None else (bundle.test, "test")
    )
    status = {
        "epoch": 0,
        "iteration": 0,
        "history": [],
        "best_epoch": None,
        "best_acc": None,
        "elapsed": 0.0,
        "train_images": 0,
        "train_seconds": 0.0,
    }
    if resume and world.is_main:
        remove_stale_temporaries(out_dir)
    if state is not None:
        from resnetlab.models.weights import load_into

        load_into(model, state["model"], source=f"weights in {out_dir / ckpt.STATE_FILE}")
        if ema is not None:
            if "model_ema" not in state:
                raise UserError(f"{out_dir / ckpt.STATE_FILE} holds no EMA weights")
            ema.load_state_dict(state["model_ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        status = state["run"]
        if world.is_main:
            repair_run_files(out_dir, published, meta, status)
        log(f"resuming {out_dir} after epoch {status['epoch']} (iteration {status['iteration']})")
    elif world.is_main and not resume:
        if overwrite:
            remove_run_files(out_dir)
        atomic_write_json(out_dir / "config.json", asdict(cfg))

    # Training steps go through DDP (gradients averaged over the ranks); evaluation through
    # the bare model, each rank over its own shard, summed by evaluate().
    net = torch.compile(model) if cfg.compile else model
    ddp = distributed.wrap(model, device)
    train_net = net if ddp is model else torch.compile(ddp) if cfg.compile else ddp
    tta = None if cfg.tta == "none" else cfg.tta
    eval_net = net if ema is None else ema.module  # what is evaluated is what gets saved
    log(
        f"{cfg.model} on {cfg.dataset}: {bundle.train.dataset_size} train / "
        f"{bundle.val.dataset_size if bundle.val else 0} val / "
        f"{bundle.test.dataset_size if bundle.test else 0} test images, {cfg.epochs} epochs "
        f"({total} iterations, {steps_per_epoch} per epoch), {cfg.schedule} schedule, lr {cfg.lr}, "
        f"device {device}, {cfg.precision} -> {out_dir}"
    )
    if world.world_size > 1:
        log(
            f"{world.world_size} processes x batch {cfg.batch_size} = global batch "
            f"{world.world_size * cfg.batch_size}; lr {cfg.lr} as given (not scaled with the "
            "batch: see docs/distributed.md)"
        )
    if cfg.precision == "bf16" and not native_bf16(device):
        log(f"note: this {device.type} has no native bf16, so bf16 runs slower than fp32 here")
    if eval_loader is None:
        log("no validation or test split: only training numbers are shown, and no best is kept")
    elif eval_split == "test":
        log(
            "no validation split (--val-split 0): the test set is shown "
            + ("each epoch" if cfg.eval_every == 1 else f"every {cfg.eval_every} epochs")
            + " for information only, and no best checkpoint is kept"
        )
    if state is not None:
        ckpt.set_rng_state(state["rng"])  # last, so that nothing above draws from it

    eval_kw = {"num_classes": bundle.num_classes, "precision": cfg.precision, "tta": tta}
    after_step = None if ema is None else _ema_updater(ema, model, cfg.model_ema_steps)
    last_plot = -math.inf
    ev = None
    for epoch in range(status["epoch"], cfg.epochs):
        t0 = time.perf_counter()
        bundle.train.set_epoch(epoch)
        ramp = (cfg.res_ramp_start, cfg.res_ramp_end)
        side = train_image_size(epoch, cfg.epochs, cfg.image_size, cfg.min_res, ramp)
        stats = train_one_epoch(
            train_net,
            bundle.train,
            optimizer,
            scheduler,
            scaler,
            criterion,
            epoch=epoch,
            epochs=cfg.epochs,
            start=status["iteration"],
            total=total,
            precision=cfg.precision,
            print_freq=cfg.print_freq,
            log=log,
            last_good=status["epoch"],
            out_dir=out_dir,
            after_step=after_step,
            image_size=side,
        )
        train_seconds = time.perf_counter() - t0
        stats = distributed.reduce_epoch_stats(stats, device)  # every rank's samples
        distributed.broadcast_buffers(model)  # all ranks evaluate (and rank 0 saves) one model
        if ema is not None:
            distributed.broadcast_buffers(ema.module)
        ev = raw = None
        due = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if eval_loader is not None and due:
            ev = evaluate(eval_net, eval_loader, **eval_kw)
            if ema is not None and eval_split == "val":  # what the average adds, on record
                raw = evaluate(net, eval_loader, **eval_kw)
        seconds = time.perf_counter() - t0
        improved = (
            ev is not None
            and eval_split == "val"
            and (status["best_acc"] is None or ev.top1 > status["best_acc"])
        )
        row = {
            "epoch": epoch + 1,
            "iteration": stats["iteration"],
            "lr": stats["lr"],
            "train_loss": stats["loss"],
            "train_acc": stats["acc"],
            "eval_split": eval_split if ev else "",
            "eval_loss": ev.loss if ev else None,
            "eval_acc": ev.top1 if ev else None,
            "raw_eval_acc": raw.top1 if raw else None,
            "seconds": round(seconds, 3),
            "images_per_s": round(stats["images"] / max(train_seconds, 1e-9), 1),
            "image_size": side,
        }
        status["history"].append(row)
        status.update(epoch=epoch + 1, iteration=stats["iteration"])
        status["elapsed"] += seconds
        status["train_images"] += stats["images"]
        status["train_seconds"] += train_seconds
        if improved:
            status.update(best_epoch=epoch + 1, best_acc=ev.top1)
        if world.is_main:
            # curves.png takes about a second to draw: every epoch only when epochs are long.
            plot = epoch + 1 == cfg.epochs or time.monotonic() - last_plot >= PLOT_EVERY_S
            commit_epoch(
                out_dir,
                model,
                meta,
                optimizer,
                scheduler,
                scaler,
                cfg,
                status,
                improved,
                plot,
                ema=ema,
            )
            last_plot = time.monotonic() if plot else last_plot
        evaluated = f"{eval_split} loss {ev.loss:.4f} acc {ev.top1:6.2f}%  " if ev else ""
        log(
            f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:6.2f}%  {evaluated}lr {row['lr']:.4g}  {seconds:.1f}s  "
            f"{row['images_per_s']:,.0f} img/s" + ("  *best" if improved else "")
        )

    t0 = time.perf_counter()
    test = None
    if eval_split == "test" and ev is not None:
        test = ev  # the last epoch's evaluation: the same weights on the same images
    elif bundle.test is not None:
        test = evaluate(eval_net, bundle.test, **eval_kw)
    status["elapsed"] += time.perf_counter() - t0
    summary = make_summary(cfg, status, test, device, eval_split, model)
    if world.is_main:
        atomic_write_json(out_dir / "summary.json", summary)
    log(f"total time {_hms(status['elapsed'])}; " + _summary_line(summary))
    log(f"results: {out_dir / 'summary.json'}, curves: {out_dir / 'curves.png'}")
    return summary


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    *,
    epoch: int,
    epochs: int,
    start: int,
    total: int,
    precision: str,
    print_freq: int,
    log: Any,
    last_good: int,
    out_dir: Path,
    after_step: Callable[[int], None] | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """One pass over ``loader`` (stopping at ``total`` iterations), without a host sync per step.

    ``image_size``: batches of another side are resized to it (antialiased bilinear, on
    the device), for progressive resizing.

    Loss sum, correct count and the first non-finite iteration live in device tensors,
    read at each progress update (every ``print_freq`` steps) and at the end. So a NaN
    is caught at most ``print_freq`` steps late, by its own iteration number, and always
    before the epoch's checkpoint is written.
    """
    from tqdm import tqdm

    model.train()
    steps = min(len(loader), total - start)
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    seen, it, t0 = 0, start, time.perf_counter()
    tty = sys.stdout.isatty()
    bar = tqdm(
        total=steps,
        desc=f"epoch {epoch + 1}/{epochs}",
        leave=False,
        disable=not tty,
        file=sys.stdout,
        dynamic_ncols=True,
    )

    def lr_at(i: int) -> float:
        return scheduler.base_lrs[0] * scheduler.lr_lambdas[0](i)

    def check() -> tuple[float, float]:
        """The one host sync: running loss and accuracy, and stop on a non-finite loss."""
        bad = distributed.earliest_across_ranks(first_bad)  # all ranks stop together
        if bad >= 0:
            bar.close()
            lr = lr_at(bad)
            kept = (
                f"the last checkpoint (epoch {last_good}) in {out_dir} is untouched"
                if last_good
                else "no checkpoint was written"
            )
            raise TrainingDiverged(
                f"loss is not finite at iteration {bad + 1} (epoch {epoch + 1}, lr {lr:.4g}): "
                f"training stopped; {kept}"
            )
        return loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1)

    for step, (x, y) in enumerate(loader):
        if step >= steps:
            break
        if image_size is not None and x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
        with autocast(x.device.type, precision):
            out = model(x)
            loss = criterion(out, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if after_step is not None:
            after_step(it + 1)
        with torch.no_grad():
            loss = loss.detach().float()
            loss_sum += loss.double() * y.shape[0]
            correct += (out.argmax(dim=1) == y).sum()
            first_bad.copy_(torch.where(torch.isfinite(loss) | (first_bad >= 0), first_bad, it))
        seen += y.shape[0]
        it += 1
        bar.update(1)
        if (step + 1) % print_freq == 0 and step + 1 < steps:
            avg_loss, acc = check()
            ips = seen / max(time.perf_counter() - t0, 1e-9)
            lr = lr_at(it - 1)
            if tty:
                bar.set_postfix_str(
                    f"loss {avg_loss:.4f} acc {acc:.2f}% lr {lr:.4g} {ips:,.0f} img/s"
                )
            else:
                log(
                    f"  epoch {epoch + 1}/{epochs} step {step + 1}/{steps}  loss {avg_loss:.4f} "
                    f"acc {acc:.2f}%  lr {lr:.4g}  {ips:,.0f} img/s",
                    flush=True,
                )
    avg_loss, acc = check()
    bar.close()
    last_lr = lr_at(max(it - 1, 0))
    return {
        "loss": avg_loss,
        "acc": acc,
        "images": seen,
        "iteration": it,
        "steps": steps,
        "lr": last_lr,
    }


# --- committing an epoch ----------------------------------------------------------------------


def commit_epoch(
    out_dir: Path,
    model: nn.Module,
    meta: dict,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    run: dict,
    improved: bool,
    plot: bool = True,
    ema: AveragedModel | None = None,
) -> None:
    """State first (the commit point), then the files derived from it.

    A kill after the state write leaves stale derived files, which `repair_run_files`
    rewrites on resume; a kill before it leaves the previous epoch whole.
    """
    from resnetlab.models.weights import save_weights

    weights_meta = {**meta, "epoch": run["epoch"], "iteration": run["iteration"]}
    extra = {} if ema is None else {"model_ema": ema.state_dict()}
    ckpt.save_state(
        out_dir / ckpt.STATE_FILE,
        {
            **extra,
            "model": model.state_dict(),
            "meta": weights_meta,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "config": asdict(cfg),
            "run": run,
        },
    )
    published = model if ema is None else ema.module
    save_weights(out_dir / ckpt.LAST_WEIGHTS, published, weights_meta)
    if improved:
        save_weights(out_dir / ckpt.BEST_WEIGHTS, published, weights_meta)
    write_metrics(out_dir, run["history"], cfg, plot)


def write_metrics(out_dir: Path, history: list[dict], cfg: TrainConfig, plot: bool = True) -> None:
    from resnetlab.reports.curves import plot_curves

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    if history and plot:
        plot_curves(history, out_dir / "curves.png", f"{cfg.model} on {cfg.dataset}")


def repair_run_files(out_dir: Path, model: nn.Module, meta: dict, run: dict) -> None:
    """Bring the files derived from the state back in line with it (after a kill between writes)."""
    from resnetlab.models.weights import read_weights, save_weights

    weights_meta = {**meta, "epoch": run["epoch"], "iteration": run["iteration"]}
    save_weights(out_dir / ckpt.LAST_WEIGHTS, model, weights_meta)
    if run["best_epoch"] == run["epoch"]:
        try:
            best_epoch = read_weights(out_dir / ckpt.BEST_WEIGHTS)[1].get("epoch")
        except UserError:
            best_epoch = None
        if best_epoch != run["epoch"]:
            save_weights(out_dir / ckpt.BEST_WEIGHTS, model, weights_meta)
    cfg_stub = TrainConfig(model=meta["model"], dataset=meta["dataset"])
    write_metrics(out_dir, run["history"], cfg_stub)


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of writes that a kill cut short (`atomic_write` names them .NAME.*.tmp)."""
    for name in RUN_FILES:
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def remove_run_files(out_dir: Path) -> None:
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for png in out_dir.glob("confusion-*.png"):
        png.unlink()


# --- small helpers ----------------------------------------------------------------------------


def _ema_updater(ema: AveragedModel, model: nn.Module, every: int) -> Callable[[int], None]:
    """After every ``every``-th optimizer step (counted over the run), average ``model`` in."""

    def update(iteration: int) -> None:
        if iteration % every == 0:
            ema.update_parameters(model)

    return update


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_input(
    model: nn.Module, name: str, dataset: str, input_size: tuple, num_classes: int
) -> None:
    """One forward pass on zeros, so that a model that cannot take the data fails in one line."""
    model.eval()
    try:
        with torch.inference_mode():
            out = model(torch.zeros(2, *input_size))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(
            f"{name} cannot take {dataset} images of size {list(input_size)}: {first}"
        ) from None
    finally:
        model.train()
    if tuple(out.shape) != (2, num_classes):
        raise UserError(f"{name} gives outputs of shape {list(out.shape)[1:]}, not [{num_classes}]")


def make_summary(
    cfg: TrainConfig, run: dict, test: Any, device: torch.device, eval_split: str, model: nn.Module
) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from resnetlab import __version__

    try:  # the installed version, without importing torchvision (seconds, for torch._dynamo)
        torchvision_version = version("torchvision")
    except PackageNotFoundError:
        torchvision_version = None

    last = run["history"][-1] if run["history"] else {}
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "epochs": run["epoch"],
        "iterations": run["iteration"],
        "best_val_acc": run["best_acc"],
        "best_epoch": run["best_epoch"],
        "best_note": None if eval_split == "val" else "no validation split: no best checkpoint",
        "test": None if test is None else {"top1": test.top1, "top5": test.top5, "loss": test.loss},
        "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
        "wall_time_s": round(run["elapsed"], 2),
        "images_per_s": round(run["train_images"] / max(run["train_seconds"], 1e-9), 1),
        "device": str(device),
        "device_name": device_name(device),
        "precision": cfg.precision,
        "evaluated": "ema" if cfg.model_ema else "model",
        "tta": cfg.tta,
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision_version,
            "resnetlab": __version__,
        },
    }


def _summary_line(s: dict) -> str:
    parts = []
    if s["best_epoch"] is not None:
        parts.append(f"best val acc {s['best_val_acc']:.2f}% at epoch {s['best_epoch']}")
    if s["test"] is not None:
        parts.append(
            f"test top-1 {s['test']['top1']:.2f}% top-5 {s['test']['top5']:.2f}% "
            f"loss {s['test']['loss']:.4f}"
        )
    return "; ".join(parts)


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _quiet(*args: Any, **kwargs: Any) -> None:
    """The print of ranks other than 0."""
