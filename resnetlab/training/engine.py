"""The training loop: `train` runs a resolved TrainConfig, `train_one_epoch` one pass.

Like torchvision's reference script: build the data and the model, then per epoch train,
evaluate, commit (training/run_folder.py), and end with the test set and a summary.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from resnetlab.data import DataBundle, balanced_class_weights, build_loaders
from resnetlab.data.info import get_info
from resnetlab.data.root import resolve_root
from resnetlab.device import resolve_channels_last, resolve_device, resolve_precision
from resnetlab.errors import UserError, first_line
from resnetlab.models import create_model
from resnetlab.models.pretrained import (
    Pretrained,
    load_pretrained,
    meta_preprocessing,
    read_pretrained,
)
from resnetlab.models.weights import load_into
from resnetlab.training import checkpoint as ckpt
from resnetlab.training import distributed
from resnetlab.training.config import TrainConfig
from resnetlab.training.distributed import World
from resnetlab.training.ema import create_ema
from resnetlab.training.evaluate import autocast, evaluate
from resnetlab.training.freeze import freeze_backbone, head_parameters
from resnetlab.training.optim import build_optimizer
from resnetlab.training.run_folder import RunFolder, RunState, check_output_dir, make_summary
from resnetlab.training.schedule import LrSchedule, build_scheduler, train_image_size
from resnetlab.training.tensorboard import TensorBoardLogger, create_logger
from resnetlab.version import __version__

PLOT_EVERY_S = 60.0  # curves.png takes about a second: redrawn at most this often, and last


def print_nothing(*args: Any, **kwargs: Any) -> None:
    """The log of ranks other than 0, and of what a resumed run says again."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last checkpoint is left as it was."""

    exit_code = 3


@dataclass
class TrainStep:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    precision: str
    after_step: Callable[[int], None] | None = None  # called with the iteration count
    image_size: int | None = None  # batches of another side are resized (progressive resizing)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, it: int) -> tuple:
        if self.image_size is not None and x.shape[-1] != self.image_size:
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True)
        with autocast(x.device.type, self.precision):
            out = model(x)
            loss = self.criterion(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.after_step is not None:
            self.after_step(it + 1)
        return out, loss

    def lr_at(self, it: int) -> float:
        return self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](it)


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
    world = world or World()
    folder = RunFolder(out_dir, writer=world.is_main)
    logger = create_logger(cfg.logger, out_dir, world.is_main)
    try:
        return _train(cfg, folder, logger, state, world, overwrite, resume)
    finally:
        logger.close()
        folder.unlock()


def _train(
    cfg: TrainConfig,
    folder: RunFolder,
    logger: TensorBoardLogger,
    state: dict | None,
    world: World,
    overwrite: bool,
    resume: bool,
) -> dict:
    log = print if world.is_main else print_nothing  # ranks other than 0
    device = setup(cfg, world, resume)
    source = read_pretrained(cfg.weights, cfg.model) if cfg.weights and state is None else None
    if source is not None:
        bundle = load_data(cfg, device, world, source.preprocessing, log)
    else:  # a resumed run's checkpoint says how its images were prepared: no weights read
        prepared = meta_preprocessing(state["meta"]) if cfg.weights and state else {}
        bundle = load_data(cfg, device, world, prepared)
    model = build_model(cfg, bundle, log=log, pretrained=source)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    # With an EMA, the average is what gets evaluated and saved (last/best.safetensors).
    ema = create_ema(model, cfg.model_ema_decay, cfg.model_ema_steps) if cfg.model_ema else None
    published = ema.module if ema is not None else model
    optimizer = build_optimizer(
        model, cfg.opt, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.no_wd_norm_bias,
        cfg.backbone_lr_scale, head_parameters(model) if cfg.backbone_lr_scale != 1 else None,
    )  # fmt: skip
    schedule = LrSchedule(
        name=cfg.schedule,
        total=cfg.iterations,
        steps_per_epoch=len(bundle.train),
        warmup=cfg.warmup_iterations if cfg.schedule != "onecycle" else 0,
        warmup_method=cfg.warmup_method,
        warmup_factor=cfg.warmup_factor,
        step_size=cfg.lr_step_size,
        gamma=cfg.lr_gamma,
    )
    step = TrainStep(
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, schedule),
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16"),
        criterion=nn.CrossEntropyLoss(
            weight=class_weights(cfg, bundle, device), label_smoothing=cfg.label_smoothing
        ),
        precision=cfg.precision,
        after_step=None if ema is None else partial(_update_ema, ema, model, cfg.model_ema_steps),
    )
    meta = weights_meta(cfg, bundle, ema is not None)
    eval_split = "val" if bundle.val is not None else "test"
    eval_loader = bundle.val if bundle.val is not None else bundle.test

    folder.lock()  # before the first write: bad input (above) leaves no trace
    if world.is_main and not resume:  # again, now that no other process can start here
        check_output_dir(folder.path, overwrite)
    run = RunState()
    if resume:
        folder.remove_temporaries()
    if state is not None:
        load_into(model, state["model"], source=f"weights in {folder.path / ckpt.STATE_FILE}")
        if ema is not None:
            if "model_ema" not in state:
                raise UserError(f"{folder.path / ckpt.STATE_FILE} holds no EMA weights")
            ema.load_state_dict(state["model_ema"])
        optimizer.load_state_dict(state["optimizer"])
        step.scheduler.load_state_dict(state["scheduler"])
        step.scaler.load_state_dict(state["scaler"])
        run = RunState(**state["run"])
        folder.repair(published, meta, run)
        log(f"resuming {folder.path} after epoch {run.epoch} (iteration {run.iteration})")
    elif not resume:
        folder.start(cfg, overwrite)

    # Training steps go through DDP (gradients averaged over the ranks); evaluation through
    # the bare model, each rank over its own shard, summed by evaluate().
    net = torch.compile(model) if cfg.compile else model
    ddp = distributed.wrap(model, device)
    train_net = net if ddp is model else torch.compile(ddp) if cfg.compile else ddp
    eval_net = net if ema is None else ema.module  # what is evaluated is what gets saved
    eval_kw = {"num_classes": bundle.num_classes, "precision": cfg.precision, "tta": cfg.tta}
    announce(cfg, bundle, device, log, folder.path)
    logger.start(bundle, run.history)
    if state is not None:
        ckpt.set_rng_state(state["rng"])  # last, so that nothing above draws from it

    last_plot, ev = -math.inf, None
    for epoch in range(run.epoch, cfg.epochs):
        t0 = time.perf_counter()
        bundle.train.set_epoch(epoch)
        ramp = (cfg.res_ramp_start, cfg.res_ramp_end)
        step.image_size = train_image_size(epoch, cfg.epochs, cfg.image_size, cfg.min_res, ramp)
        try:
            stats = train_one_epoch(
                train_net, bundle.train, step, epoch=epoch, epochs=cfg.epochs,
                start=run.iteration, total=cfg.iterations, print_freq=cfg.print_freq, log=log,
            )  # fmt: skip
        except TrainingDiverged as e:
            kept = "no checkpoint was written"
            if run.epoch:
                kept = f"the last checkpoint (epoch {run.epoch}) in {folder.path} is untouched"
            raise TrainingDiverged(f"{e}; {kept}") from None
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
        row = run.record(
            epoch + 1, stats, eval_split, ev, raw, seconds, train_seconds, step.image_size
        )
        logger.epoch(row)
        plot = epoch + 1 == cfg.epochs or time.monotonic() - last_plot >= PLOT_EVERY_S
        if folder.writer:
            snapshot = training_state(model, ema, step, cfg, run)
            folder.commit_epoch(snapshot, published, meta, run, plot)
        last_plot = time.monotonic() if plot else last_plot
        log(epoch_line(row, cfg.epochs, eval_split, ev, seconds, run.best_epoch == epoch + 1))

    t0 = time.perf_counter()
    test = None
    if eval_split == "test" and ev is not None:
        test = ev  # the last epoch's evaluation: the same weights on the same images
    elif bundle.test is not None:
        test = evaluate(eval_net, bundle.test, **eval_kw)
        run.test_evaluations += 1
    run.elapsed += time.perf_counter() - t0
    summary = make_summary(cfg, run, test, device, eval_split, model)
    logger.end(asdict(cfg), summary)
    folder.write_summary(summary)
    log(f"total time {_hms(run.elapsed)}; " + _summary_line(summary))
    log(f"results: {folder.path / 'summary.json'}, curves: {folder.path / 'curves.png'}")
    return summary


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    step: TrainStep,
    *,
    epoch: int,
    epochs: int,
    start: int,
    total: int,
    print_freq: int,
    log: Callable[..., None],
) -> dict[str, Any]:
    """One pass over ``loader`` (stopping at ``total`` iterations), without a host sync per step.

    Loss sum, correct count and the first non-finite iteration live in device tensors, read
    every ``print_freq`` steps and at the end: a NaN is caught at most that late, by its own
    iteration number, and always before the epoch's checkpoint is written.
    """
    model.train()
    steps = min(len(loader), total - start)
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    seen, it, t0 = 0, start, time.perf_counter()
    tty = sys.stdout.isatty()
    desc = f"epoch {epoch + 1}/{epochs}"
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not tty, file=sys.stdout)

    def check() -> tuple[float, float]:
        """The one host sync: running loss and accuracy, and stop on a non-finite loss."""
        bad = distributed.earliest_across_ranks(first_bad)  # all ranks stop together
        if bad >= 0:
            bar.close()
            raise TrainingDiverged(
                f"loss is not finite at iteration {bad + 1} (epoch {epoch + 1}, "
                f"lr {step.lr_at(bad):.4g}): training stopped"
            )
        return loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1)

    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        out, loss = step(model, x, y, it)
        with torch.no_grad():
            loss = loss.detach().float()
            loss_sum += loss.double() * y.shape[0]
            # MixUp / CutMix give probability targets: their argmax counts (as torchvision's)
            target = y if y.ndim == 1 else y.argmax(dim=1)
            correct += (out.argmax(dim=1) == target).sum()
            first_bad.copy_(torch.where(torch.isfinite(loss) | (first_bad >= 0), first_bad, it))
        seen += y.shape[0]
        it += 1
        bar.update(1)
        if (i + 1) % print_freq == 0 and i + 1 < steps:
            avg_loss, acc = check()
            ips = seen / max(time.perf_counter() - t0, 1e-9)
            progress = f"loss {avg_loss:.4f} acc {acc:.2f}%  lr {step.lr_at(it - 1):.4g}"
            if tty:
                bar.set_postfix_str(f"{progress} {ips:,.0f} img/s")
            else:
                log(f"  {desc} step {i + 1}/{steps}  {progress}  {ips:,.0f} img/s", flush=True)
    avg_loss, acc = check()
    bar.close()
    lr = step.lr_at(max(it - 1, 0))
    return {"loss": avg_loss, "acc": acc, "images": seen, "iteration": it, "lr": lr}


# --- setting up -------------------------------------------------------------------------------


def setup(cfg: TrainConfig, world: World, resume: bool) -> torch.device:
    if world.world_size > 1 and not distributed.active():
        raise RuntimeError("train() of several processes runs inside distributed.process_group")
    device = distributed.local_device(world, resolve_device(cfg.device))
    cfg.precision = resolve_precision(cfg.precision, device)  # "auto" -> what config.json says
    cfg.channels_last = resolve_channels_last(cfg.channels_last, device)
    distributed.check_sync_bn(cfg.sync_bn, device)
    if resume:
        resplit_batch(cfg, world)  # the run's global batch, over this many processes
    else:
        cfg.world_size = world.world_size
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return device


def resplit_batch(cfg: TrainConfig, world: World) -> None:
    """A resumed run keeps its global batch: 2 processes x 64 continue as 1 x 128 or 4 x 32."""
    if cfg.world_size == world.world_size:
        return
    global_batch = cfg.batch_size * cfg.world_size
    if global_batch % world.world_size:
        raise UserError(
            f"the run's global batch {global_batch} ({cfg.world_size} processes x "
            f"{cfg.batch_size}) does not split over {world.world_size} processes"
        )
    cfg.batch_size, cfg.world_size = global_batch // world.world_size, world.world_size


def load_data(
    cfg: TrainConfig,
    device: torch.device,
    world: World,
    prepared: dict[str, Any] | None = None,
    log: Callable[..., None] = print_nothing,
) -> DataBundle:
    """The loaders, prepared as pretrained weights' images were (``prepared``, see
    `weights_preprocessing`); then ``cfg`` holds what follows from the data (length, warm-up,
    sizes)."""
    cfg.data_path = str(resolve_root(cfg.data_path).resolve())
    cfg.eval_batch_size = cfg.eval_batch_size or 2 * cfg.batch_size
    normalisation = None
    if prepared:
        channels = 3 if cfg.dataset == "folder" else get_info(cfg.dataset).in_channels
        normalisation = weights_preprocessing(cfg, prepared, channels, log)
    same = ("download", "batch_size", "eval_batch_size", "val_split", "seed", "augment", "workers")
    same += ("auto_augment", "ra_magnitude", "augmix_severity", "random_erase", "mixup_alpha")
    same += ("cutmix_alpha", "per_class", "subset_seed", "sampler")
    bundle = build_loaders(
        cfg.dataset,
        cfg.data_path,
        **{name: getattr(cfg, name) for name in same},  # the settings of the same name
        class_subset=cfg.classes,
        device=str(device),
        channels_last=cfg.channels_last,
        rank=world.rank,
        world_size=world.world_size,
        image_size=cfg.image_size or 224,
        resize_size=cfg.resize_size or 256,
        skip_bad_images=cfg.skip_bad_images,
        normalisation=normalisation,
    )
    if cfg.batch_size > bundle.train.num_samples:
        raise UserError(
            f"--batch-size {cfg.batch_size} is larger than the training set "
            f"({bundle.train.num_samples} images after holding out {cfg.val_split})"
        )
    steps_per_epoch = len(bundle.train)
    cfg.iterations = cfg.iterations or cfg.epochs * steps_per_epoch  # decides when given
    cfg.epochs = math.ceil(cfg.iterations / steps_per_epoch)  # the last one may be partial
    if cfg.warmup_epochs:
        cfg.warmup_iterations = round(cfg.warmup_epochs * steps_per_epoch)
    cfg.warmup_iterations = cfg.warmup_iterations or 0
    cfg.image_size = cfg.image_size or bundle.input_size[-1]
    cfg.resize_size = cfg.resize_size or bundle.resize_size
    return bundle


def class_weights(
    cfg: TrainConfig, bundle: DataBundle, device: torch.device
) -> torch.Tensor | None:
    """The loss's per-class weights: None, or scikit-learn's "balanced" of the training labels."""
    if cfg.class_weights != "balanced":
        return None
    return balanced_class_weights(bundle.train_labels, bundle.classes).to(device)


def weights_preprocessing(
    cfg: TrainConfig, prepared: dict[str, Any], channels: int, log: Callable[..., None]
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """What the weights' own preprocessing (`Pretrained.preprocessing`) gives the data, said in
    one notice line: a folder's resize and crop sides where --resize-size / --image-size leave
    them unset (a given crop keeps the weights' resize-to-crop ratio), and the (mean, std) to
    normalise with when they have a value per channel of the data (else the dataset's stay).
    In-memory datasets keep their own image sizes."""
    taken = []
    if cfg.dataset == "folder" and "image_size" in prepared:
        crop, resize = prepared["image_size"], prepared["resize_size"]
        if cfg.image_size is not None and cfg.resize_size is None:
            cfg.resize_size = round(cfg.image_size * resize / crop)
            taken.append(f"resize {cfg.resize_size} (its {resize}:{crop} ratio)")
        elif cfg.resize_size is None:
            cfg.resize_size = resize
            taken.append(f"resize {resize}")
        if cfg.image_size is None:
            cfg.image_size = crop
            taken.append(f"crop {crop}")
    normalisation, kept = None, ""
    if "mean" in prepared:
        mean, std = prepared["mean"], prepared["std"]
        if len(mean) == channels == len(std):
            normalisation = (tuple(mean), tuple(std))
            taken.append(f"mean {_values(mean)}, std {_values(std)}")
        else:
            kept = (
                f" (its mean and std are for {len(mean)} channels, not {channels}: kept the data's)"
            )
    if taken or kept:
        log(f"notice: preprocessing from {cfg.weights}: {', '.join(taken) or 'none'}{kept}")
    return normalisation


def _values(v: Sequence[float]) -> str:
    return "[" + ", ".join(f"{x:g}" for x in v) + "]"


def build_model(
    cfg: TrainConfig,
    bundle: DataBundle,
    log: Callable[..., None] = print,
    pretrained: Pretrained | None = None,
) -> nn.Module:
    """The model, checked against the data (and the smallest side it will be trained at);
    a new run with ``--weights`` starts from them (a resumed one reads its own checkpoint)."""
    model = create_model(cfg.model, num_classes=bundle.num_classes, in_channels=bundle.in_channels)
    if pretrained is not None:
        load_pretrained(model, pretrained, log, bundle.classes)
    check_input(model, cfg.model, cfg.dataset, tuple(bundle.input_size), bundle.num_classes)
    if cfg.min_res:
        if cfg.min_res > bundle.input_size[-1]:
            raise UserError(
                f"--min-res {cfg.min_res} is larger than the images ({bundle.input_size[-1]})"
            )
        small = (bundle.input_size[0], cfg.min_res, cfg.min_res)
        check_input(model, cfg.model, f"--min-res {cfg.min_res}", small, bundle.num_classes)
    if cfg.freeze:
        freeze_backbone(model)
    if cfg.sync_bn:  # same parameter and buffer names: checkpoints stay plain BatchNorm ones
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def check_input(
    model: nn.Module, name: str, dataset: str, input_size: tuple, num_classes: int
) -> None:
    """One forward pass on zeros, so that a model that cannot take the data fails in one line."""
    model.eval()
    try:
        with torch.inference_mode():
            out = model(torch.zeros(2, *input_size))
    except RuntimeError as e:
        raise UserError(
            f"{name} cannot take {dataset} images of size {list(input_size)}: {first_line(e)}"
        ) from None
    finally:
        model.train()
    if tuple(out.shape) != (2, num_classes):
        raise UserError(f"{name} gives outputs of shape {list(out.shape)[1:]}, not [{num_classes}]")


def weights_meta(cfg: TrainConfig, bundle: DataBundle, ema: bool) -> dict[str, Any]:
    """What a checkpoint needs to be used alone: the model, its classes and preprocessing."""
    return {
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
        "weights": "ema" if ema else "model",  # which weights the files hold
    }


def announce(
    cfg: TrainConfig, bundle: DataBundle, device: torch.device, log: Callable, out: Path
) -> None:
    """The run in a few lines; ``cfg`` holds the resolved length and world size by now."""
    sizes = [s.dataset_size if s else 0 for s in (bundle.train, bundle.val, bundle.test)]
    log(
        f"{cfg.model} on {cfg.dataset}: {sizes[0]} train / {sizes[1]} val / {sizes[2]} test "
        f"images, {cfg.epochs} epochs ({cfg.iterations} iterations, {len(bundle.train)} per "
        f"epoch), {cfg.schedule} schedule, lr {cfg.lr}, device {device}, {cfg.precision} -> {out}"
    )
    if cfg.world_size > 1:
        log(
            f"{cfg.world_size} processes x batch {cfg.batch_size} = global batch "
            f"{cfg.world_size * cfg.batch_size}; lr {cfg.lr} as given (not scaled with the "
            "batch: see docs/distributed.md)"
        )
    if bundle.val is None and bundle.test is None:
        log("no validation or test split: only training numbers are shown, and no best is kept")
    elif bundle.val is None:  # the test set stands in
        every = "each epoch" if cfg.eval_every == 1 else f"every {cfg.eval_every} epochs"
        log(
            f"no validation split (--val-split 0): the test set is shown {every} "
            "for information only, and no best checkpoint is kept"
        )


def epoch_line(row: dict, epochs: int, split: str, ev: Any, seconds: float, improved: bool) -> str:
    evaluated = f"{split} loss {ev.loss:.4f} acc {ev.top1:6.2f}%  " if ev else ""
    return (
        f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:6.2f}%  {evaluated}lr {row['lr']:.4g}  {seconds:.1f}s  "
        f"{row['images_per_s']:,.0f} img/s" + ("  *best" if improved else "")
    )


def training_state(
    model: nn.Module, ema: AveragedModel | None, step: TrainStep, cfg: TrainConfig, run: RunState
) -> dict[str, Any]:
    """Everything `--resume` needs to continue bit for bit (training/checkpoint.py)."""
    return {
        **({} if ema is None else {"model_ema": ema.state_dict()}),
        "model": model.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.scheduler.state_dict(),
        "scaler": step.scaler.state_dict(),
        "rng": ckpt.rng_state(),
        "config": asdict(cfg),
        "run": asdict(run),
    }


def _update_ema(ema: AveragedModel, model: nn.Module, every: int, iteration: int) -> None:
    """After every ``every``-th optimizer step (counted over the run), average ``model`` in."""
    if iteration % every == 0:
        ema.update_parameters(model)


def _summary_line(s: dict) -> str:
    parts = []
    if s["best_epoch"] is not None:
        parts.append(f"best val acc {s['best_val_acc']:.2f}% at epoch {s['best_epoch']}")
    if (t := s["test"]) is not None:
        parts.append(f"test top-1 {t['top1']:.2f}% top-5 {t['top5']:.2f}% loss {t['loss']:.4f}")
    return "; ".join(parts)


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
