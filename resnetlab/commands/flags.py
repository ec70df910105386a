"""Flags that several commands share, made from one declaration: the same names and choices.

Training settings are declared once, as TrainConfig fields (training/config.py); a command
that takes one of them (``--device``, ``--precision``, ``--data-path``, ...) adds it from
that declaration, with its own default where it has one.
"""

from __future__ import annotations

import argparse
from typing import Any

from resnetlab.training.config import SETTINGS, kind


def add_setting(p: argparse.ArgumentParser | Any, name: str, **override: Any) -> None:
    """The flag of TrainConfig field ``name``; ``override`` replaces argparse keywords."""
    f = SETTINGS[name]
    meta = f.metadata
    options = meta.get("flags") or ("--" + name.replace("_", "-"),)
    kw: dict[str, Any] = {"dest": name, "default": None, "help": meta.get("help") or None}
    if kind(f) is bool:
        plain = meta.get("negatable", True) is False
        kw["action"] = "store_true" if plain else argparse.BooleanOptionalAction
    else:
        kw.update(type=kind(f), choices=meta.get("choices"))
    kw.update(override)
    p.add_argument(*options, **kw)


def add_training_settings(p: argparse.ArgumentParser) -> None:
    """Every training setting as a flag; unset (None): the config file's, else the recipe's."""
    groups: dict[int, Any] = {}
    for name, f in SETTINGS.items():
        if f.metadata.get("flag", True) is False:
            continue
        group = f.metadata.get("group")
        if group and group not in groups:
            groups[group] = p.add_mutually_exclusive_group()
        add_setting(groups[group] if group else p, name)


def add_checkpoint(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR_OR_FILE", help=what)


def add_inference(p: argparse.ArgumentParser, batch_size: int, precision: str) -> None:
    """--device, --precision and -b of the commands that run a trained model."""
    add_setting(p, "device", default="auto")
    add_setting(p, "precision", default=precision)
    add_setting(p, "batch_size", default=batch_size, help=f"images per forward pass ({batch_size})")
