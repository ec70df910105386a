"""Experiments: plain YAML files (resnetlab/experiments/*.yaml), each a set of training runs.

A file names the shared `resnetlab train` settings (``train``), the runs (``runs``: a model
and optional per-run settings) and the published numbers with their citation
(``published``). `expand` turns it into concrete runs, one folder each, for N seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnetlab.errors import UserError, first_line

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


@dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment: its folder name and its `resnetlab train` settings."""

    name: str
    model: str
    seed: int
    settings: dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    train: dict[str, Any]
    runs: list[dict[str, Any]]
    published: dict[str, Any] = field(default_factory=dict)

    def published_error(self, model: str) -> float | None:
        return (self.published.get("values") or {}).get(model)

    def published_spread(self, model: str) -> tuple[float, float] | None:
        spread = (self.published.get("spread") or {}).get(model)
        return tuple(spread) if spread else None


def list_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load_experiment(name_or_path: str | Path) -> Experiment:
    """A packaged experiment by name (``cifar10-table``) or any YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(list_experiments())
            raise UserError(f"unknown experiment {str(name_or_path)!r}; known: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"cannot read experiment file {path}: {first_line(e)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise UserError(f"experiment file {path} needs a non-empty list under 'runs'")
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict) or not isinstance(run.get("model"), str):
            raise UserError(f"experiment file {path}: run {i + 1} needs a 'model' name")
    return Experiment(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        train=dict(data.get("train") or {}),
        runs=[dict(r) for r in data["runs"]],
        published=dict(data.get("published") or {}),
    )


def expand(exp: Experiment, seeds: int = 1, only: list[str] | None = None) -> list[RunSpec]:
    """The concrete runs: every (run, seed) pair; opt-in runs only when named in ``only``."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    models = [r["model"] for r in exp.runs]
    unknown = sorted(set(only or []) - set(models))
    if unknown:
        raise UserError(
            f"--only {', '.join(unknown)}: not a run of {exp.name} (runs: {', '.join(models)})"
        )
    specs = []
    for run in exp.runs:
        model = run["model"]
        if (only is not None and model not in only) or (only is None and run.get("opt_in")):
            continue
        settings = {**exp.train, **{k: v for k, v in run.items() if k != "opt_in"}}
        specs += [
            RunSpec(f"{model}-seed{seed}", model, seed, {**settings, "seed": seed})
            for seed in range(seeds)
        ]
    return specs


def scale_length(settings: dict[str, Any], factor: float) -> dict[str, Any]:
    """The settings with the run's length and warm-up multiplied by ``factor``.

    Schedules are defined in fractions of the run (the paper's lr drops at 50% and 75%),
    so a shortened run keeps the shape of the long one at a fraction of the cost.
    """
    if not 0 < factor <= 10:
        raise UserError(f"--epochs-scale must be in (0, 10], got {factor}")
    out = dict(settings)
    for key in ("iterations", "epochs", "warmup_iterations"):
        if out.get(key):
            out[key] = max(1, round(out[key] * factor))
    if out.get("warmup_epochs"):
        out["warmup_epochs"] = out["warmup_epochs"] * factor
    return out
