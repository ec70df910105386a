"""The fast loader against hand-computed crops, torchvision's transforms, and the
order/shard contract the training loop relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from resnetlab.data import DATASETS, InMemoryLoader
from resnetlab.errors import UserError

IDENTITY = dict(mean=(0.0, 0.0), std=(1 / 255, 1 / 255))  # x * 255 / 255: raw pixel values


def _distinct_images(n: int, c: int = 2, h: int = 6, w: int = 5) -> torch.Tensor:
    """Every (image, channel, row, column) a different non-zero value, so any wrong
    pixel, any wrong padding (0) and any wrong flip is visible."""
    values = torch.arange(1, n * c * h * w + 1) % 251 + 1
    return values.view(n, c, h, w).to(torch.uint8)


def _loader(images, labels=None, **kw) -> InMemoryLoader:
    labels = torch.arange(len(images)) if labels is None else labels
    kw.setdefault("batch_size", 4)
    kw.setdefault("train", True)
    stats = (
        {}
        if "mean" in kw
        else {"mean": (0.0,) * images.shape[1], "std": (1 / 255,) * images.shape[1]}
    )
    return InMemoryLoader(images, labels, **stats, **kw)


def _expected(image: np.ndarray, dy: int, dx: int, flip: bool, p: int) -> np.ndarray:
    c, h, w = image.shape
    padded = np.zeros((c, h + 2 * p, w + 2 * p), image.dtype)
    padded[:, p : p + h, p : p + w] = image
    out = padded[:, dy : dy + h, dx : dx + w]
    return out[:, :, ::-1] if flip else out


@pytest.mark.parametrize("padding", [0, 2, 4])
def test_crop_and_flip_are_exactly_what_the_seed_says(padding):
    images = _distinct_images(13)
    loader = _loader(images, batch_size=5, seed=3, padding=padding)
    loader.set_epoch(1)
    params = loader.augment_params()
    order = loader.indices()
    assert sorted(order.tolist()) == list(range(13))
    seen = 0
    flips = set()
    for x, y in loader:
        for xi, yi in zip(x, y, strict=True):
            i = int(yi)  # label == sample index
            assert i == int(order[seen])
            dy, dx, flip = int(params.dy[i]), int(params.dx[i]), bool(params.flip[i])
            assert 0 <= dy <= 2 * padding and 0 <= dx <= 2 * padding
            want = _expected(images[i].numpy(), dy, dx, flip, padding)
            np.testing.assert_array_equal(xi.numpy(), want.astype(np.float32))
            flips.add(flip)
            seen += 1
    assert seen == 13 and flips == {True, False}


def test_matches_torchvision_pad_crop_flip_normalize():
    """The same crop through torchvision's functional ops on the CIFAR statistics."""
    info = DATASETS["cifar10"]
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    loader = InMemoryLoader(
        images, torch.arange(16), batch_size=16, mean=info.mean, std=info.std, train=True, seed=7
    )
    params = loader.augment_params()
    x, y = next(iter(loader))
    for xi, yi in zip(x, y, strict=True):
        i = int(yi)
        ref = TF.pad(images[i], [4], fill=0)  # black padding in pixel space
        ref = TF.crop(ref, int(params.dy[i]), int(params.dx[i]), 32, 32)
        if params.flip[i]:
            ref = TF.horizontal_flip(ref)
        ref = TF.normalize(TF.to_dtype(ref, torch.float32, scale=True), info.mean, info.std)
        torch.testing.assert_close(xi, ref, rtol=0, atol=1e-5)


def test_crop_statistics_cover_every_offset():
    loader = _loader(_distinct_images(4000, c=1, h=4, w=4), seed=0)
    p = loader.augment_params()
    assert set(p.dy.tolist()) == set(range(9)) and set(p.dx.tolist()) == set(range(9))
    assert 0.45 < p.flip.float().mean().item() < 0.55


@pytest.mark.parametrize("augment", ["flip", "crop", "none"])
def test_partial_augmentations(augment):
    images = _distinct_images(40)
    loader = _loader(images, augment=augment, batch_size=40)
    x, y = next(iter(loader))
    originals = images[y].float()
    mirrored = originals.flip(3)
    is_orig = (x == originals).flatten(1).all(1)
    is_flip = (x == mirrored).flatten(1).all(1)
    if augment == "flip":
        assert (is_orig | is_flip).all() and is_flip.any() and is_orig.any()
    elif augment == "none":
        assert is_orig.all()
    else:  # crop only: never mirrored (unless the crop is centred), shifted for most
        p = loader.augment_params()
        assert not p.flip.any() and not is_orig.all()


def test_cutout_blanks_a_square_after_normalisation():
    # Centres are in output coordinates (after crop and flip), clipped at the edges.
    images = torch.full((50, 1, 8, 8), 200, dtype=torch.uint8)
    mean, std = (0.5,), (0.25,)
    loader = InMemoryLoader(
        images,
        torch.arange(50),
        batch_size=50,
        mean=mean,
        std=std,
        train=True,
        augment="cutout",
        padding=0,
        cutout_size=4,
    )
    p = loader.augment_params()
    x, y = next(iter(loader))
    value = (200 / 255 - 0.5) / 0.25
    for xi, yi in zip(x, y, strict=True):
        i = int(yi)
        cy, cx = int(p.cutout_y[i]), int(p.cutout_x[i])
        want = torch.full((8, 8), value)
        want[max(cy - 2, 0) : cy + 2, max(cx - 2, 0) : cx + 2] = 0.0
        torch.testing.assert_close(xi[0], want)


def test_same_seed_and_epoch_give_the_same_batches_other_epochs_differ():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)

    def epoch(seed, e):
        loader = _loader(images, seed=seed, batch_size=16)
        loader.set_epoch(e)
        return [(x.clone(), y.clone()) for x, y in loader]

    a, b = epoch(0, 5), epoch(0, 5)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = epoch(0, 6)
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in c]))
    d = epoch(1, 5)
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in d]))


def test_resuming_at_an_epoch_reproduces_it():
    images = torch.randint(0, 256, (30, 1, 6, 6), dtype=torch.uint8)
    first = _loader(images, seed=11)
    for e in range(3):
        first.set_epoch(e)
        run = [x.clone() for x, _ in first]
    resumed = _loader(images, seed=11)
    resumed.set_epoch(2)
    assert all(torch.equal(a, b) for a, (b, _) in zip(run, resumed, strict=True))


@pytest.mark.parametrize("n", [40, 43])
def test_training_shards_are_disjoint_equal_and_cover_the_epoch(n):
    images = _distinct_images(n)
    full = _loader(images, seed=2)
    full.set_epoch(3)
    p_full = full.augment_params()
    shards, lengths = [], []
    for rank in range(2):
        loader = _loader(images, seed=2, rank=rank, world_size=2)
        loader.set_epoch(3)
        ys = []
        for x, y in loader:
            ys += y.tolist()
            for xi, yi in zip(x, y, strict=True):  # a sample's crop does not depend on rank
                i = int(yi)
                want = _expected(
                    images[i].numpy(),
                    int(p_full.dy[i]),
                    int(p_full.dx[i]),
                    bool(p_full.flip[i]),
                    4,
                )
                np.testing.assert_array_equal(xi.numpy(), want.astype(np.float32))
        assert loader.num_samples == len(ys) == n // 2 and loader.dataset_size == n
        shards.append(set(ys))
        lengths.append(len(loader))
    assert not shards[0] & shards[1]
    assert lengths[0] == lengths[1]
    assert len(shards[0] | shards[1]) == n - n % 2


def test_evaluation_shards_count_every_sample_once_in_order():
    images = _distinct_images(11)
    got = []
    for rank in range(3):
        loader = _loader(images, train=False, rank=rank, world_size=3, batch_size=2)
        ys = [y for _, y in loader]
        ys = torch.cat(ys).tolist()
        assert ys == list(range(rank, 11, 3)) and loader.num_samples == len(ys)
        got += ys
    assert sorted(got) == list(range(11))


def test_evaluation_loader_never_augments_or_shuffles():
    images = _distinct_images(9)
    loader = _loader(images, train=False, batch_size=4, augment="cutout")
    loader.set_epoch(4)
    x = torch.cat([x for x, _ in loader])
    torch.testing.assert_close(x, images.float())


@pytest.mark.parametrize(("drop_last", "sizes"), [(True, [4, 4]), (False, [4, 4, 2])])
def test_last_partial_batch_policy(drop_last, sizes):
    loader = _loader(_distinct_images(10), drop_last=drop_last)
    assert [len(x) for x, _ in loader] == sizes and len(loader) == len(sizes)


def test_dtype_and_channels_last():
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    info = DATASETS["cifar10"]
    kw = dict(batch_size=8, mean=info.mean, std=info.std, train=True, seed=1)
    ref, _ = next(iter(InMemoryLoader(images, torch.arange(8), **kw)))
    for dtype in (torch.bfloat16, torch.float32):
        x, y = next(
            iter(InMemoryLoader(images, torch.arange(8), dtype=dtype, channels_last=True, **kw))
        )
        assert x.dtype == dtype and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(x.float(), ref, rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(batch_size=11), "larger than the 10 training images"),
        (dict(batch_size=6, world_size=2), "larger than the 5 training images per rank"),
        (dict(batch_size=0), "batch-size must be positive"),
        (dict(batch_size=-3), "batch-size must be positive"),
        (dict(rank=2, world_size=2), "rank 2 outside"),
        (dict(augment="mixup"), "unknown augmentation"),
    ],
)
def test_bad_numbers_are_user_errors(kw, message):
    with pytest.raises(UserError, match=message):
        _loader(_distinct_images(10), **kw)


def test_eval_batch_may_exceed_the_set():
    loader = _loader(_distinct_images(5), train=False, batch_size=100)
    assert len(loader) == 1 and len(next(iter(loader))[0]) == 5
