"""`resnetlab report --check`: a run's test error against our measured spread, by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resnetlab.cli import main
from resnetlab.reports.check import MEASURED, collect, verdict

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"model": "resnet20", "dataset": "cifar10", "recipe": "fast", "epochs": 30}


def fake_run(folder: Path, top1: float, **settings) -> Path:
    folder.mkdir(parents=True)
    config = {**SETTINGS, **settings, "seed": 7, "device": "cpu", "output_dir": str(folder)}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps({"test": {"top1": top1}}))
    return folder


def measured(*errors: float) -> list[dict]:
    return [
        {"record": f"r{i}", "settings": SETTINGS, "test_error": e} for i, e in enumerate(errors)
    ]


def test_inside_and_outside_our_spread_by_hand(tmp_path):
    # errors 8.0 and 9.0: mean 8.5, sample std 0.7071; 8.4 is 0.14 std off, 11.0 is 3.54 above
    ours = measured(8.0, 9.0)
    inside = verdict(fake_run(tmp_path / "a", 91.6), ours)
    assert inside == "resnet20 (fast recipe): test error 8.40% lies inside our 8.50 ± 0.71% (n=2)"
    outside = verdict(fake_run(tmp_path / "b", 89.0), ours)
    assert outside.endswith("lies outside our 8.50 ± 0.71% (n=2): 3.5 std above")
    below = verdict(fake_run(tmp_path / "c", 93.0), ours)  # 7.0: 2.12 std below
    assert below.endswith("2.1 std below")


def test_too_few_seeds_and_other_recipes_are_said(tmp_path):
    one = verdict(fake_run(tmp_path / "a", 91.0), measured(8.7))
    assert "in one run only, too few for a spread (fewer than 2 seeds)" in one
    other = verdict(fake_run(tmp_path / "b", 91.0, epochs=60), measured(8.0, 9.0))
    assert other.endswith("we have no measurement of this model and recipe")


def test_seed_device_and_paths_do_not_make_another_recipe(tmp_path):
    run = fake_run(tmp_path / "a", 91.5, workers=0, precision="fp32", data_path="/x")
    assert "lies inside" in verdict(run, measured(8.4, 8.6))
    # A seed's own draw of --per-class images is its variation too, not another recipe...
    fake_run(tmp_path / "ours" / "few" / "s0", 70.0, per_class=100, subset_seed=0)
    fake_run(tmp_path / "ours" / "few" / "s1", 68.0, per_class=100, subset_seed=1)
    ours = collect(tmp_path / "ours")
    assert "lies inside" in verdict(
        fake_run(tmp_path / "b", 69.0, per_class=100, subset_seed=3), ours
    )
    # ...but another number of images is.
    assert "no measurement" in verdict(fake_run(tmp_path / "c", 69.0, per_class=50), ours)


def test_weights_are_the_same_start_in_any_folder_but_not_under_another_name(tmp_path):
    fake_run(tmp_path / "ours" / "t" / "s0", 86.0, weights="/work/runs/t/pretrain-seed0")
    fake_run(tmp_path / "ours" / "t" / "s1", 85.0, weights="/work/runs/t/pretrain-seed0")
    ours = collect(tmp_path / "ours")
    mine = fake_run(tmp_path / "a", 85.5, weights="/home/me/runs/t/pretrain-seed0")
    assert "lies inside our 14.50 ± 0.71% (n=2)" in verdict(mine, ours)
    imagenet = fake_run(tmp_path / "b", 85.5, weights="ResNet18_Weights.IMAGENET1K_V1")
    assert "no measurement" in verdict(imagenet, ours)


def test_a_run_two_experiments_share_counts_once(tmp_path):
    fake_run(tmp_path / "table" / "resnet20-seed0", 91.5)
    fake_run(tmp_path / "table" / "resnet20-seed1", 91.4)
    (tmp_path / "fig6").mkdir()
    shutil.copytree(tmp_path / "table" / "resnet20-seed0", tmp_path / "fig6" / "resnet20-seed0")
    assert sorted(r["test_error"] for r in collect(tmp_path)) == [8.5, 8.6]


def test_the_shipped_measurements_are_the_committed_records(monkeypatch):
    monkeypatch.chdir(REPO)
    assert collect(Path("docs/results")) == json.loads(MEASURED.read_text())


def test_check_of_a_committed_run_and_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    record = REPO / "docs/results/cifar10-fast/resnet20-seed0"
    assert main(["report", "--check", str(record)]) == 0
    assert "lies inside our" in capsys.readouterr().out
    assert main(["report", "--check", str(tmp_path)]) == 2
    assert "not a finished resnetlab run" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["report"], ["report", "--check", "/no/such/run"]])
def test_nonsense_is_one_line(args, capsys):
    assert main(args) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
