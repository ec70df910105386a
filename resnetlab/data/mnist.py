"""MNIST and Fashion-MNIST from their idx files (``<root>/MNIST/raw/*-ubyte``), every header
field checked, so a truncated or foreign file is one clear line."""

from __future__ import annotations

import gzip
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd

from resnetlab.data.info import DATASETS, DataWarning
from resnetlab.data.root import missing_error, tv_download
from resnetlab.errors import UserError

TV_CLASSES = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a uint8 idx file (or its ``.gz``) with ``ndim`` dimensions."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    magic = 0x00000800 + ndim
    header = 4 * (ndim + 1)
    if len(raw) < header:
        raise UserError(f"{path}: truncated idx header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise UserError(f"{path}: not a uint8 idx file with {ndim} dims (magic {found:#010x})")
    shape = tuple(int.from_bytes(raw[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: a hostile header cannot overflow
    if len(raw) - header != expected:
        raise UserError(
            f"{path}: holds {len(raw) - header} bytes of data, header {shape} says {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, filename: str) -> Path | None:
    """The file itself or its ``.gz``, as torchvision leaves either."""
    return next((p for p in (folder / filename, folder / f"{filename}.gz") if p.is_file()), None)


def load_mnist(
    name: str, root: Path, train: bool, download_missing: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, 1, 28, 28]`` and labels int64 ``[N]`` of MNIST or Fashion-MNIST."""
    info = DATASETS[name]
    folder = Path(root) / TV_CLASSES[name].__name__ / "raw"  # where torchvision puts them
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find(folder, n) for n in names]
    if None in paths and download_missing:
        tv_download(TV_CLASSES[name], name, root)
        paths = [_find(folder, n) for n in names]
    if None in paths:
        raise missing_error(name, [folder / n for n in names])
    images_path, labels_path = paths
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    expected_n = info.num_train if train else info.num_test
    if images.shape[1:] != info.image_size:
        raise UserError(f"{images_path}: images are {images.shape[1:]}, expected {info.image_size}")
    if len(images) != len(labels):
        raise UserError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    if len(labels) and int(labels.max()) >= info.num_classes:
        raise UserError(
            f"{labels_path}: label {int(labels.max())} out of range 0..{info.num_classes - 1}"
        )
    if len(images) != expected_n:
        warnings.warn(
            f"{images_path}: {len(images)} images, the official release has {expected_n}",
            DataWarning,
            stacklevel=2,
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
