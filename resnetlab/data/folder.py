"""Image folders (``root/{train,val,test}/<class>/*`` or ``root/<class>/*``) through torchvision's
ImageFolder, transforms.v2 and a DataLoader. Classes come from the training folder (or the model),
so a validation folder lacking a class keeps every index; random transforms are seeded per sample
from (seed, epoch, index), so augmentation does not depend on the number of workers."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import pil_loader
from torchvision.transforms import v2

from resnetlab.data.info import FOLDER_MEAN, FOLDER_STD
from resnetlab.data.order import AUGMENT_STREAM, EpochShards, check_numbers, seed_of
from resnetlab.errors import UserError


class BadImage(NamedTuple):
    """Stands in for a sample whose file could not be decoded."""

    path: str
    reason: str


class ClassFolder(ImageFolder):
    """ImageFolder whose class list can be imposed instead of read from the folder (then some
    of its classes may have no images here, as in a validation folder lacking one)."""

    def __init__(
        self, root: str | Path, classes: Sequence[str] | None, transform: v2.Compose
    ) -> None:
        self._fixed = list(classes) if classes is not None else None
        empty_ok = classes is not None
        try:
            super().__init__(str(root), transform, loader=pil_loader, allow_empty=empty_ok)
        except FileNotFoundError as e:
            raise UserError(f"{root}: {str(e).splitlines()[0]}") from None

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        """The imposed list if any (refusing folders outside it), else the sub-folders."""
        found = sorted(e.name for e in os.scandir(directory) if e.is_dir())
        if self._fixed is None and not found:
            raise UserError(f"{directory}: no class folders (expected {directory}/<class>/*)")
        classes = found if self._fixed is None else self._fixed
        extra = sorted(set(found) - set(classes))
        if extra:
            raise UserError(
                f"{directory}: class folder(s) {', '.join(extra[:5])} are not among the "
                f"{len(classes)} classes of the training set"
            )
        return classes, {c: i for i, c in enumerate(classes)}

    def __getitem__(self, key: int | tuple[int, int, int]) -> Any:
        """Sample ``index``, or with key ``(index, seed, epoch)`` its random transforms seeded
        from that key (v2's draw from the global RNG, forked here)."""
        index, *stream = key if isinstance(key, tuple) else (key,)
        path, target = self.samples[index]
        try:
            image = self.loader(path)  # torchvision's PIL loader decodes the whole file
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError... on bad files
            return BadImage(path, f"{type(e).__name__}: {e}".splitlines()[0])
        with torch.random.fork_rng(devices=[], enabled=bool(stream)):
            if stream:
                torch.manual_seed(seed_of(AUGMENT_STREAM, *stream, index))
            return self.transform(image), target


def _collate(items: list[Any]) -> tuple[Tensor | None, Tensor | None, list[BadImage]]:
    bad = [it for it in items if isinstance(it, BadImage)]
    good = [it for it in items if not isinstance(it, BadImage)]
    return (*default_collate(good), bad) if good else (None, None, bad)


def folder_transform(
    augment: str,
    image_size: int,
    resize_size: int,
    policy: v2.Transform | None = None,
    erasing: v2.RandomErasing | None = None,
    mean: Sequence[float] = FOLDER_MEAN,
    std: Sequence[float] = FOLDER_STD,
) -> v2.Compose:
    """torchvision's ImageNet reference recipe (RandomResizedCrop + flip) or a part of it, then
    ImageNet's normalisation (or ``mean`` and ``std``, pretrained weights' own); ``"none"``,
    resize and centre crop, is the evaluation transform.
    An auto-augment ``policy`` goes after the crop and flip, ``erasing`` after the
    normalisation, as in torchvision's reference presets (data/policies.py)."""
    centre = [v2.Resize(resize_size), v2.CenterCrop(image_size)]
    crop, flip = [v2.RandomResizedCrop(image_size)], [v2.RandomHorizontalFlip()]
    # crop-flip and cutout: the whole recipe
    geometric = {"none": centre, "flip": centre + flip, "crop": crop}.get(augment, crop + flip)
    if policy is not None:
        geometric = [*geometric, policy]
    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if augment == "cutout":  # a square of a quarter of the area, set to the mean
        norm.append(v2.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0))
    if erasing is not None:
        norm.append(erasing)
    return v2.Compose([v2.ToImage(), *geometric, *norm])


class FolderLoader(EpochShards):
    """The `Loader` protocol over a ClassFolder. A file that cannot be decoded stops iteration
    with a line naming it, or with ``skip_bad_images`` is left out and listed in `skipped`."""

    def __init__(
        self,
        dataset: ClassFolder,
        subset: Tensor | None = None,
        *,
        batch_size: int,
        train: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 2,
        skip_bad_images: bool = False,
    ) -> None:
        check_numbers(minimum=0, workers=workers)
        self.dataset = dataset
        self.subset = subset
        self.device = torch.device(device)
        self.dtype = dtype
        self.channels_last = channels_last
        self.workers = workers
        self.skip_bad_images = skip_bad_images
        self.skipped: list[str] = []
        super().__init__(
            len(subset) if subset is not None else len(dataset),
            batch_size=batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            where=f" in {dataset.root}",
        )

    def indices(self, epoch: int | None = None) -> Tensor:
        """Dataset indices this rank visits in ``epoch``, in order."""
        pos = super().indices(epoch)
        return self.subset[pos] if self.subset is not None else pos

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = self.indices()
        keys: list[Any] = indices.tolist()
        if self.train:  # each sample's augmentation is a function of its key alone
            drawn = self.augment_keys(indices)
            if drawn is indices:
                keys = [(i, self.seed, self.epoch) for i in keys]
            else:  # the balanced sampler: also the position in the epoch's draw
                positions = drawn.tolist()
                keys = [(i, self.seed, self.epoch, p) for i, p in zip(keys, positions, strict=True)]
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=keys,
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            drop_last=self.drop_last,
        )
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        for x, y, bad in loader:
            for item in bad:
                if not self.skip_bad_images:
                    raise UserError(
                        f"cannot read image {item.path} ({item.reason}); "
                        "pass --skip-bad-images to skip such files"
                    )
                if item.path not in self.skipped:
                    self.skipped.append(item.path)
                    warnings.warn(f"skipped unreadable image {item.path}", stacklevel=2)
            if x is None:
                if self.train and self.world_size > 1:
                    # One rank with a batch fewer leaves the others waiting in DDP's
                    # all_reduce for ever: refuse rather than hang.
                    raise UserError(
                        "every image of a training batch is unreadable, and under torchrun a "
                        "skipped batch would stall the other processes: remove "
                        + ", ".join(item.path for item in bad)
                    )
                continue
            x = x.to(self.device, self.dtype, non_blocking=True, memory_format=fmt)
            yield x, y.to(self.device, non_blocking=True)


def folder_layout(root: Path) -> tuple[Path, Path | None, Path | None]:
    """(train, val, test) folders: ``root/train`` + optional siblings, or ``root`` itself."""
    if not root.is_dir():
        raise UserError(
            f"image folder {root} not found: expected {root}/train/<class>/* (and optionally "
            f"val/, test/) or {root}/<class>/*; point --data-path at it"
        )
    if not (root / "train").is_dir():
        return root, None, None
    val, test = (root / s if (root / s).is_dir() else None for s in ("val", "test"))
    return root / "train", val, test
