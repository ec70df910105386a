"""`build_loaders`: one call from a dataset name to train/val/test loaders, in memory for the
built-in datasets, through torchvision's ImageFolder for folders; both give the same `Loader`
protocol, so the training loop never knows which it has.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from resnetlab.data.arrays import load_arrays, load_classes
from resnetlab.data.bundle import DataBundle
from resnetlab.data.folder import build_folder_loaders
from resnetlab.data.in_memory import AUGMENTS, InMemoryLoader
from resnetlab.data.info import get_info
from resnetlab.data.order import check_positive, holdout_split
from resnetlab.data.root import resolve_root
from resnetlab.errors import UserError


def build_loaders(
    dataset: str,
    data_path: str | os.PathLike | None = None,
    *,
    download: bool = False,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    val_split: int = 0,
    seed: int = 0,
    augment: str = "crop-flip",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 2,
    image_size: int = 224,
    resize_size: int = 256,
    skip_bad_images: bool = False,
    classes: Sequence[str] | None = None,
) -> DataBundle:
    """Loaders for a DATASETS name (in memory, on ``device``) or ``"folder"``; ``val_split``
    images are held out of training by ``seed``. ``classes`` fixes a folder dataset's class list
    (e.g. the model's) instead of the training folder's sorted sub-folders."""
    eval_batch_size = 2 * batch_size if eval_batch_size is None else eval_batch_size
    check_positive(batch_size=batch_size, eval_batch_size=eval_batch_size, world_size=world_size)
    if val_split < 0:
        raise UserError(f"val-split must not be negative, got {val_split}")
    if seed < 0:
        raise UserError(f"seed must not be negative, got {seed}")
    if augment not in AUGMENTS:
        raise UserError(f"unknown augmentation {augment!r}; known: {', '.join(AUGMENTS)}")
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} outside 0..{world_size - 1}")
    root = resolve_root(data_path)
    placement = dict(
        seed=seed,
        device=device,
        dtype=dtype,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
    )
    if dataset == "folder":
        if download:
            raise UserError("--download fetches the built-in datasets only, not image folders")
        return build_folder_loaders(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            val_split=val_split,
            augment=augment,
            drop_last=drop_last,
            workers=workers,
            image_size=image_size,
            resize_size=resize_size,
            skip_bad_images=skip_bad_images,
            classes=classes,
            **placement,
        )
    info = get_info(dataset)
    images, labels = load_arrays(info.name, root, train=True, download=download)
    test_images, test_labels = load_arrays(info.name, root, train=False, download=download)
    val = None
    common = dict(mean=info.mean, std=info.std, **placement)
    evaluation = dict(batch_size=eval_batch_size, train=False, **common)
    if val_split:
        train_idx, val_idx = holdout_split(len(images), val_split, seed)
        val = InMemoryLoader(images[val_idx], labels[val_idx], **evaluation)
        images, labels = images[train_idx], labels[train_idx]
    train = InMemoryLoader(
        images,
        labels,
        batch_size=batch_size,
        train=True,
        augment=augment,
        drop_last=drop_last,
        **common,
    )
    test = InMemoryLoader(test_images, test_labels, **evaluation)
    return DataBundle(
        train=train,
        val=val,
        test=test,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        classes=load_classes(info.name, root),
        mean=info.mean,
        std=info.std,
        input_size=(info.in_channels, *info.image_size),
        resize_size=None,
    )
