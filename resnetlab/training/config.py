"""The training configuration: one plain dataclass, filled from recipe < config file < flags.

Recipes (what a field left unset becomes; every run writes the resolved values to
config.json, which `--config` reads back):

| models, dataset          | length     | batch | lr (SGD 0.9)  | wd   | schedule         | val  |
|--------------------------|------------|-------|---------------|------|------------------|------|
| CIFAR/plain/preact, CIFAR| 64k it.    | 128   | 0.1           | 1e-4 | paper            | 5000 |
| wide ResNets, CIFAR      | 200 ep.    | 128   | 0.1, nesterov | 5e-4 | step 60 ep. x0.2 | 5000 |
| any, (Fashion-)MNIST     | 5 / 10 ep. | 128   | 0.05          | 5e-4 | cosine           | 5000 |
| ImageNet-style or folder | 90 ep.     | 256   | 0.1           | 1e-4 | step 30 ep. x0.1 | 0    |
| anything else            | 30 ep.     | 128   | 0.1           | 5e-4 | cosine           | 0    |

``--recipe fast`` (CIFAR/plain/preact/wide models on CIFAR-10/100) trades the
paper's 164 epochs (64k iterations) for 30: one-cycle lr peaking at 0.2, Nesterov
momentum, wd 5e-4 off BatchNorm and biases, label smoothing 0.1 and flip test-time
augmentation. To fit 30 minutes on a 2-core CPU it also trains the first epochs at lower
resolution (progressive resizing as FFCV does for ResNets: 24x24 up to 35% of the run,
growing to 32x32 at 65%; ``--min-res 0`` turns it off) and evaluates every 5 epochs
(``--eval-every``) instead of every epoch. Its choices were made on the 45k/5k split
(``--val-split 5000``); like the paper's final models it then trains on all 50k training
images (``val_split`` 0). A
weight EMA (``--model-ema``, training/ema.py) was measured with it and left off: at the
end of the one-cycle run it trailed the weights themselves on the validation split. What it
reaches on this machine, and how it was chosen: docs/results.md.

"paper" divides the lr by 10 at 50% and 75% of the run (32k and 48k of 64k).
CIFAR ResNet-110 and deeper also warm up at lr 0.01 for the first 400 iterations, then go
back to 0.1 (paper, section 4.2). The paper's 45k/5k split is ``val_split`` 5000.

A user's ``--epochs`` or ``--iterations`` replaces the recipe's length; the paper
schedule's milestones sit at 50% and 75% of whatever the length is, so a short run
keeps the shape of the long one.

``precision`` "auto" and an unset ``channels_last`` are decided when the run starts, from
the hardware (training/fast_path.py: bf16 only where it is native, channels_last on CPU
and CUDA); config.json holds what the run used.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from resnetlab.errors import UserError

DATASET_CHOICES = ("mnist", "fashion-mnist", "cifar10", "cifar100", "folder")
SCHEDULES = ("paper", "step", "cosine", "onecycle")
OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: see training/fast_path.py
WARMUP_METHODS = ("linear", "constant")
RECIPES = ("default", "fast")
TTA_CHOICES = ("none", "flip")
# Deep CIFAR ResNets need the paper's warm-up: "we use 0.01 to warm up the training
# until the training error is below 80% (about 400 iterations), and then go back to 0.1".
PAPER_WARMUP_ITERATIONS = 400
PAPER_WARMUP_DEPTH = 110


@dataclass
class TrainConfig:
    """Everything a run depends on; None means "the recipe decides" until `resolve`."""

    model: str | None = None
    dataset: str | None = None
    data_path: str | None = None
    download: bool = False
    epochs: int | None = None
    iterations: int | None = None  # when set, decides the length; epochs then follow from it
    batch_size: int | None = None
    eval_batch_size: int | None = None
    opt: str | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    no_wd_norm_bias: bool | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    warmup_iterations: int | None = None  # resolved from warmup_epochs, or set by the recipe
    warmup_method: str | None = None
    warmup_factor: float | None = None  # lr multiplier during (the start of) warm-up
    lr_step_size: int | None = None  # epochs between decays of the step schedule
    lr_gamma: float | None = None
    label_smoothing: float | None = None
    model_ema: bool | None = None  # evaluate and save an EMA of the weights (training/ema.py)
    model_ema_decay: float | None = None  # per optimizer step
    model_ema_steps: int | None = None  # steps between EMA updates
    tta: str | None = None  # test-time augmentation of every evaluation: none or flip
    eval_every: int | None = None  # epochs between evaluations; the last one is always evaluated
    # Progressive resizing (FFCV's): train at side ``min_res`` (0: off) until the fraction
    # ``res_ramp_start`` of the run, grow linearly to the full size at ``res_ramp_end``.
    min_res: int | None = None
    res_ramp_start: float | None = None
    res_ramp_end: float | None = None
    recipe: str | None = None  # which defaults fill the unset fields: default or fast
    val_split: int | None = None
    seed: int = 0
    output_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"  # resolved when the run starts (training/fast_path.py)
    channels_last: bool | None = None  # None: resolved when the run starts, like precision
    compile: bool = False
    workers: int = 2
    augment: str | None = None
    skip_bad_images: bool = False
    image_size: int | None = None  # folder datasets: train and eval crop
    resize_size: int | None = None  # folder datasets: eval resize before the centre crop
    print_freq: int = 50  # steps between progress updates (and finiteness checks)
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    # Processes the run trains with; batch_size is per process, so the global batch is
    # batch_size * world_size. Set by `train` (a record, not a setting).
    world_size: int = 1


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
# What runs whose config.json predates these settings did, so that they still resume.
BEFORE_SETTINGS = {
    "sync_bn": False,
    "world_size": 1,
    "eval_every": 1,
    "min_res": 0,
    "res_ramp_start": 0.0,
    "res_ramp_end": 0.0,
}


def model_depth(model: str) -> int:
    """The depth in a model's name (resnet110 -> 110); 0 for names without one."""
    found = re.search(r"(\d+)$", model)
    return int(found.group(1)) if found else 0


def recipe(model: str, family: str, dataset: str, name: str = "default") -> dict[str, Any]:
    """The defaults for ``model`` (of registry ``family``) on ``dataset``: see the module table."""
    if name == "fast":
        return fast_recipe(model, family, dataset)
    common = {
        "opt": "sgd",
        "momentum": 0.9,
        "nesterov": False,
        "no_wd_norm_bias": False,
        "label_smoothing": 0.0,
        "warmup_epochs": 0.0,
        "warmup_method": "linear",
        "warmup_factor": 0.01,
        "lr_gamma": 0.1,
        "lr_step_size": 30,
        "augment": "crop-flip",
        "model_ema": False,
        "model_ema_decay": 0.999,
        "model_ema_steps": 32,  # torchvision's reference default
        "tta": "none",
        "eval_every": 1,
        "min_res": 0,
        "res_ramp_start": 0.0,
        "res_ramp_end": 0.0,
        "recipe": "default",
    }
    if dataset in ("mnist", "fashion-mnist"):
        return {
            **common,
            "epochs": 5 if dataset == "mnist" else 10,
            "batch_size": 128,
            "lr": 0.05,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "val_split": 5000,
            "augment": "none",
        }
    if dataset in ("cifar10", "cifar100") and family in ("cifar", "plain", "preact"):
        out = {
            **common,
            "iterations": 64_000,
            "batch_size": 128,
            "lr": 0.1,
            "weight_decay": 1e-4,
            "schedule": "paper",
            "val_split": 5000,
        }
        if model_depth(model) >= PAPER_WARMUP_DEPTH:
            out.update(
                warmup_iterations=PAPER_WARMUP_ITERATIONS,
                warmup_method="constant",
                warmup_factor=0.1,
            )
        return out
    if dataset in ("cifar10", "cifar100") and family == "wide":
        return {
            **common,
            "epochs": 200,
            "batch_size": 128,
            "lr": 0.1,
            "nesterov": True,
            "weight_decay": 5e-4,
            "schedule": "step",
            "lr_step_size": 60,
            "lr_gamma": 0.2,
            "val_split": 5000,
        }
    if family == "imagenet" or dataset == "folder":
        return {
            **common,
            "epochs": 90,
            "batch_size": 256,
            "lr": 0.1,
            "weight_decay": 1e-4,
            "schedule": "step",
            "val_split": 0,
        }
    return {
        **common,
        "epochs": 30,
        "batch_size": 128,
        "lr": 0.1,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "val_split": 0,
    }


def fast_recipe(model: str, family: str, dataset: str) -> dict[str, Any]:
    """Aims at ResNet-20's published accuracy in 30 epochs, not 164: see the module docstring."""
    if dataset not in ("cifar10", "cifar100") or family not in ("cifar", "plain", "preact", "wide"):
        raise UserError(
            f"the fast recipe is for CIFAR models on cifar10/cifar100, not {model} on {dataset}"
        )
    return {
        **recipe(model, family, dataset),
        "epochs": 30,
        "iterations": None,
        "batch_size": 128,
        "lr": 0.2,
        "nesterov": True,
        "weight_decay": 5e-4,
        "no_wd_norm_bias": True,
        "label_smoothing": 0.1,
        "schedule": "onecycle",
        "warmup_iterations": 0,
        "tta": "flip",
        "eval_every": 5,  # the test set at epochs 5, 10, ..., 30: 6 s each, not every epoch
        "min_res": 24,  # 12 epochs at 24x24, 5 at 28x28, the last 13 at 32x32: ~0.78 of the cost
        "res_ramp_start": 0.35,
        "res_ramp_end": 0.65,
        "val_split": 0,  # chosen on --val-split 5000; the result trains on all 50k, as the paper's
        "recipe": "fast",
    }


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of TrainConfig fields (dashes or underscores in the keys)."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config file {p}: {e.strerror or e}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot parse config file {p}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"config file {p} must hold a mapping of settings, not a {type(data).__name__}"
        )
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(k for k in out if k not in FIELD_NAMES)
    if unknown:
        raise UserError(f"config file {p}: unknown setting(s) {', '.join(unknown)}")
    return out


def merge(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Flags override the file; a length given as a flag replaces the file's length."""
    values = dict(file_values)
    if flag_values.get("epochs") is not None and flag_values.get("iterations") is not None:
        raise UserError("give --epochs or --iterations, not both")
    if flag_values.get("epochs") is not None or flag_values.get("iterations") is not None:
        values.pop("epochs", None)
        values.pop("iterations", None)
    if flag_values.get("warmup_epochs") is not None:
        values.pop("warmup_iterations", None)
    values.update({k: v for k, v in flag_values.items() if v is not None})
    return TrainConfig(**values)


def fill_recipe(cfg: TrainConfig, family: str) -> TrainConfig:
    """Fill every unset field from the recipe of ``cfg.model`` on ``cfg.dataset``."""
    defaults = recipe(cfg.model or "", family, cfg.dataset or "", cfg.recipe or "default")
    values = asdict(cfg)
    user_length = cfg.epochs is not None or cfg.iterations is not None
    for key, value in defaults.items():
        if key in ("epochs", "iterations") and user_length:
            continue
        if key == "warmup_iterations" and cfg.warmup_epochs is not None:
            continue  # the user chose the warm-up (``--warmup-epochs 0`` turns it off)
        if values.get(key) is None:
            values[key] = value
    return TrainConfig(**values)


def check_types(cfg: TrainConfig) -> None:
    """A config file can hold anything; catch wrong types with one line, not a traceback."""
    expect = {
        "model": str,
        "dataset": str,
        "opt": str,
        "schedule": str,
        "device": str,
        "precision": str,
        "warmup_method": str,
        "augment": str,
        "tta": str,
        "recipe": str,
    }
    for f in fields(TrainConfig):
        v = getattr(cfg, f.name)
        if v is None:
            continue
        kind = expect.get(f.name) or _kind(f)
        ok = isinstance(v, kind) and not (kind in (int, float) and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            setattr(cfg, f.name, float(v))
            ok = True
        if not ok:
            raise UserError(f"{f.name} must be {kind.__name__}, got {v!r}")


def _kind(f: dataclasses.Field) -> type:
    t = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if t.startswith(name):
            return kind
    return object


def validate(cfg: TrainConfig) -> None:
    """Nonsense numbers and unknown choices, caught before any data is read or file written."""
    check_types(cfg)
    choices = {
        "dataset": DATASET_CHOICES,
        "schedule": SCHEDULES,
        "opt": OPTIMIZERS,
        "device": DEVICES,
        "precision": PRECISIONS,
        "warmup_method": WARMUP_METHODS,
        "tta": TTA_CHOICES,
        "recipe": RECIPES,
    }
    for key, allowed in choices.items():
        v = getattr(cfg, key)
        if v is not None and v not in allowed:
            raise UserError(f"unknown {key} {v!r}; choose from {', '.join(allowed)}")
    positive = ("epochs", "iterations", "batch_size", "eval_batch_size", "lr_step_size")
    positive += ("print_freq", "image_size", "resize_size", "model_ema_steps", "eval_every")
    for key in positive:
        v = getattr(cfg, key)
        if v is not None and v < 1:
            raise UserError(f"{key.replace('_', '-')} must be at least 1, got {v}")
    for key in ("lr", "lr_gamma", "warmup_factor"):
        v = getattr(cfg, key)
        if v is not None and not v > 0:
            raise UserError(f"{key.replace('_', '-')} must be positive, got {v}")
    not_negative = ("momentum", "weight_decay", "warmup_epochs", "warmup_iterations", "val_split")
    for key in (*not_negative, "min_res"):
        v = getattr(cfg, key)
        if v is not None and v < 0:
            raise UserError(f"{key.replace('_', '-')} must not be negative, got {v}")
    if cfg.workers < 0:
        raise UserError(f"workers must not be negative, got {cfg.workers}")
    if cfg.world_size < 1:
        raise UserError(f"world_size must be at least 1, got {cfg.world_size}")
    if cfg.seed < 0:
        raise UserError(f"seed must not be negative, got {cfg.seed}")
    if cfg.momentum is not None and cfg.momentum >= 1:
        raise UserError(f"momentum must be below 1, got {cfg.momentum}")
    if cfg.label_smoothing is not None and not 0 <= cfg.label_smoothing < 1:
        raise UserError(f"label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.model_ema_decay is not None and not 0 <= cfg.model_ema_decay < 1:
        raise UserError(f"model-ema-decay must be in [0, 1), got {cfg.model_ema_decay}")
    start, end = cfg.res_ramp_start, cfg.res_ramp_end
    if start is not None and end is not None and not 0 <= start <= end <= 1:
        raise UserError(f"need 0 <= res-ramp-start <= res-ramp-end <= 1, got {start} and {end}")
    if cfg.nesterov and cfg.opt == "sgd" and not cfg.momentum:
        raise UserError("--nesterov needs a momentum above 0")
    if cfg.dataset == "folder" and cfg.data_path is None:
        raise UserError("--dataset folder needs --data-path (a folder with train/ and val/)")
