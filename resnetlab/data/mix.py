"""MixUp and CutMix on whole batches, on the device, as torchvision's reference script applies
them after collation: torchvision.transforms.v2's MixUp / CutMix (one of them at random per
batch when both are on). Each pairs every image with its neighbour in the shuffled batch and
turns the labels into probability targets ``[B, classes]`` that sum to 1.

v2 draws from torch's global RNG: each batch forks it and seeds it from (seed, epoch, rank,
batch), so the run's random state never moves and a resumed run mixes exactly the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor
from torchvision.transforms import v2

from resnetlab.data.order import MIX_STREAM, seed_of
from resnetlab.data.policies import forked_rng, reseed
from resnetlab.errors import UserError


def batch_mix(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> v2.Transform | None:
    """MixUp, CutMix, a random choice of the two, or None when both alphas are 0."""
    for name, alpha in (("mixup-alpha", mixup_alpha), ("cutmix-alpha", cutmix_alpha)):
        if not alpha >= 0:  # nan too
            raise UserError(f"{name} must not be negative, got {alpha}")
    mixes = []
    if mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


class MixedLoader:
    """A training loader whose batches come out mixed, with soft targets; anything else is the
    wrapped loader's (its epoch, length, images...)."""

    def __init__(self, loader: Any, mix: v2.Transform) -> None:
        self.loader = loader
        self.mix = mix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        key = (self.loader.seed, self.loader.epoch, self.loader.rank)
        for i, (x, y) in enumerate(self.loader):
            with forked_rng(x.device):
                reseed(seed_of(MIX_STREAM, *key, i), x.device)
                mixed, target = self.mix(x, y)
            yield mixed, target
