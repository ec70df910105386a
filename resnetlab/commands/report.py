"""Write report.md and pictures for an experiment folder, next to the published numbers.

  resnetlab report runs/cifar10-table                  # experiment taken from the folder name
  resnetlab report runs/my-dir --experiment degradation
  resnetlab report --check runs/resnet20-cifar10-20261203-120000   # inside our spread?

report.md holds one table (model, parameters, paper test error, ours as mean ± std over
seeds, best validation error, epochs, wall time, hardware) and, for runs that evaluated
the test set after every epoch (no validation split), when each first reached the
paper's accuracy; fig6.png is the paper's
Figure 6 analogue (plain nets left, ResNets right; training error dashed, held-out error
solid); curves.png shows the accuracy curves of every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resnetlab.errors import UserError
from resnetlab.reports.check import verdict
from resnetlab.reports.experiment import load_experiment
from resnetlab.reports.report import write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment_dir", nargs="?", help="folder holding one sub-folder per run")
    p.add_argument("--experiment", help="experiment name or YAML (default: the folder's name)")
    p.add_argument(
        "--check",
        metavar="RUN_DIR",
        help="is this finished run's test error inside our measured spread for its recipe?",
    )


def run(args: argparse.Namespace) -> int:
    if args.check:
        print(verdict(Path(args.check).expanduser()))
        return 0
    if not args.experiment_dir:
        raise UserError("give an experiment folder, or --check RUN_DIR")
    folder = Path(args.experiment_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: no such experiment folder")
    exp = load_experiment(args.experiment or folder.name)
    print(f"report: {write_report(folder, exp)}")
    return 0
