"""What every loader offers and what `build_loaders` returns, shared by both kinds of loader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor


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
