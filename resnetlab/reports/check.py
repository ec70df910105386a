"""Is a run's test error what we measured for the same model and recipe? The verdict line.

measured.json holds every finished run committed under docs/results/: its result-relevant
settings and test error. After adding records (tests/test_check.py checks they agree):
``python -m resnetlab.reports.check docs/results > resnetlab/reports/measured.json``
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from resnetlab.errors import UserError

MEASURED = Path(__file__).with_name("measured.json")
# Settings that change where or how fast a run goes, not what it learns (nor its test error
# beyond rounding): two runs that differ only in these are the same model and recipe.
NOT_THE_RECIPE = (
    "data_path", "download", "output_dir", "device", "workers", "print_freq", "eval_batch_size",
    "seed", "precision", "channels_last", "compile", "world_size", "skip_bad_images",
    "subset_seed",  # which images of each class --per-class draws: a seed's variation too
)  # fmt: skip
INSIDE = 2.0  # standard deviations: inside our spread means within two of our mean


def read_record(run_dir: Path) -> dict[str, Any]:
    """A finished run's settings (without NOT_THE_RECIPE), test error and hardware."""
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{run_dir}: not a finished resnetlab run ({e})") from None
    if not (summary.get("test") or {}).get("top1"):
        raise UserError(f"{run_dir}: the run has no test result")
    settings = {k: v for k, v in sorted(config.items()) if k not in NOT_THE_RECIPE}
    if isinstance(settings.get("weights"), str) and "/" in settings["weights"]:
        # A file or run folder is the same start wherever it sits: keep its name, not its path.
        settings["weights"] = Path(settings["weights"]).name
    return {
        "settings": settings,
        "test_error": round(100.0 - summary["test"]["top1"], 4),
        "device_name": summary.get("device_name"),
        "precision": summary.get("precision"),
    }


def collect(records: Path) -> list[dict[str, Any]]:
    """Every finished run (a folder with config.json and summary.json) below ``records``,
    once: a run that two experiments share (Figure 6 and the table) is one measurement."""
    out, seen = [], set()
    for summary in sorted(records.glob("*/*/summary.json")):
        if summary.read_bytes() in seen:
            continue
        seen.add(summary.read_bytes())
        out.append({"record": str(summary.parent), **read_record(summary.parent)})
    return out


def verdict(run_dir: Path, measured: list[dict[str, Any]] | None = None) -> str:
    """One line: the run's test error against our spread for the same model and recipe."""
    if measured is None:
        measured = json.loads(MEASURED.read_text(encoding="utf-8"))
    run = read_record(run_dir)
    same = [m for m in measured if m["settings"] == run["settings"]]
    mine = run["test_error"]
    what = f"{run['settings'].get('model')} ({run['settings'].get('recipe')} recipe)"
    if not same:
        return f"{what}: test error {mine:.2f}%; we have no measurement of this model and recipe"
    errors = [m["test_error"] for m in same]
    if len(errors) < 2:
        return (
            f"{what}: test error {mine:.2f}%; we measured {errors[0]:.2f}% in one run only, "
            "too few for a spread (fewer than 2 seeds)"
        )
    mean, std = statistics.mean(errors), statistics.stdev(errors)
    ours = f"our {mean:.2f} ± {std:.2f}% (n={len(errors)})"
    z = (mine - mean) / std if std > 0 else (0.0 if mine == mean else float("inf"))
    if abs(z) <= INSIDE:
        return f"{what}: test error {mine:.2f}% lies inside {ours}"
    side = "above" if z > 0 else "below"
    return f"{what}: test error {mine:.2f}% lies outside {ours}: {abs(z):.1f} std {side}"


if __name__ == "__main__":
    print(json.dumps(collect(Path(sys.argv[1])), indent=1))
