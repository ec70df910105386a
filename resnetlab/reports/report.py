"""report.md and pictures of an experiment folder, beside the published numbers."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from resnetlab.errors import UserError
from resnetlab.io import atomic_write, atomic_write_text
from resnetlab.models import get_model_entry, model_depth
from resnetlab.reports.experiment import Experiment

# pyplot at the top, not in the functions: `import resnetlab` never imports this module, so a
# lazy import would keep nothing fast. Agg: the pictures go to files, no display is needed.
matplotlib.use("Agg")
NUMERIC = ("epoch", "iteration", "train_loss", "train_acc", "eval_loss", "eval_acc", "seconds")


@dataclass
class RunResult:
    name: str
    model: str
    family: str
    summary: dict | None  # None while the run is unfinished
    metrics: list[dict]
    config: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The experiment's name for the run, its seeds together: the folder's, less -seedN."""
        stem, _, seed = self.name.rpartition("-seed")
        return stem if stem and seed.isdigit() else self.name

    @property
    def test_evaluations(self) -> int:
        """Times the run looked at the test set: summary.json says (runs before it: metrics)."""
        if self.summary and "test_evaluations" in self.summary:
            return int(self.summary["test_evaluations"])
        during = sum(m.get("eval_split") == "test" for m in self.metrics)
        return during or int(bool((self.summary or {}).get("test")))


def collect_runs(folder: Path) -> list[RunResult]:
    """Every run folder (one with a config.json) below ``folder``, in name order."""
    runs = []
    for cfg_file in sorted(folder.glob("*/config.json")):
        run_dir = cfg_file.parent
        try:
            config = json.loads(cfg_file.read_text(encoding="utf-8"))
            summary_file = run_dir / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
            metrics = read_metrics(run_dir / "metrics.csv")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
            raise UserError(f"{run_dir}: unreadable run files ({e})") from None
        model = config.get("model") or run_dir.name
        family = get_model_entry(model).family
        runs.append(RunResult(run_dir.name, model, family, summary, metrics, config))
    return runs


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) if k in NUMERIC and v not in ("", None) else v for k, v in r.items()}
                for r in csv.DictReader(f)]  # fmt: skip


def write_report(folder: Path, exp: Experiment) -> Path:
    """report.md, fig6.png (when plain and residual runs are both there) and curves.png."""
    runs = sorted(collect_runs(folder), key=lambda r: exp.position(r.label))
    if not runs:
        raise UserError(f"{folder}: no runs (no */config.json) to report on")
    lines = [f"# {exp.name}", "", exp.description, ""]
    lines += results_table(runs, exp)
    citation = exp.published.get("citation")
    if citation:
        lines += ["", f"Published numbers: {' '.join(str(citation).split())}"]
    lines += ["", "Our test error is the one after the last epoch, never the best of several",
              "test evaluations (the column says how many each run made); the best validation",
              "error is the lowest error on the held-out part of the training set.",
              ""]  # fmt: skip
    lines += time_to_paper_table(runs, exp)
    if any(r.family == "plain" for r in runs) and any(r.family != "plain" for r in runs):
        atomic_write(folder / "fig6.png", lambda p: plot_degradation(runs, p))
        lines += ["## Figure 6 analogue", "", "![Figure 6 analogue](fig6.png)", ""]
    if is_comparison(runs) and any(r.summary for r in runs):
        atomic_write(folder / "comparison.png", lambda p: plot_comparison(runs, p, exp.name))
        lines += ["## Test accuracy of each run", "", "![test accuracy](comparison.png)", ""]
    if any(r.metrics for r in runs):
        atomic_write(folder / "curves.png", lambda p: plot_all_curves(runs, p, exp))
        lines += ["## Accuracy curves", "", "![accuracy curves](curves.png)", ""]
    path = folder / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def results_table(runs: list[RunResult], exp: Experiment) -> list[str]:
    """One row per run of the experiment, its seeds together (mean ± std)."""
    by_label: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        by_label[r.label].append(r)
    named = is_comparison(runs)
    rows = [
        f"| {'run' if named else 'model'} | parameters | paper test error (%) | "
        "our test error (%) | best val error (%) | epochs | test evaluations | wall time | "
        "hardware |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, group in by_label.items():
        model = group[0].model
        done = [r for r in group if r.summary is not None]
        sums = [r.summary for r in done]
        errors = [100.0 - s["test"]["top1"] for s in sums if s.get("test")]
        vals = [100.0 - s["best_val_acc"] for s in sums if s.get("best_val_acc") is not None]
        params = next((s.get("parameters") for s in sums), None)
        hours = [s.get("wall_time_s", 0) / 3600 for s in sums]
        pending = len(group) - len(done)
        unfinished = f"({pending} unfinished)" if pending else ""
        cells = [
            label,
            f"{params:,}" if params else "",
            paper_cell(exp, model),
            " ".join(filter(None, [mean_std(errors), unfinished])),
            mean_std(vals),
            "/".join(str(e) for e in sorted({s.get("epochs") for s in sums})),
            "/".join(str(n) for n in sorted({r.test_evaluations for r in done})),
            f"{statistics.mean(hours):.2f} h" if hours else "",
            ", ".join(sorted({f"{s.get('device')} ({s.get('device_name')})" for s in sums})),
        ]
        rows.append(f"| {' | '.join(cells)} |")
    return rows


def is_comparison(runs: list[RunResult]) -> bool:
    """Whether the runs are named settings compared (transfer), not models of a table."""
    return any(r.label != r.model for r in runs)


def plot_comparison(runs: list[RunResult], path: Path, title: str) -> None:
    """Final test accuracy of each named run: a bar at the mean, a dot per seed. Only the
    runs tested on the most common test set (their ``classes``): a pretraining on other
    classes is not comparable."""
    finished = [r for r in runs if r.summary and r.summary.get("test")]
    tested_on = [str(r.config.get("classes")) for r in finished]
    common = max(set(tested_on), key=tested_on.count, default=None)
    by_label: dict[str, list[float]] = defaultdict(list)
    for r in finished:
        if str(r.config.get("classes")) == common:
            by_label[r.label].append(r.summary["test"]["top1"])
    labels = list(by_label)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(labels) + 1.2), layout="tight")
    for y, label in enumerate(labels):
        accs = by_label[label]
        ax.barh(y, statistics.mean(accs), color=f"C{y}", alpha=0.5)
        ax.plot(accs, [y] * len(accs), "o", color=f"C{y}")
        mean = statistics.mean(accs)
        ax.text(max(accs) + 1, y, f"{mean:.1f}% (n={len(accs)})", va="center")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    tested = f" of classes {common}" if common not in (None, "None") else ""
    ax.set(title=f"{title}: a bar at the mean of the seeds, a dot per seed", xlim=(0, 100))
    ax.set_xlabel(f"accuracy on the test images{tested} after the last epoch (%)")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def is_evaluated(m: dict) -> bool:
    """Whether a metrics.csv row's epoch was evaluated (every one, unless ``--eval-every``)."""
    return isinstance(m.get("eval_acc"), float)


def tested_for_the_record(run: RunResult) -> bool:
    """Runs with no validation split show the test set as they go, choosing nothing on it
    (every epoch, or every ``--eval-every`` epochs and the last)."""
    return (
        bool(run.metrics)
        and all(m.get("eval_split") in ("test", "") for m in run.metrics)
        and run.metrics[-1].get("eval_split") == "test"
        and all(isinstance(m.get("seconds"), float) for m in run.metrics)
    )


def reached_at(run: RunResult, accuracy: float) -> tuple[int, float] | None:
    """The first evaluated epoch at or above ``accuracy``, and the seconds through it.

    The seconds are metrics.csv's (training and evaluations), so a resumed run counts no pause.
    """
    seconds = 0.0
    for m in run.metrics:
        seconds += m["seconds"]
        if is_evaluated(m) and m["eval_acc"] >= accuracy:
            return int(m["epoch"]), seconds
    return None


def time_to_paper_table(runs: list[RunResult], exp: Experiment) -> list[str]:
    """One row per finished run that evaluated the test set as it went, then mean ± std."""
    rows: list[str] = []
    by_model: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in runs:
        published = exp.published_error(r.model)
        if published is None or r.summary is None or not tested_for_the_record(r):
            continue
        accuracy = 100.0 - published
        hit = reached_at(r, accuracy)
        if hit:
            by_model[r.model].append(hit)
        final = (r.summary.get("test") or {}).get("top1")
        best_of = f" (best of {r.test_evaluations}†)" if hit and r.test_evaluations > 1 else ""
        cells = [
            r.name,
            f"{accuracy:.2f}",
            f"{hit[0]}{best_of}" if hit else "not reached",
            f"{hit[1] / 60:.1f}" if hit else "",
            f"{final:.2f}" if final is not None else "",
            f"{r.summary.get('wall_time_s', 0) / 60:.1f}",
        ]
        rows.append(f"| {' | '.join(cells)} |")
    if not rows:
        return []
    for model, hits in by_model.items():
        rows.append(
            f"| {model}, mean ± std | | {mean_std([float(e) for e, _ in hits])} | "
            f"{mean_std([s / 60 for _, s in hits])} | | |"
        )
    return [
        "## Time to the paper's accuracy",
        "",
        "The test set, evaluated as the runs went for the record (they keep no validation",
        "split and choose nothing on it; every epoch, or every `eval_every` epochs and the",
        "last): the first evaluated epoch at or above the paper's test accuracy, and the",
        "minutes of training and evaluation through it. † The epoch is picked from several",
        "test evaluations, so it is an optimistic figure; the final accuracy is not picked.",
        "",
        "| run | paper's test accuracy (%) | first epoch at or above it | minutes then | "
        "test accuracy after the last epoch (%) | wall time (min) |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def paper_cell(exp: Experiment, model: str) -> str:
    value = exp.published_error(model)
    if value is None:
        return "—"
    spread = exp.published_spread(model)
    return f"{value:.2f}" + (f" ({spread[0]:.2f} ± {spread[1]:.2f})" if spread else "")


def mean_std(values: list[float]) -> str:
    """'6.61 ± 0.16 (n=5)' as the paper writes it; one value alone has no spread."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def plot_degradation(runs: list[RunResult], path: Path) -> None:
    """Paper Fig. 6: error (%) against iterations; training dashed, held-out solid."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    # The paper's 0-20%, or the next multiple of 10 that holds the training error after the
    # first quarter of each run (short recipes); held-out curves may start above it.
    late = [100 - m["train_acc"] for r in runs for m in r.metrics[len(r.metrics) // 4 :]]
    top = min(100, max(20, 10 * math.ceil(max(late, default=0) / 10)))
    panels = (("plain", "plain networks"), ("residual", "ResNets"))
    for ax, (kind, title) in zip(axes, panels, strict=True):
        chosen = [r for r in runs if (r.family == "plain") == (kind == "plain") and r.metrics]
        colors: dict[str, str] = {}
        for r in sorted(chosen, key=lambda r: model_depth(r.model)):
            label = None if r.model in colors else r.model  # one legend entry per model
            color = colors.setdefault(r.model, f"C{len(colors)}")
            its = [m["iteration"] / 1e4 for m in r.metrics]
            ax.plot(its, [100 - m["train_acc"] for m in r.metrics], "--", color=color, lw=1)
            shown = [m for m in r.metrics if is_evaluated(m)]
            ax.plot([m["iteration"] / 1e4 for m in shown], [100 - m["eval_acc"] for m in shown],
                    "-", color=color, lw=1.5, label=label)  # fmt: skip
        ax.set(title=f"{title} on CIFAR-10", xlabel="iterations (1e4)", ylim=(0, top))
        ax.grid(alpha=0.3)
        if chosen:
            ax.legend(loc="upper right")
    axes[0].set_ylabel("error (%)   dashed: training, solid: held-out")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def plot_all_curves(runs: list[RunResult], path: Path, exp: Experiment | None = None) -> None:
    """Training and held-out accuracy of every run against epochs, one panel each.

    Where the held-out set is the test set, the paper's test accuracy is drawn across.
    """
    shown = [r for r in runs if r.metrics]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = plt.figure(figsize=(4 * cols, 3 * rows), layout="tight")
    for i, r in enumerate(shown, 1):
        ax = fig.add_subplot(rows, cols, i)
        epochs = [m["epoch"] for m in r.metrics]
        ax.plot(epochs, [m["train_acc"] for m in r.metrics], label="train")
        looks = [m for m in r.metrics if is_evaluated(m)]
        split = (looks[-1].get("eval_split") if looks else "") or "held-out"
        ax.plot([m["epoch"] for m in looks], [m["eval_acc"] for m in looks], label=split)
        published = exp.published_error(r.model) if exp else None
        if split == "test" and published is not None:
            ax.axhline(100 - published, color="grey", ls=":", label=f"paper {100 - published:.2f}")
        ax.set_title(r.name, fontsize=10)
        ax.set(xlabel="epoch", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
