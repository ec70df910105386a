"""Atomic writes leave files with the permissions a plain open() would give them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from torch import nn

from resnetlab.io import atomic_write_text
from resnetlab.models.weights import save_weights


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_mode_of_a_plain_write(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        atomic_write_text(tmp_path / "atomic.txt", "x")
        save_weights(tmp_path / "w.safetensors", nn.Linear(1, 1), {"model": "linear"})
    finally:
        os.umask(old)
    names = ("plain.txt", "atomic.txt", "w.safetensors")  # safetensors writes a file of its own
    modes = {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in names}
    assert modes == {0o666 & ~umask}
    assert (tmp_path / "atomic.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
