"""Reproduce one of the paper's experiments with one command; re-run it until it is done.

  resnetlab reproduce cifar10-table                       # Table 6, the paper's recipe
  resnetlab reproduce cifar10-table --seeds 5 --only resnet110
  resnetlab reproduce degradation                         # Fig. 6, the fast recipe
  resnetlab reproduce mnist --data-path ~/data

Each run has its own folder under --output-dir (default runs/EXPERIMENT). Finished runs are
skipped, interrupted ones resume from their last epoch, and report.md is (re)written at
the end. Experiments: resnetlab/experiments/*.yaml (or a path to your own file).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from resnetlab.commands.flags import add_setting
from resnetlab.errors import UserError
from resnetlab.reports.experiment import (
    RunSpec,
    expand,
    list_experiments,
    load_experiment,
    scale_length,
)
from resnetlab.reports.report import write_report
from resnetlab.training.config import TrainConfig, resolve_config, validate
from resnetlab.training.engine import train
from resnetlab.training.run_folder import check_output_dir, read_run

# Settings the command line may set for every run of an experiment.
PASSED_THROUGH = ("device", "data_path", "download", "precision", "channels_last", "workers")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help=f"one of {', '.join(list_experiments())}, or a YAML path")
    p.add_argument("--output-dir", help="folder of the experiment's runs (runs/EXPERIMENT)")
    p.add_argument("--seeds", type=int, help="runs of each, seeds 0..N-1 (the experiment's: 1)")
    p.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="multiply every run's length (and warm-up) by this, keeping its shape",
    )
    p.add_argument(
        "--only", nargs="+", metavar="RUN", help="only these runs or models (and opt-in ones)"
    )
    for name in PASSED_THROUGH:
        add_setting(p, name)
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state only")


def run(args: argparse.Namespace) -> int:
    exp = load_experiment(args.experiment)
    out_root = Path(args.output_dir or Path("runs") / exp.name).expanduser()
    runs = expand(exp, seeds=args.seeds, only=args.only)
    specs = [spec.with_output_dir(out_root.resolve()) for spec in runs]
    overrides = {k: getattr(args, k) for k in PASSED_THROUGH if getattr(args, k) is not None}
    if args.epochs_scale <= 0 or args.epochs_scale > 10:
        raise UserError(f"--epochs-scale must be in (0, 10], got {args.epochs_scale}")
    for i, spec in enumerate(specs, 1):
        run_dir = out_root / spec.name
        state = run_state(run_dir)
        print(f"[{i}/{len(specs)}] {spec.name}: {state}", flush=True)
        if args.dry_run or state == "finished":
            continue
        train_run(spec, run_dir, overrides, args.epochs_scale, resume=state != "new")
    if not args.dry_run:
        print(f"report: {write_report(out_root, exp)}")
    return 0


def run_state(run_dir: Path) -> str:
    """'finished', 'interrupted' (a config.json but no summary.json) or 'new'."""
    if (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "config.json").is_file():
        return "interrupted"
    return "new"


def resolve_run(spec: RunSpec, run_dir: Path, overrides: dict[str, Any], epochs_scale: float):
    """The run's full TrainConfig: recipe < experiment < command line, then scaled."""
    cfg = resolve_config({}, {**spec.settings, **overrides, "output_dir": str(run_dir)})
    if epochs_scale != 1.0:
        cfg = TrainConfig(**scale_length(asdict(cfg), epochs_scale))
        validate(cfg)
    return cfg


def train_run(
    spec: RunSpec, run_dir: Path, overrides: dict[str, Any], epochs_scale: float, resume: bool
) -> dict:
    if resume:
        cfg, state = read_run(run_dir, overrides)
        return train(cfg, run_dir, state=state, resume=True)
    cfg = resolve_run(spec, run_dir, overrides, epochs_scale)
    check_output_dir(run_dir, overwrite=False)
    return train(cfg, run_dir)
