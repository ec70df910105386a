"""Which samples a rank sees, in which order: a pure function of (seed, epoch, rank), so a run
resumes exactly and ranks share an epoch without talking (as DistributedSampler, unpadded);
the validation split is a function of the seed alone, so runs with one seed compare."""

from __future__ import annotations

import numpy as np
import torch

from resnetlab.errors import UserError


def seed_of(*key: int) -> int:
    """A 63-bit seed hashed from the whole tuple: (seed=0, epoch=1) and (seed=1, epoch=0)
    give unrelated streams, which ``seed + epoch`` would not (negative keys: numpy's ValueError)."""
    state = np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by `seed_of(*key)`."""
    return torch.Generator().manual_seed(seed_of(*key))


# Stream ids, always the first key (SeedSequence pads short keys with zeros, so a
# trailing id could collide), so that order, augmentation and split never share numbers.
ORDER_STREAM = 0
AUGMENT_STREAM = 1
SPLIT_STREAM = 2
POLICY_STREAM = 3  # in-memory auto-augment and random erasing, per image
SAMPLER_STREAM = 4  # the balanced sampler's draw
MIX_STREAM = 5  # MixUp / CutMix, per batch
SUBSET_STREAM = 6  # which images --per-class keeps


def holdout_split(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both sorted, disjoint, covering ``range(n)``."""
    if val_size < 0 or val_size >= n:
        raise UserError(f"--val-split must be between 0 and {n - 1} (the training set has {n})")
    perm = torch.randperm(n, generator=generator(SPLIT_STREAM, seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def check_numbers(*, minimum: int = 1, **numbers: int) -> None:
    """One line naming the flag, e.g. ``batch-size must be positive, got 0`` (or ``... must
    not be negative ...`` with ``minimum=0``)."""
    for name, value in numbers.items():
        if value < minimum:
            must = "be positive" if minimum else "not be negative"
            raise UserError(f"{name.replace('_', '-')} must {must}, got {value}")


class EpochShards:
    """What every loader shares: the selected epoch, this rank's order in it, its length."""

    def __init__(
        self,
        dataset_size: int,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        where: str = "",
    ) -> None:
        check_numbers(batch_size=batch_size, world_size=world_size)
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} outside 0..{world_size - 1}")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last and train
        self.epoch = 0
        self.sample_weights: torch.Tensor | None = None  # set by `balance`
        if train:
            self.num_samples = dataset_size // world_size
            if batch_size > self.num_samples:
                per_rank = " per rank" if world_size > 1 else ""
                raise UserError(
                    f"batch size {batch_size} is larger than the {self.num_samples} training "
                    f"images{per_rank}{where}"
                )
        else:
            self.num_samples = len(range(rank, dataset_size, world_size))

    def balance(self, labels: torch.Tensor) -> None:
        """Train epochs draw ``dataset_size`` samples with replacement instead of a shuffle, each
        with probability inversely proportional to its class's count (``labels``: one a sample)."""
        counts = torch.bincount(labels)
        self.sample_weights = 1.0 / counts[labels].double()

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s order and augmentation; eval loaders ignore it."""
        if epoch < 0:
            raise ValueError(f"epoch must not be negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:  # the partial last batch counts unless drop_last
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """Positions this rank visits in ``epoch``: its shard of the epoch's permutation (the
        ``n % world_size`` left over change every epoch), or ``rank, rank + W, ...`` in eval."""
        if not self.train:
            return torch.arange(self.rank, self.dataset_size, self.world_size)
        epoch = self.epoch if epoch is None else epoch
        if self.sample_weights is None:
            g = generator(ORDER_STREAM, self.seed, epoch)
            perm = torch.randperm(self.dataset_size, generator=g)
        else:  # the balanced sampler: one draw shared by all ranks, as a permutation is
            g = generator(SAMPLER_STREAM, self.seed, epoch)
            perm = torch.multinomial(self.sample_weights, self.dataset_size, True, generator=g)
        return perm[self.rank : self.num_samples * self.world_size : self.world_size]

    def augment_keys(self, indices: torch.Tensor) -> torch.Tensor:
        """What the augmentation of each of this rank's ``indices`` is a function of: the sample
        (a shuffle visits each once), or with the balanced sampler its position in the epoch's
        draw, so that a sample drawn twice is augmented twice, differently."""
        if self.sample_weights is None or not self.train:
            return indices
        positions = torch.arange(self.rank, self.num_samples * self.world_size, self.world_size)
        return positions.to(indices.device)
