"""What the trainer must know about each built-in dataset, before reading a byte of it; mean
and std are the published per-channel statistics of each training set (pixels in [0, 1])."""

from __future__ import annotations

from dataclasses import dataclass

from resnetlab.errors import UserError


class DataWarning(UserWarning):
    """The data differs from the official release (size, checksum) but passed validation."""


@dataclass(frozen=True)
class DatasetInfo:
    """Shapes and statistics of a dataset, known without reading its files."""

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int
    num_test: int


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, 1, (28, 28), (0.1307,), (0.3081,), 60_000, 10_000),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, 1, (28, 28), (0.2860,), (0.3530,), 60_000, 10_000
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        3,
        (32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        50_000,
        10_000,
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        100,
        3,
        (32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        50_000,
        10_000,
    ),
}

# ImageNet statistics: the usual choice for image folders (torchvision's reference scripts).
FOLDER_MEAN = (0.485, 0.456, 0.406)
FOLDER_STD = (0.229, 0.224, 0.225)


def get_info(name: str) -> DatasetInfo:
    """Look a dataset up, with an error that lists the known names."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join([*DATASETS, 'folder'])}")
    return DATASETS[name]
