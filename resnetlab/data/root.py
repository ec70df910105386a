"""Where datasets live: one torchvision-style root shared by every tool, so users can point
resnetlab at data torchvision already downloaded, and only torchvision's download fills it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torchvision.datasets as tvd

from resnetlab.errors import UserError

ENV_VAR = "RESNETLAB_DATA"
TV_CLASSES = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}
TV_CLASSES |= {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}


def default_data_root() -> Path:
    """``$RESNETLAB_DATA`` if set, else ``./data`` (torchvision's usual default)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path("data")


def resolve_root(data_path: str | os.PathLike | None) -> Path:
    """``--data-path`` when given, else `default_data_root`."""
    return default_data_root() if data_path is None else Path(data_path).expanduser()


def locate(
    name: str, root: Path, files: Sequence[Path], download: bool, *suffixes: str
) -> list[Path]:
    """Each of ``files``, or the first of its variants ending in ``suffixes`` that exists;
    ``download`` fetches missing ones first, else one line names them and the three remedies."""

    def found() -> list[Path | None]:
        variants = [[f.with_name(f.name + s) for s in ("", *suffixes)] for f in files]
        return [next((p for p in v if p.is_file()), None) for v in variants]

    paths = found()
    if None in paths and download:
        # torchvision's download step (mirrors, MD5 checks) without its constructor's unpickling
        ds = TV_CLASSES[name].__new__(TV_CLASSES[name])
        ds.root = str(root)
        try:
            ds.download()
        except Exception as e:  # URLError, checksum RuntimeError, OSError, tarfile errors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{name}: download into {root} failed: {first}") from None
        paths = found()
    if None in paths:
        shown = ", ".join(str(p) for p in files[:3])
        if len(files) > 3:
            shown += f" (+{len(files) - 3} more)"
        raise UserError(
            f"{name} not found: expected {shown}; point --data-path or ${ENV_VAR} at a root "
            f"that holds it, or pass --download"
        )
    return [p for p in paths if p]
