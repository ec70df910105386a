"""The fast loader: a small dataset as one uint8 tensor on the device, each batch one `gather`
doing every crop, padding and flip (no per-image Python); everything random is a function of
(seed, epoch, sample index), so a resumed or re-sharded run sees exactly the same data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from resnetlab.data.order import AUGMENT_STREAM, EpochShards, generator
from resnetlab.data.policies import PerImage
from resnetlab.errors import UserError

AUGMENTS = ("crop-flip", "crop", "flip", "none", "cutout")


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample augmentation of one epoch, indexed by sample (not by position)."""

    dy: Tensor  # int64 [N], crop offset into the padded image, 0..2*padding
    dx: Tensor  # int64 [N]
    flip: Tensor  # bool [N]
    cutout_y: Tensor | None  # int64 [N], centre of the cutout square, or None
    cutout_x: Tensor | None


class InMemoryLoader(EpochShards):
    """Batches ``(x, y)`` of a uint8 ``[N, C, H, W]`` dataset, augmented on the device if ``train``.

    ``crop-flip`` is the paper's (torchvision's ``RandomCrop(32, padding=4)``, then a flip with
    p=1/2); ``cutout`` then sets a ``cutout_size`` square to the mean (DeVries and Taylor 2017).
    ``per_image`` adds an auto-augment policy (on the uint8 crops) and random erasing (after the
    normalisation), image by image.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        augment: str = "crop-flip",
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        padding: int = 4,
        cutout_size: int | None = None,
        per_image: PerImage | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {images.shape}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
        if augment not in AUGMENTS:
            raise UserError(f"unknown augmentation {augment!r}; known: {', '.join(AUGMENTS)}")
        if seed < 0 or padding < 0:
            raise UserError("seed and padding must not be negative")
        if not dtype.is_floating_point:
            raise UserError(f"dtype must be a floating type, got {dtype}")
        n, c, h, w = images.shape
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values")
        super().__init__(
            n,
            batch_size=batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )
        self.device = torch.device(device)
        # One zero pixel after each channel plane: the crop's padding reads it, so
        # batches need no padded copy and the dataset stays ~N*C*H*W bytes.
        self._pixels = torch.zeros((n, c, h * w + 1), dtype=torch.uint8, device=self.device)
        self._pixels[:, :, : h * w] = images.reshape(n, c, h * w)
        self.image_shape = (c, h, w)
        self.labels = labels.to(self.device, torch.int64)
        self.augment = augment if train else "none"
        self.dtype = dtype
        self.channels_last = channels_last
        self.padding = padding if self.augment in ("crop-flip", "crop", "cutout") else 0
        self.cutout_size = (cutout_size or h // 2) if self.augment == "cutout" else 0
        # (x - 255 * mean) / (255 * std), as two in-place ops on the batch.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        self._table = self._window_table() if self.augment != "none" else None
        self.per_image = per_image if train else None

    @property
    def images(self) -> Tensor:
        """The dataset, uint8 ``[N, C, H, W]`` (a view)."""
        c, h, w = self.image_shape
        return self._pixels[:, :, : h * w].unflatten(2, (h, w))

    def augment_params(self, epoch: int | None = None) -> AugmentParams:
        """Every sample's crop offsets, flip and cutout centre in ``epoch``: its output is
        ``padded[:, dy : dy + H, dx : dx + W]`` (``padding`` zeros a side), mirrored if flip."""
        epoch = self.epoch if epoch is None else epoch
        n = self.dataset_size
        _, h, w = self.image_shape
        g = generator(AUGMENT_STREAM, self.seed, epoch)
        dy = torch.randint(0, 2 * self.padding + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * self.padding + 1, (n,), generator=g)
        flip = torch.randint(0, 2, (n,), generator=g).bool()
        if self.augment in ("none", "crop"):
            flip.zero_()
        cy = cx = None
        if self.cutout_size:
            cy = torch.randint(0, h, (n,), generator=g)
            cx = torch.randint(0, w, (n,), generator=g)
        return AugmentParams(dy, dx, flip, cy, cx)

    def _window_table(self) -> Tensor:
        """Flat source index of every output pixel for each (dy, dx, flip); positions in the
        padding point at the zero pixel ``H * W``."""
        _, h, w = self.image_shape
        p = self.padding
        k = 2 * p + 1
        # Row (dy * k + dx) * 2 + flip, as __iter__ looks it up.
        dy, dx, flip = torch.cartesian_prod(torch.arange(k), torch.arange(k), torch.arange(2)).T
        ar_h, ar_w = torch.arange(h), torch.arange(w)
        rows = dy[:, None] + ar_h - p  # [K, H]
        cols = dx[:, None] + torch.where(flip[:, None] == 1, w - 1 - ar_w, ar_w) - p  # [K, W]
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        flat = torch.where(inside, rows[:, :, None] * w + cols[:, None, :], h * w)
        return flat.view(len(dy), h * w).to(self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        c, h, w = self.image_shape
        idx = self.indices().to(self.device)
        keys = self.augment_keys(idx)  # idx itself, unless the balanced sampler draws
        combo = cutout = seeds = None
        if self.per_image is not None:
            seeds = self.per_image.seeds(self.seed, self.epoch, self.dataset_size)
        if self.augment != "none":
            p = self.augment_params()
            k = 2 * self.padding + 1
            combo = ((p.dy * k + p.dx) * 2 + p.flip.long()).to(self.device)
            if p.cutout_y is not None:
                cutout = (p.cutout_y.to(self.device), p.cutout_x.to(self.device))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        ar_h = torch.arange(h, device=self.device)
        ar_w = torch.arange(w, device=self.device)
        batches = zip(idx.split(self.batch_size), keys.split(self.batch_size), strict=True)
        for sel, key in list(batches)[: len(self)]:  # without a dropped last batch
            bsz = len(sel)
            src = self._pixels.index_select(0, sel)
            if combo is None:
                src = src[:, :, : h * w]
            else:
                where = self._table.index_select(0, combo.index_select(0, key))
                src = torch.gather(src, 2, where.unsqueeze(1).expand(bsz, c, h * w))
            if seeds is not None:
                key_seeds = seeds[key.cpu()]
                src = src.unflatten(2, (h, w))
                src = self.per_image.apply_policy(src, key_seeds[:, 0]).flatten(2)
            out = torch.empty((bsz, c, h, w), device=self.device, memory_format=fmt)
            out.view(bsz, c, h * w).copy_(src)
            out.mul_(self._scale).add_(self._shift)
            if cutout is not None:  # a size-s square centred at (cy, cx), clipped at the edges
                s = self.cutout_size
                top = cutout[0][key][:, None] - s // 2
                left = cutout[1][key][:, None] - s // 2
                in_rows = (ar_h >= top) & (ar_h < top + s)
                in_cols = (ar_w >= left) & (ar_w < left + s)
                out.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1), 0.0)
            if seeds is not None:
                self.per_image.erase(out, key_seeds[:, 1])
            x = out if self.dtype == torch.float32 else out.to(self.dtype)
            yield x, self.labels.index_select(0, sel)
