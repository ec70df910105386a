"""`build_loaders`: one call from a dataset name to train/val/test loaders, in memory for the
built-in datasets, through torchvision's ImageFolder for folders; both give the same `Loader`
protocol, so the training loop never knows which it has.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from resnetlab.data.arrays import load_arrays, load_classes
from resnetlab.data.folder import ClassFolder, FolderLoader, folder_layout, folder_transform
from resnetlab.data.in_memory import AUGMENTS, InMemoryLoader
from resnetlab.data.info import FOLDER_MEAN, FOLDER_STD, get_info
from resnetlab.data.mix import MixedLoader, batch_mix
from resnetlab.data.order import check_numbers, holdout_split
from resnetlab.data.policies import PerImage, auto_augment_policy, random_erasing
from resnetlab.data.root import resolve_root
from resnetlab.data.subset import parse_classes, per_class_indices, relabel, restrict_folder
from resnetlab.errors import UserError


class Loader(Protocol):
    """What a training or evaluation loop may rely on."""

    num_samples: int  # samples this rank sees per epoch
    dataset_size: int  # samples across all ranks

    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...
    def __len__(self) -> int: ...


@dataclass
class DataBundle:
    """Everything the trainer needs from the data side, so it never asks which kind it has."""

    train: Loader
    val: Loader | None
    test: Loader | None  # folders may have no test split
    num_classes: int
    in_channels: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]  # (C, H, W) the model sees
    resize_size: int | None  # eval resize before the centre crop (folders); None in memory
    train_labels: Tensor | None = None  # int64, every training sample's class (all ranks)


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
    auto_augment: str = "none",
    ra_magnitude: int = 9,
    augmix_severity: int = 3,
    random_erase: float = 0.0,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    class_subset: str | None = None,
    per_class: int | None = None,
    subset_seed: int | None = None,
    sampler: str = "shuffle",
    normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
) -> DataBundle:
    """Loaders for a DATASETS name (in memory, on ``device``) or ``"folder"``; ``val_split``
    images are held out of training by ``seed``. ``classes`` fixes a folder dataset's class list
    (e.g. the model's) instead of the training folder's sorted sub-folders.

    Training augmentation beyond ``augment`` (data/policies.py, data/mix.py): ``auto_augment``
    (one of POLICIES), ``random_erase`` (a probability), ``mixup_alpha`` and ``cutmix_alpha``
    (soft targets). ``class_subset`` ("5,6" or "cat,dog"; None or "all": every class) keeps
    some classes in every split and ``per_class`` that many training images of each
    (data/subset.py); ``sampler="balanced"`` draws classes equally often (data/order.py).
    ``normalisation`` (mean, std) replaces the dataset's, e.g. with pretrained weights' own."""
    eval_batch_size = 2 * batch_size if eval_batch_size is None else eval_batch_size
    check_numbers(batch_size=batch_size, eval_batch_size=eval_batch_size, world_size=world_size)
    check_numbers(minimum=0, val_split=val_split, seed=seed)
    if augment not in AUGMENTS:
        raise UserError(f"unknown augmentation {augment!r}; known: {', '.join(AUGMENTS)}")
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} outside 0..{world_size - 1}")
    if sampler not in ("shuffle", "balanced"):
        raise UserError(f"unknown sampler {sampler!r}; known: shuffle, balanced")
    policy = auto_augment_policy(auto_augment, ra_magnitude, augmix_severity)
    erasing = random_erasing(random_erase)
    subset_seed = seed if subset_seed is None else subset_seed
    class_subset = None if class_subset == "all" else class_subset
    root = resolve_root(data_path)
    placement = dict(
        seed=seed,
        device=device,
        dtype=dtype,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
    )
    evaluation = dict(batch_size=eval_batch_size, train=False, **placement)
    training = dict(batch_size=batch_size, train=True, drop_last=drop_last, **placement)
    val = test = None
    if dataset == "folder":
        if download:
            raise UserError("--download fetches the built-in datasets only, not image folders")
        if image_size <= 0 or resize_size <= 0:
            raise UserError("image-size and resize-size must be positive")
        if resize_size < image_size:
            raise UserError(f"resize-size {resize_size} is smaller than image-size {image_size}")
        train_dir, val_dir, test_dir = folder_layout(root)
        mean, std = normalisation or (FOLDER_MEAN, FOLDER_STD)
        norm = dict(mean=tuple(mean), std=tuple(std))
        augmenting = folder_transform(augment, image_size, resize_size, policy, erasing, **norm)
        train_set = ClassFolder(train_dir, classes, augmenting)
        ev = folder_transform("none", image_size, resize_size, **norm)
        class_list = list(train_set.classes)
        all_classes = class_list
        keep = parse_classes(class_subset, class_list) if class_subset is not None else None
        if keep is not None:
            train_set = restrict_folder(train_set, keep)
            class_list = list(train_set.classes)
        training |= dict(workers=workers, skip_bad_images=skip_bad_images)
        evaluation |= dict(workers=workers, skip_bad_images=skip_bad_images)

        def eval_loader(folder: Path) -> FolderLoader:
            ds = ClassFolder(folder, all_classes, ev)
            return FolderLoader(ds if keep is None else restrict_folder(ds, keep), **evaluation)

        train_subset = None
        if val_split:
            train_subset, val_idx = holdout_split(len(train_set), val_split, seed)
            held_out = copy.copy(train_set)  # same file list, evaluation transforms
            held_out.transform = ev
            val = FolderLoader(held_out, val_idx, **evaluation)
            # The held-out part is the validation set; an existing val/ then serves as test.
            test_dir = test_dir or val_dir
        elif val_dir is not None:
            val = eval_loader(val_dir)
        test = eval_loader(test_dir) if test_dir is not None else None
        train_labels = torch.tensor(train_set.targets, dtype=torch.int64)
        if train_subset is not None:
            train_labels = train_labels[train_subset]
        if per_class is not None:
            picked = per_class_indices(train_labels, per_class, subset_seed, class_list)
            positions = torch.arange(len(train_set)) if train_subset is None else train_subset
            train_subset, train_labels = positions[picked], train_labels[picked]
        train = FolderLoader(train_set, train_subset, **training)
        mean, std, input_size = norm["mean"], norm["std"], (3, image_size, image_size)
    else:
        info = get_info(dataset)
        images, labels = load_arrays(info.name, root, train=True, download=download)
        test_images, test_labels = load_arrays(info.name, root, train=False, download=download)
        class_list = load_classes(info.name, root)
        if class_subset is not None:
            keep = parse_classes(class_subset, class_list)
            where, labels = relabel(labels, keep, len(class_list))
            images = images[where]
            where, test_labels = relabel(test_labels, keep, len(class_list))
            test_images = test_images[where]
            class_list = [class_list[i] for i in keep]
        mean, std = (tuple(v) for v in normalisation or (info.mean, info.std))
        input_size = (info.in_channels, *info.image_size)
        evaluation |= dict(mean=mean, std=std)
        training |= dict(mean=mean, std=std, augment=augment)
        if policy is not None or erasing is not None:
            training |= dict(per_image=PerImage(policy, erasing))
        if val_split:
            train_idx, val_idx = holdout_split(len(images), val_split, seed)
            val = InMemoryLoader(images[val_idx], labels[val_idx], **evaluation)
            images, labels = images[train_idx], labels[train_idx]
        if per_class is not None:
            picked = per_class_indices(labels, per_class, subset_seed, class_list)
            images, labels = images[picked], labels[picked]
        train = InMemoryLoader(images, labels, **training)
        test = InMemoryLoader(test_images, test_labels, **evaluation)
        train_labels = labels
    if sampler == "balanced":
        train.balance(train_labels)
    mix = batch_mix(len(class_list), mixup_alpha, cutmix_alpha)
    if mix is not None:
        train = MixedLoader(train, mix)
    return DataBundle(
        train=train,
        val=val,
        test=test,
        num_classes=len(class_list),
        in_channels=input_size[0],
        classes=class_list,
        mean=mean,
        std=std,
        input_size=input_size,
        resize_size=resize_size if dataset == "folder" else None,
        train_labels=train_labels,
    )
