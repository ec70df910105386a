"""The uint8 tensors and class names of a built-in dataset, for the loaders, benchmarks, eval:
found where torchvision puts them, read by `mnist.read_idx` or `cifar.read_batch`, checked."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from resnetlab.data.cifar import ChecksumWarning, read_batch, read_dict
from resnetlab.data.info import DataWarning, get_info
from resnetlab.data.mnist import read_idx
from resnetlab.data.root import TV_CLASSES, locate, resolve_root
from resnetlab.errors import UserError


def load_arrays(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, C, H, W]`` and labels int64 ``[N]`` of a DATASETS entry."""
    info = get_info(name)
    base = resolve_root(root)
    cls = TV_CLASSES[info.name]
    if info.name.startswith("cifar"):
        source = base / cls.base_folder
        files = cls.train_list if train else cls.test_list  # (filename, md5) of the release
        found = locate(info.name, base, [source / f for f, _ in files], download)
        parts = [read_batch(p, info.name, md5) for p, (_, md5) in zip(found, files, strict=True)]
        differ = [p.name for p, (_, _, ok) in zip(found, parts, strict=True) if not ok]
        if differ:
            warnings.warn(
                f"{source}: {', '.join(differ)}: MD5 differs from the official release "
                "(a re-encoded copy?); contents validated instead",
                ChecksumWarning,
                stacklevel=1,
            )
        images = np.concatenate([x for x, _, _ in parts])
        labels = np.concatenate([y for _, y, _ in parts])
    else:
        raw = base / cls.__name__ / "raw"  # where torchvision puts them
        prefix = "train" if train else "t10k"
        files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
        source, labels_path = locate(info.name, base, files, download, ".gz")
        images, labels = read_idx(source, 3), read_idx(labels_path, 1)
        if images.shape[1:] != info.image_size:
            raise UserError(f"{source}: images are {images.shape[1:]}, expected {info.image_size}")
        info.check_labels(labels_path, labels, len(images))
        images, labels = images[:, None].copy(), labels.astype(np.int64)
    expected = info.num_train if train else info.num_test
    if len(images) != expected:
        message = f"{source}: {len(images)} images, the official release has {expected}"
        warnings.warn(message, DataWarning, stacklevel=1)  # shown here, like the MD5 warning
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_classes(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Class names of a DATASETS entry: torchvision's for MNIST, the meta file's for CIFAR."""
    info = get_info(name)
    cls = TV_CLASSES[info.name]
    if not info.name.startswith("cifar"):
        return list(cls.classes)  # torchvision's, so predictions read the same
    base = resolve_root(root)
    (path,) = locate(info.name, base, [base / cls.base_folder / cls.meta["filename"]], False)
    names = read_dict(path)[1].get(cls.meta["key"])
    n = info.num_classes
    if not isinstance(names, list) or len(names) != n or not all(isinstance(c, str) for c in names):
        raise UserError(f"{path}: {cls.meta['key']!r} is not a list of {n} class names")
    return names
