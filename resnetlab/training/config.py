"""The training configuration: each setting declared once, filled from recipe < file < flags.

A setting is one field of `TrainConfig`; its metadata (`setting(...)`) carries the help,
choices and check, so the `resnetlab train` flags, the config-file keys and config.json all
come from it (commands/flags.py turns the fields into flags). None means "the recipe
decides"; the recipes are the tables below, and config.json holds the resolved values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from resnetlab.data.policies import POLICIES
from resnetlab.device import DEVICE_PATTERN, PRECISIONS
from resnetlab.errors import UserError, first_line
from resnetlab.models import get_model_entry, model_depth
from resnetlab.training.tensorboard import check_installed

CIFAR = ("cifar10", "cifar100")
DATASET_CHOICES = ("mnist", "fashion-mnist", *CIFAR, "folder")


def setting(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A TrainConfig field and its declaration.

    ``meta`` keys: ``choices``; ``check`` (value -> message or None); ``flags`` (the
    option strings, default ``--the-name``); ``flag=False`` for a record, not a setting;
    ``group`` (mutually exclusive flags); ``negatable=False`` (a plain ``store_true``);
    ``resume=True`` (a resumed run may change it); ``legacy`` (what runs whose config.json
    predates the setting did, so that they still resume).
    """
    return field(default=default, metadata={"help": help, **meta})


def at_least(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be positive, got {v}"  # nan is not


def not_negative(v: float) -> str | None:
    return None if v >= 0 else f"must not be negative, got {v}"


def fraction(v: float) -> str | None:
    return None if 0 <= v < 1 else f"must be in [0, 1), got {v}"


def probability(v: float) -> str | None:
    return None if 0 <= v <= 1 else f"must be a probability in [0, 1], got {v}"


def between(low: int, high: int) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be in {low}..{high}, got {v}"


def class_names(v: str) -> str | None:
    items = [item.strip() for item in v.split(",")]
    return "needs comma-separated class names or indices, e.g. 5,6,7" if "" in items else None


def below_one(v: float) -> str | None:
    return not_negative(v) or (None if v < 1 else f"must be below 1, got {v}")


def device_name(v: str) -> str | None:
    return None if DEVICE_PATTERN.fullmatch(v) else f"must be auto, cpu, cuda or cuda:N, not {v!r}"


@dataclass
class TrainConfig:
    """Everything a run depends on; None means "the recipe decides" until `fill_recipe`."""

    model: str | None = setting(help="a registered model (see `resnetlab models`)")
    dataset: str | None = setting(choices=DATASET_CHOICES)
    data_path: str | None = setting(
        help="dataset root (default: $RESNETLAB_DATA or ./data)", resume=True
    )
    download: bool = setting(False, "download the dataset if missing", negatable=False, resume=True)
    epochs: int | None = setting(help="default: the recipe's length", check=at_least(1), group=1)
    iterations: int | None = setting(
        help="total optimizer steps (the paper's unit); decides the length when set",
        check=at_least(1),
        group=1,
    )
    batch_size: int | None = setting(
        help="per process (default: the recipe's)", flags=("-b", "--batch-size"), check=at_least(1)
    )
    eval_batch_size: int | None = setting(
        help="default: twice --batch-size", check=at_least(1), resume=True
    )
    opt: str | None = setting(choices=("sgd", "adamw"), help="default: sgd")
    lr: float | None = setting(help="base learning rate (default: the recipe's)", check=positive)
    momentum: float | None = setting(check=below_one)
    nesterov: bool | None = setting()
    weight_decay: float | None = setting(flags=("--wd", "--weight-decay"), check=not_negative)
    no_wd_norm_bias: bool | None = setting(
        help="no weight decay on normalization layers and biases", negatable=False
    )
    schedule: str | None = setting(
        choices=("paper", "step", "cosine", "onecycle"),
        help="paper: lr/10 at 50%% and 75%% of the run (32k, 48k of 64k)",
    )
    warmup_epochs: float | None = setting(check=not_negative)
    warmup_iterations: int | None = setting(check=not_negative, flag=False)  # from warmup_epochs
    warmup_method: str | None = setting(choices=("linear", "constant"))
    warmup_factor: float | None = setting(
        help="lr multiplier at the start of warm-up", check=positive
    )
    lr_step_size: int | None = setting(
        help="epochs between decays (step schedule)", check=at_least(1)
    )
    lr_gamma: float | None = setting(help="decay factor (paper and step schedules)", check=positive)
    label_smoothing: float | None = setting(check=fraction)
    model_ema: bool | None = setting(
        help="evaluate and save an exponential moving average of the weights (training/ema.py)"
    )
    model_ema_decay: float | None = setting(help="EMA decay per optimizer step", check=fraction)
    model_ema_steps: int | None = setting(
        help="optimizer steps between EMA updates", check=at_least(1)
    )
    tta: str | None = setting(choices=("none", "flip"), help="test-time augmentation of evals")
    eval_every: int | None = setting(
        help="epochs between evaluations (the last is always evaluated)",
        check=at_least(1),
        legacy=1,
    )
    # Progressive resizing (FFCV's): see schedule.train_image_size.
    min_res: int | None = setting(
        help="progressive resizing: the first epochs' image side (0: off)",
        check=not_negative,
        legacy=0,
    )
    res_ramp_start: float | None = setting(help="fraction of the run where sides grow", legacy=0.0)
    res_ramp_end: float | None = setting(help="fraction of the run at the full size", legacy=0.0)
    weights: str | None = setting(
        help="start from pretrained weights: a torchvision name (ResNet18_Weights.DEFAULT), "
        "a weights file or a run folder; the head and stem are adapted to the data",
        legacy=None,
    )
    freeze: bool = setting(
        False,
        "train only the head (the last linear layer): the backbone's weights and BatchNorm "
        "statistics stay as loaded",
        negatable=False,
        legacy=False,
    )
    backbone_lr_scale: float = setting(
        1.0, "the backbone's lr is lr x this (the head's is lr)", check=positive, legacy=1.0
    )
    recipe: str | None = setting(
        choices=("default", "fast", "finetune"),
        help="the defaults of unset options: default (the paper's where it has one), fast, or "
        "finetune (short, low lr, for --weights)",
    )
    val_split: int | None = setting(
        help="images held out of train for validation", check=not_negative
    )
    seed: int = setting(0, "model init, data order and split (default: 0)", check=not_negative)
    output_dir: str | None = setting(help="default: runs/MODEL-DATASET-TIMESTAMP")
    device: str = setting(
        "auto", "auto (CUDA if present), cpu, cuda or cuda:N", check=device_name, resume=True
    )
    precision: str = setting(
        "auto",
        "auto: bf16 where the hardware has it natively, else fp32; fp16 needs CUDA",
        choices=PRECISIONS,
    )
    channels_last: bool | None = setting(help="NHWC memory format (default: on for CPU and CUDA)")
    compile: bool = setting(False, "torch.compile the model")
    workers: int = setting(
        2, "loader processes", flags=("-j", "--workers"), check=not_negative, resume=True
    )
    augment: str | None = setting(help="crop-flip, flip, cutout or none")
    # Augmentation and imbalanced classes (docs/augment.md), torchvision's reference flag names.
    auto_augment: str = setting(
        "none", "policy after crop and flip", choices=POLICIES, legacy="none"
    )
    ra_magnitude: int = setting(9, "RandAugment's magnitude", check=between(0, 30), legacy=9)
    augmix_severity: int = setting(3, "AugMix's severity", check=between(1, 10), legacy=3)
    random_erase: float = setting(
        0.0, "probability of erasing a rectangle of an image", check=probability, legacy=0.0
    )
    mixup_alpha: float = setting(
        0.0, "MixUp's Beta(alpha, alpha) (0: off)", check=not_negative, legacy=0.0
    )
    cutmix_alpha: float = setting(
        0.0, "CutMix's Beta(alpha, alpha) (0: off)", check=not_negative, legacy=0.0
    )
    classes: str = setting(
        "all",
        "only these classes, e.g. 5,6,7 or cat,dog (re-indexed 0..k-1, in every split)",
        check=class_names,
        legacy="all",
    )
    per_class: int | None = setting(
        help="training images of each class (the first N in a seeded order; default: all)",
        check=at_least(1),
        legacy=None,
    )
    subset_seed: int | None = setting(  # None: --seed's, written out by resolve_config
        help="the order --per-class picks from (default: --seed)", check=not_negative, legacy=None
    )
    class_weights: str = setting(
        "none",
        "balanced: loss weights n / (classes * count of the class)",
        choices=("none", "balanced"),
        legacy="none",
    )
    sampler: str = setting(
        "shuffle",
        "balanced: each epoch draws with replacement, 1 / count of the class",
        choices=("shuffle", "balanced"),
        legacy="shuffle",
    )
    skip_bad_images: bool = setting(False, "skip unreadable images of a folder", negatable=False)
    image_size: int | None = setting(help="folder datasets: crop size", check=at_least(1))
    resize_size: int | None = setting(help="folder datasets: eval resize", check=at_least(1))
    # Only what is written changes, never the training: a resumed run may turn it on or off.
    logger: str = setting(
        "none",
        "tensorboard: also write TensorBoard event files to OUTPUT_DIR/tensorboard",
        choices=("none", "tensorboard"),
        check=check_installed,
        resume=True,
        legacy="none",
    )
    print_freq: int = setting(
        50, "steps between progress updates (and finiteness checks)", check=at_least(1), resume=True
    )
    sync_bn: bool = setting(
        False,
        "BatchNorm statistics over all processes (torchrun, CUDA only)",
        negatable=False,
        legacy=False,
    )
    # Processes the run trains with; batch_size is per process. Set by `train`.
    world_size: int = setting(1, check=at_least(1), flag=False, legacy=1)


SETTINGS = {f.name: f for f in fields(TrainConfig)}
LEGACY = {name: f.metadata["legacy"] for name, f in SETTINGS.items() if "legacy" in f.metadata}
RESUME_OVERRIDES = tuple(name for name, f in SETTINGS.items() if f.metadata.get("resume"))

# --- recipes: what a field left unset becomes --------------------------------------------------

COMMON = dict(
    opt="sgd", momentum=0.9, nesterov=False, no_wd_norm_bias=False, label_smoothing=0.0,
    warmup_epochs=0.0, warmup_method="linear", warmup_factor=0.01, lr_gamma=0.1,
    lr_step_size=30, augment="crop-flip", model_ema=False, model_ema_decay=0.999,
    model_ema_steps=32,  # torchvision's reference default
    tta="none", eval_every=1, min_res=0, res_ramp_start=0.0, res_ramp_end=0.0, recipe="default",
)  # fmt: skip
MNIST = dict(batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine", val_split=5000)
# (datasets, model families, values): the first row that matches gives the defaults.
RECIPES: list[tuple[tuple[str, ...] | None, tuple[str, ...] | None, dict[str, Any]]] = [
    (("mnist",), None, {**MNIST, "epochs": 5, "augment": "none"}),
    (("fashion-mnist",), None, {**MNIST, "epochs": 10, "augment": "none"}),
    # The paper (section 4.2): 64k iterations of batch 128, lr 0.1 / 10 at 32k and 48k.
    (CIFAR, ("cifar", "plain", "preact"), dict(
        iterations=64_000, batch_size=128, lr=0.1, weight_decay=1e-4, schedule="paper",
        val_split=5000)),
    # Zagoruyko & Komodakis: 200 epochs, lr 0.1 x 0.2 every 60, Nesterov, wd 5e-4.
    (CIFAR, ("wide",), dict(
        epochs=200, batch_size=128, lr=0.1, nesterov=True, weight_decay=5e-4, schedule="step",
        lr_step_size=60, lr_gamma=0.2, val_split=5000)),
    # torchvision's ImageNet reference: 90 epochs, batch 256, lr 0.1 / 10 every 30.
    (None, ("imagenet",), dict(
        epochs=90, batch_size=256, lr=0.1, weight_decay=1e-4, schedule="step", val_split=0)),
    (("folder",), None, dict(
        epochs=90, batch_size=256, lr=0.1, weight_decay=1e-4, schedule="step", val_split=0)),
    (None, None, dict(
        epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, schedule="cosine", val_split=0)),
]  # fmt: skip
# "we use 0.01 to warm up the training until the training error is below 80% (about 400
# iterations), and then go back to 0.1" (paper, section 4.2), for ResNet-110 and deeper.
PAPER_WARMUP = dict(warmup_iterations=400, warmup_method="constant", warmup_factor=0.1)
PAPER_WARMUP_DEPTH = 110
# ResNet-20's published accuracy in 30 epochs, not 164 (docs/results.md); chosen on the
# 45k/5k split, trained on all 50k as the paper's final models.
FAST = dict(
    epochs=30, iterations=None, batch_size=128, lr=0.2, nesterov=True, weight_decay=5e-4,
    no_wd_norm_bias=True, label_smoothing=0.1, schedule="onecycle", warmup_iterations=0,
    tta="flip", eval_every=5, min_res=24, res_ramp_start=0.35, res_ramp_end=0.65, val_split=0,
    recipe="fast",
)  # fmt: skip
FAST_FAMILIES = ("cifar", "plain", "preact", "wide")
# Starting from pretrained weights (--weights), what a practitioner picks (docs/finetune.md):
FINETUNE = dict(
    epochs=10,  # pretrained features converge in a few epochs; longer mostly overfits
    iterations=None,
    batch_size=64,  # small datasets: more steps per epoch; fits one GPU at 224 px
    lr=0.01,  # from scratch: 0.1 at 256, 0.025 at 64; lower still, to nudge the weights
    weight_decay=1e-4,  # torchvision's ImageNet value, which the weights were trained with
    no_wd_norm_bias=True,  # decaying BN scales and biases only pulls them from the weights'
    schedule="cosine",  # no milestones to tune for a short run
    warmup_epochs=1.0,  # the new head's first, large gradients must not wreck the backbone
    warmup_iterations=None,
    warmup_method="linear",
    warmup_factor=0.01,
    label_smoothing=0.1,  # small datasets: keeps the new head from over-confident logits
    recipe="finetune",
)
# Recipes that any model and dataset may use: their values over the default's.
OVERLAYS = {"finetune": FINETUNE}


def recipe(model: str, family: str, dataset: str, name: str = "default") -> dict[str, Any]:
    """The defaults for ``model`` (of registry ``family``) on ``dataset``: the tables above."""
    if name == "fast":
        if dataset not in CIFAR or family not in FAST_FAMILIES:
            raise UserError(
                f"the fast recipe is for CIFAR models on cifar10/cifar100, not {model} on {dataset}"
            )
        return {**recipe(model, family, dataset), **FAST}
    if name in OVERLAYS:
        return {**recipe(model, family, dataset), **OVERLAYS[name]}
    values = next(
        v
        for datasets, families, v in RECIPES
        if (datasets is None or dataset in datasets) and (families is None or family in families)
    )
    out = {**COMMON, **values}
    if out["schedule"] == "paper" and model_depth(model) >= PAPER_WARMUP_DEPTH:
        out.update(PAPER_WARMUP)
    return out


# --- reading, merging, checking ----------------------------------------------------------------


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of TrainConfig fields (dashes or underscores in the keys)."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"cannot read config file {p}: {getattr(e, 'strerror', None) or e}"
        ) from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"cannot parse config file {p}: {first_line(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"config file {p} must hold a mapping of settings, not a {type(data).__name__}"
        )
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(k for k in out if k not in SETTINGS)
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


def resolve_config(file_values: dict[str, Any], flags: dict[str, Any]) -> TrainConfig:
    """recipe < config file < flags, checked; the length is resolved later, from the data."""
    cfg = merge(file_values, flags)
    if not cfg.model or not cfg.dataset:
        raise UserError("--model and --dataset are required (or a --config that sets them)")
    validate(cfg)  # names and numbers first, so the error names what the user typed
    cfg = fill_recipe(cfg, get_model_entry(cfg.model).family)
    # With --per-class, config.json says which order the images were picked from.
    if cfg.subset_seed is None and cfg.per_class is not None:
        cfg.subset_seed = cfg.seed
    validate(cfg)
    if cfg.output_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.output_dir = str(Path("runs") / f"{cfg.model}-{cfg.dataset}-{stamp}")
    return cfg


def kind(f: Field) -> type:
    """The type a setting holds (``int | None`` -> int)."""
    t = str(f.type)
    return next(k for n, k in (("bool", bool), ("int", int), ("float", float), ("str", str))
                if t.startswith(n))  # fmt: skip


def validate(cfg: TrainConfig) -> None:
    """Wrong types, unknown choices and nonsense numbers, before any data is read."""
    for name, f in SETTINGS.items():
        v = getattr(cfg, name)
        if v is None:
            continue
        expected = kind(f)
        if expected is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
            setattr(cfg, name, v)
        if not isinstance(v, expected) or (expected in (int, float) and isinstance(v, bool)):
            raise UserError(f"{name} must be {expected.__name__}, got {v!r}")
        choices = f.metadata.get("choices")
        if choices and v not in choices:
            raise UserError(f"unknown {name} {v!r}; choose from {', '.join(choices)}")
        check = f.metadata.get("check")
        if check and (problem := check(v)):
            raise UserError(f"{name.replace('_', '-')} {problem}")
    start, end = cfg.res_ramp_start, cfg.res_ramp_end
    if start is not None and end is not None and not 0 <= start <= end <= 1:
        raise UserError(f"need 0 <= res-ramp-start <= res-ramp-end <= 1, got {start} and {end}")
    if cfg.nesterov and cfg.opt == "sgd" and not cfg.momentum:
        raise UserError("--nesterov needs a momentum above 0")
    if cfg.dataset == "folder" and cfg.data_path is None:
        raise UserError("--dataset folder needs --data-path (a folder with train/ and val/)")
