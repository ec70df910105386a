"""Experiments: plain YAML files (resnetlab/experiments/*.yaml), each a set of training runs.

A file names the shared `resnetlab train` settings (``train``), the runs (``runs``: a model
and optional per-run settings) and the published numbers with their citation
(``published``). `expand` turns it into concrete runs, one folder each, for N seeds.

A run may also have a ``name`` (its folder's, when two runs train the same model), ``seeds``
(at most that many of them: a shared pretraining) and ``opt_in`` (only with ``--only``). In
a setting, ``{output_dir}`` is the experiment's folder, so one run can start from another's
weights: ``weights: "{output_dir}/pretrain-seed0"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnetlab.errors import UserError, first_line

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


RUN_KEYS = ("name", "seeds", "opt_in")  # a run's keys that are not `resnetlab train` settings


@dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment: its folder name and its `resnetlab train` settings."""

    name: str
    model: str
    seed: int
    settings: dict[str, Any]

    def with_output_dir(self, output_dir: Path) -> RunSpec:
        """The spec with ``{output_dir}`` in its settings replaced by the experiment folder."""
        filled = {
            k: v.replace("{output_dir}", str(output_dir)) if isinstance(v, str) else v
            for k, v in self.settings.items()
        }
        return RunSpec(self.name, self.model, self.seed, filled)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    train: dict[str, Any]
    runs: list[dict[str, Any]]
    published: dict[str, Any] = field(default_factory=dict)
    seeds: int = 1  # runs per run entry when --seeds is not given

    def position(self, label: str) -> int:
        """Where a run (its name, else its model) stands in the file: reports keep that order."""
        keys = [run.get("name", run.get("model")) for run in self.runs]
        return keys.index(label) if label in keys else len(keys)

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
    labels = []
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict) or not isinstance(run.get("model"), str):
            raise UserError(f"experiment file {path}: run {i + 1} needs a 'model' name")
        seeds = run.get("seeds", 1)
        if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
            raise UserError(f"experiment file {path}: run {i + 1}: seeds must be a number >= 1")
        labels.append(str(run.get("name") or run["model"]))
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise UserError(f"experiment file {path}: two runs named {', '.join(twice)}; name them")
    seeds = data.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise UserError(f"experiment file {path}: seeds must be a whole number >= 1")
    return Experiment(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        train=dict(data.get("train") or {}),
        runs=[dict(r) for r in data["runs"]],
        published=dict(data.get("published") or {}),
        seeds=seeds,
    )


def expand(
    exp: Experiment, seeds: int | None = None, only: list[str] | None = None
) -> list[RunSpec]:
    """The concrete runs: every (run, seed) pair, a run's ``seeds`` capping ``seeds``; opt-in
    runs only when named (by name, or by model) in ``only``."""
    seeds = exp.seeds if seeds is None else seeds
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    names = [run_label(r) for r in exp.runs]
    unknown = sorted(set(only or []) - set(names) - {r["model"] for r in exp.runs})
    if unknown:
        raise UserError(
            f"--only {', '.join(unknown)}: not a run of {exp.name} (runs: {', '.join(names)})"
        )
    specs = []
    for run in exp.runs:
        model, label = run["model"], run_label(run)
        chosen = only is not None and (label in only or model in only)
        if (only is not None and not chosen) or (only is None and run.get("opt_in")):
            continue
        settings = {**exp.train, **{k: v for k, v in run.items() if k not in RUN_KEYS}}
        specs += [
            RunSpec(f"{label}-seed{seed}", model, seed, {**settings, "seed": seed})
            for seed in range(min(seeds, run.get("seeds", seeds)))
        ]
    return specs


def run_label(run: dict[str, Any]) -> str:
    """A run's name in the experiment: its ``name``, else its model's."""
    return str(run.get("name") or run["model"])


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
