"""MNIST and Fashion-MNIST from their idx files (``<root>/MNIST/raw/*-ubyte``), every header
field checked, so a truncated or foreign file is one clear line."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from resnetlab.data.info import DATASETS
from resnetlab.data.root import TV_CLASSES, locate
from resnetlab.errors import UserError


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


def load_mnist(
    name: str, root: Path, train: bool, download_missing: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, 1, 28, 28]`` and labels int64 ``[N]`` of MNIST or Fashion-MNIST."""
    info = DATASETS[name]
    folder = Path(root) / TV_CLASSES[name].__name__ / "raw"  # where torchvision puts them
    prefix = "train" if train else "t10k"
    files = [folder / f"{prefix}-images-idx3-ubyte", folder / f"{prefix}-labels-idx1-ubyte"]
    images_path, labels_path = locate(name, root, files, download_missing, ".gz")
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != info.image_size:
        raise UserError(f"{images_path}: images are {images.shape[1:]}, expected {info.image_size}")
    info.check_labels(labels_path, labels, len(images))
    info.check_count(images_path, len(images), train)
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
