"""Where datasets live: one torchvision-style root shared by every tool, so users can point
resnetlab at data torchvision already downloaded."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RESNETLAB_DATA"


def default_data_root() -> Path:
    """``$RESNETLAB_DATA`` if set, else ``./data`` (torchvision's usual default)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path("data")


def resolve_root(data_path: str | os.PathLike | None) -> Path:
    """``--data-path`` when given, else `default_data_root`."""
    return default_data_root() if data_path is None else Path(data_path).expanduser()
