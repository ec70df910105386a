"""The transfer experiment (resnetlab/experiments/transfer.yaml): one pretraining on classes
0-4 shared by every seed's fine-tuning on classes 5-9, paired with training from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fakedata import write_cifar10

from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.reports.experiment import EXPERIMENTS_DIR, expand, load_experiment


def test_transfer_pretrains_once_and_pairs_each_seed_of_fine_tuning_with_scratch() -> None:
    specs = {s.name: s for s in expand(load_experiment("transfer"))}
    assert [n for n in specs if n.startswith("pretrain")] == ["pretrain-seed0"]
    for kind in ("finetune", "scratch", "scratch-trivialaugment", "scratch-cutmix"):
        assert [n for n in specs if n.rpartition("-seed")[0] == kind] == [
            f"{kind}-seed{i}" for i in range(3)
        ]
    for seed in range(3):
        tuned, scratch = specs[f"finetune-seed{seed}"], specs[f"scratch-seed{seed}"]
        assert tuned.settings["weights"] == "{output_dir}/pretrain-seed0"
        assert "weights" not in scratch.settings
        same = ("classes", "per_class", "epochs", "recipe", "seed", "val_split", "model")
        assert {k: tuned.settings[k] for k in same} == {k: scratch.settings[k] for k in same}
        assert tuned.settings["per_class"] == 100 and tuned.settings["seed"] == seed
    pretrain = specs["pretrain-seed0"].settings
    assert set(pretrain["classes"].split(",")).isdisjoint(tuned.settings["classes"].split(","))
    # The 300-epoch runs are opt-in, and differ from their 60-epoch twins in length alone.
    long = {s.name: s for s in expand(load_experiment("transfer"), only=["scratch-cutmix-long"])}
    assert list(long) == [f"scratch-cutmix-long-seed{i}" for i in range(3)]
    short = specs["scratch-cutmix-seed1"].settings
    longer = long["scratch-cutmix-long-seed1"].settings
    assert (short["epochs"], longer["epochs"]) == (60, 300)
    drop = ("epochs", "eval_every")
    assert {k: v for k, v in short.items() if k not in drop} == {
        k: v for k, v in longer.items() if k not in drop
    }


def test_two_runs_of_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump({"runs": [{"model": "resnet20"}, {"model": "resnet20"}]}))
    with pytest.raises(UserError, match="two runs named resnet20"):
        load_experiment(path)


def test_fine_tuning_starts_from_the_pretraining_with_a_new_head(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = yaml.safe_load((EXPERIMENTS_DIR / "transfer.yaml").read_text())
    data["seeds"] = 2
    data["runs"] = [r for r in data["runs"] if r["name"] in ("pretrain", "finetune", "scratch")]
    for run in data["runs"]:  # a few fake images, one short epoch
        run.update(epochs=1, eval_every=1, batch_size=16)
        run.update(per_class=8 if "per_class" in run else None)
    small = tmp_path / "transfer.yaml"
    small.write_text(yaml.safe_dump(data))
    root, out = write_cifar10(tmp_path / "data"), tmp_path / "runs"
    argv = ["reproduce", str(small), "--data-path", str(root), "--output-dir", str(out)]
    assert main([*argv, "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    runs = sorted(p.parent.name for p in out.glob("*/summary.json"))
    assert runs == ["finetune-seed0", "finetune-seed1", "pretrain-seed0", "scratch-seed0",
                    "scratch-seed1"]  # fmt: skip
    # Same count of classes (5), other names: the head is new, the rest is the pretraining's.
    notice = "notice: fc re-initialised for 5 classes (weights' classes airplane, automobile, "
    assert printed.count(notice) == 2
    config = json.loads((out / "finetune-seed1" / "config.json").read_text())
    assert config["weights"] == str(out.resolve() / "pretrain-seed0")
    summary = json.loads((out / "finetune-seed1" / "summary.json").read_text())
    assert summary["dataset"] == "cifar10"
    table = (out / "report.md").read_text()
    assert "| run | parameters |" in table
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| pretrain", "| finetune", "| scratch"]  # the file's order
    assert "| finetune | " in table and "(n=2)" in table.split("| finetune | ")[1].split("\n")[0]
    assert "![test accuracy](comparison.png)" in table
    assert (out / "comparison.png").stat().st_size > 0
