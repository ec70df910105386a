"""Auto-augment policies and random erasing, as torchvision's reference classification presets
place them: the policy after crop and flip (on uint8 images), random erasing after the
normalisation (so its value 0 is the mean colour).

transforms.v2 draws from torch's global RNG. The folder loader seeds it per sample already;
`PerImage` does the same for the in-memory loader: every image gets seeds from (seed, epoch,
key) and the global RNG is forked around the batch, so the run's own random state never moves
and a resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2

from resnetlab.data.order import POLICY_STREAM, generator
from resnetlab.errors import UserError

POLICIES = ("none", "ra", "ta_wide", "augmix", "imagenet", "cifar10", "svhn")


def auto_augment_policy(
    name: str, ra_magnitude: int = 9, augmix_severity: int = 3
) -> v2.Transform | None:
    """The transform torchvision's reference script builds for ``--auto-augment name``."""
    if name not in POLICIES:
        raise UserError(f"unknown auto-augment policy {name!r}; choose from {', '.join(POLICIES)}")
    bilinear = InterpolationMode.BILINEAR  # the reference's default --interpolation
    if name == "none":
        return None
    if name == "ra":
        return v2.RandAugment(interpolation=bilinear, magnitude=ra_magnitude)
    if name == "ta_wide":
        return v2.TrivialAugmentWide(interpolation=bilinear)
    if name == "augmix":
        return v2.AugMix(interpolation=bilinear, severity=augmix_severity)
    return v2.AutoAugment(v2.AutoAugmentPolicy(name), interpolation=bilinear)


def random_erasing(p: float) -> v2.RandomErasing | None:
    """torchvision's RandomErasing with probability ``p`` (its default area and aspect ranges)."""
    if not 0 <= p <= 1:
        raise UserError(f"random-erase must be a probability in [0, 1], got {p}")
    return v2.RandomErasing(p=p) if p > 0 else None


@contextlib.contextmanager
def forked_rng(device: torch.device) -> Iterator[None]:
    """torch's global CPU RNG (and ``device``'s, on CUDA) restored on exit."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def reseed(seed: int, device: torch.device) -> None:
    """Seed the generators `forked_rng` restores (and no other: other devices keep theirs)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


class PerImage:
    """An auto-augment policy and/or random erasing applied image by image to in-memory batches
    (v2 policies draw one operation per call: a batch would get the same one)."""

    def __init__(self, policy: v2.Transform | None, erasing: v2.RandomErasing | None) -> None:
        self.policy = policy
        self.erasing = erasing

    @staticmethod
    def seeds(seed: int, epoch: int, n: int) -> Tensor:
        """int64 ``[n, 2]``: each key's seed for the policy and for the erasing in ``epoch``."""
        g = generator(POLICY_STREAM, seed, epoch)
        return torch.randint(0, 2**62, (n, 2), generator=g)

    def apply_policy(self, images: Tensor, seeds: Tensor) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> the same shape and dtype; image i draws from ``seeds[i]``."""
        if self.policy is None:
            return images
        out = torch.empty_like(images, memory_format=torch.contiguous_format)
        with forked_rng(images.device):
            for i, s in enumerate(seeds.tolist()):
                reseed(s, images.device)
                out[i] = self.policy(images[i])
        return out

    def erase(self, images: Tensor, seeds: Tensor) -> None:
        """Random erasing in place on a normalised float ``[B, C, H, W]`` batch."""
        if self.erasing is None:
            return
        with forked_rng(images.device):
            for i, s in enumerate(seeds.tolist()):
                reseed(s, images.device)
                images[i] = self.erasing(images[i])
