"""The uint8 tensors and class names of a built-in dataset, for the loaders, benchmarks, eval."""

from __future__ import annotations

import os

import torch

from resnetlab.data.cifar import cifar_classes, load_cifar
from resnetlab.data.info import get_info
from resnetlab.data.mnist import load_mnist
from resnetlab.data.root import TV_CLASSES, resolve_root


def load_arrays(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, C, H, W]`` and labels int64 ``[N]`` of a DATASETS entry."""
    info = get_info(name)
    reader = load_cifar if info.name.startswith("cifar") else load_mnist
    return reader(info.name, resolve_root(root), train, download)


def load_classes(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Class names of a DATASETS entry: torchvision's for MNIST, the meta file's for CIFAR."""
    info = get_info(name)
    if info.name.startswith("cifar"):
        return cifar_classes(info.name, resolve_root(root))
    return list(TV_CLASSES[info.name].classes)  # torchvision's, so predictions read the same
