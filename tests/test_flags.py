"""Each training setting is declared once: its flag, config key and config.json entry agree,
and the flags that several commands share have the same choices everywhere."""

from __future__ import annotations

import argparse
import json

import pytest

from resnetlab.cli import build_parser, main
from resnetlab.device import PRECISIONS
from resnetlab.training.config import SETTINGS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the tiny data's counts


def options(command: str) -> dict[str, argparse.Action]:
    sub = next(
        a for a in build_parser(command)._actions if isinstance(a, argparse._SubParsersAction)
    )
    return {o: a for a in sub.choices[command]._actions for o in a.option_strings}


def test_every_setting_is_a_train_flag_and_a_config_key(mnist_root, tmp_path):
    flags = options("train")
    for name, f in SETTINGS.items():
        option = (f.metadata.get("flags") or (f"--{name.replace('_', '-')}",))[-1]
        assert (option in flags) == f.metadata.get("flag", True), name
        if option in flags:
            assert flags[option].dest == name and flags[option].default is None, name
    out = tmp_path / "run"
    argv = ["train", "--model", "mnist_cnn", "--dataset", "mnist", "--epochs", "1", "-b", "64",
            "--data-path", str(mnist_root), "--workers", "0", "--val-split", "64",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert list(json.loads((out / "config.json").read_text())) == list(SETTINGS)


@pytest.mark.parametrize("command", ["eval", "predict", "reproduce"])
def test_shared_flags_have_the_same_choices_and_help_as_train(command):
    train, other = options("train"), options(command)
    assert list(other["--precision"].choices) == list(train["--precision"].choices)
    assert list(PRECISIONS) == list(train["--precision"].choices)
    for flag in ("--device", "--precision", "--data-path", "--workers"):
        if flag in other:
            assert other[flag].help == train[flag].help or flag == "--data-path", flag
