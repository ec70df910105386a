"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every result file (weights, training state, metrics, summaries, pictures) goes
through `atomic_write`, so a run killed at any moment, even by SIGKILL in the
middle of a checkpoint, leaves its previous results readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnetlab.errors import WriteError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync the file, then rename it over ``path``: the temporary
    file is in the same folder, so `os.replace` renames within one filesystem, atomically."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        # mkstemp makes 0600 (and some writers replace the file): give what open() gives.
        # The umask is read by setting it, so it is set straight back.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
        if isinstance(e, OSError):  # a full disk, permissions, a file-size limit
            raise WriteError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not where folders won't open
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
