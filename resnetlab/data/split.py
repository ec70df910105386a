"""A validation set held out of the training set (the paper's 45k/5k CIFAR-10 split), by the
seed alone, so validation numbers of runs with the same seed are comparable."""

from __future__ import annotations

import torch

from resnetlab.data.order import SPLIT_STREAM, generator
from resnetlab.errors import UserError


def holdout_split(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both sorted, disjoint, covering ``range(n)``."""
    if val_size < 0 or val_size >= n:
        raise UserError(f"--val-split must be between 0 and {n - 1} (the training set has {n})")
    perm = torch.randperm(n, generator=generator(SPLIT_STREAM, seed))
    val = perm[:val_size].sort().values
    train = perm[val_size:].sort().values
    return train, val
