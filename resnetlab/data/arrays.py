"""The uint8 tensors of a built-in dataset, for the fast loader, benchmarks and eval."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from resnetlab.data.cifar import load_cifar
from resnetlab.data.info import get_info
from resnetlab.data.mnist import load_mnist
from resnetlab.data.root import resolve_root


def load_arrays(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, C, H, W]`` and labels int64 ``[N]`` of a DATASETS entry."""
    info = get_info(name)
    path = Path(resolve_root(root))
    reader = load_cifar if info.name.startswith("cifar") else load_mnist
    return reader(info.name, path, train, download)
