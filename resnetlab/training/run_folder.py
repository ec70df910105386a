"""A run's folder: config.json, metrics.csv, summary.json, curves.png and checkpoints.

The folder belongs to one process at a time (a lock held until the process exits, however it
exits). An epoch is committed by one atomic write of the training state (the commit point);
the other files are derived from it, so a kill between writes is repaired on resume.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.device import device_name
from resnetlab.errors import UserError, WriteError
from resnetlab.io import atomic_write_json, atomic_write_text
from resnetlab.models import weights
from resnetlab.training import checkpoint as ckpt
from resnetlab.training.config import LEGACY, RESUME_OVERRIDES, TrainConfig, validate
from resnetlab.training.curves import plot_curves
from resnetlab.version import __version__

CONFIG, METRICS, SUMMARY, CURVES = ("config.json", "metrics.csv", "summary.json", "curves.png")
# What a run writes; --overwrite removes exactly these (and the eval pictures) first.
RUN_FILES = CONFIG, METRICS, SUMMARY, CURVES, ckpt.STATE_FILE, ckpt.LAST_WEIGHTS, ckpt.BEST_WEIGHTS
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


@dataclass
class RunState:
    """Where a run stands: saved in every training state, restored on resume."""

    epoch: int = 0
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv rows
    best_epoch: int | None = None
    best_acc: float | None = None  # validation top-1 of best_epoch
    elapsed: float = 0.0  # seconds, training and evaluation
    train_images: int = 0
    train_seconds: float = 0.0
    test_evaluations: int = 0  # times the test set was looked at (a best of several is marked)

    def record(
        self,
        epoch: int,
        stats: dict,
        split: str,
        ev: Any,
        raw: Any,
        seconds: float,
        train_seconds: float,
        image_size: int,
    ) -> dict[str, Any]:
        """Add an epoch: its metrics.csv row (returned), the run's totals and best."""
        row = {
            "epoch": epoch,
            "iteration": stats["iteration"],
            "lr": stats["lr"],
            "train_loss": stats["loss"],
            "train_acc": stats["acc"],
            "eval_split": split if ev else "",
            "eval_loss": ev.loss if ev else None,
            "eval_acc": ev.top1 if ev else None,
            "raw_eval_acc": raw.top1 if raw else None,
            "seconds": round(seconds, 3),
            "images_per_s": round(stats["images"] / max(train_seconds, 1e-9), 1),
            "image_size": image_size,
        }
        self.history.append(row)
        self.epoch, self.iteration = epoch, stats["iteration"]
        self.elapsed += seconds
        self.train_images += stats["images"]
        self.train_seconds += train_seconds
        self.test_evaluations += bool(ev) and split == "test"
        if ev and split == "val" and (self.best_acc is None or ev.top1 > self.best_acc):
            self.best_epoch, self.best_acc = epoch, ev.top1
        return row


class RunFolder:
    """The files of one run; only the main process writes."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        self.path, self.writer = path, writer
        self._lock: int | None = None

    def lock(self) -> None:
        """Refuse a second process: a flock on the folder itself (no lock file), dropped at exit."""
        if not self.writer:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise WriteError(f"cannot create {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{self.path} is in use by another resnetlab train") from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def start(self, cfg: TrainConfig, overwrite: bool) -> None:
        if not self.writer:
            return
        if overwrite:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            for png in self.path.glob("confusion-*.png"):
                png.unlink()
        atomic_write_json(self.path / CONFIG, asdict(cfg))

    def commit_epoch(
        self, state: dict[str, Any], published: nn.Module, meta: dict, run: RunState, plot: bool
    ) -> None:
        """The state first (the commit point), then the weights and metrics derived from it."""
        state_meta = {**meta, "epoch": run.epoch, "iteration": run.iteration}
        ckpt.save_state(self.path / ckpt.STATE_FILE, {**state, "meta": state_meta})
        self._derive(published, meta, run, best=run.best_epoch == run.epoch, plot=plot)

    def _derive(self, model: nn.Module, meta: dict, run: RunState, best: bool, plot: bool) -> None:
        """last.safetensors (and best's when ``best``), metrics.csv and curves.png from ``run``."""
        weights_meta = {**meta, "epoch": run.epoch, "iteration": run.iteration}
        weights.save_weights(self.path / ckpt.LAST_WEIGHTS, model, weights_meta)
        if best:
            weights.save_weights(self.path / ckpt.BEST_WEIGHTS, model, weights_meta)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(run.history)
        atomic_write_text(self.path / METRICS, buf.getvalue())
        if run.history and plot:
            plot_curves(run.history, self.path / CURVES, f"{meta['model']} on {meta['dataset']}")

    def repair(self, published: nn.Module, meta: dict, run: RunState) -> None:
        """Bring the derived files back in line with the state (after a kill between writes)."""
        if not self.writer:
            return
        saved_best = None  # the epoch best.safetensors holds (None: unreadable, or not needed)
        if run.best_epoch == run.epoch:
            with contextlib.suppress(UserError):
                saved_best = weights.read_weights(self.path / ckpt.BEST_WEIGHTS)[1].get("epoch")
        stale = run.best_epoch == run.epoch and saved_best != run.epoch
        self._derive(published, meta, run, best=stale, plot=True)

    def remove_temporaries(self) -> None:
        """Temporaries of writes that a kill cut short (`atomic_write` names them .NAME.*.tmp)."""
        if self.writer:
            for name in RUN_FILES:
                for tmp in self.path.glob(f".{name}.*.tmp"):
                    tmp.unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> None:
        if self.writer:
            atomic_write_json(self.path / SUMMARY, summary)


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Never write over a run unless asked to; say how to continue it instead."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output-dir {out_dir} is a file")
    existing = next(p for p in (out_dir.absolute(), *out_dir.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(f"--output-dir {out_dir}: {existing} is not writable")
    if overwrite:
        return
    if (out_dir / SUMMARY).exists():
        raise UserError(
            f"{out_dir} already holds a finished run; pass --overwrite to replace it "
            "or choose another --output-dir"
        )
    if any((out_dir / name).exists() for name in RUN_FILES):
        raise UserError(
            f"{out_dir} already holds a run; pass --resume {out_dir} to continue it "
            "or --overwrite to replace it"
        )


def read_run(run_dir: Path, flags: dict[str, Any]) -> tuple[TrainConfig, dict | None]:
    """A run's own config.json with the flags a resume may change, and its training state.

    The state is None when no epoch finished yet; flags that would change the run are refused.
    """
    cfg_file = run_dir / CONFIG
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such run folder")
    if not cfg_file.is_file():
        raise UserError(f"--resume {run_dir}: no config.json there (not a resnetlab run)")
    try:
        cfg = TrainConfig(**{**LEGACY, **json.loads(cfg_file.read_text(encoding="utf-8"))})
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
        state_cfg = {**LEGACY, **state["config"]}
        saved = {k: v for k, v in state_cfg.items() if k not in skip}
        now = {k: v for k, v in asdict(cfg).items() if k not in skip}
        if state_cfg["batch_size"] * state_cfg["world_size"] != cfg.batch_size * cfg.world_size:
            now["batch_size"], saved["batch_size"] = cfg.batch_size, None
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise UserError(f"{state_file} and config.json disagree on {', '.join(diff)}")
    return cfg, state


def make_summary(
    cfg: TrainConfig,
    run: RunState,
    test: Any,
    device: torch.device,
    eval_split: str,
    model: nn.Module,
) -> dict:
    try:  # the installed version, without importing torchvision (seconds, for torch._dynamo)
        torchvision_version = version("torchvision")
    except PackageNotFoundError:
        torchvision_version = None
    last = run.history[-1] if run.history else {}
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "epochs": run.epoch,
        "iterations": run.iteration,
        "best_val_acc": run.best_acc,
        "best_epoch": run.best_epoch,
        "best_note": None if eval_split == "val" else "no validation split: no best checkpoint",
        "test": None if test is None else {"top1": test.top1, "top5": test.top5, "loss": test.loss},
        "test_evaluations": run.test_evaluations,
        "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
        "wall_time_s": round(run.elapsed, 2),
        "images_per_s": round(run.train_images / max(run.train_seconds, 1e-9), 1),
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
