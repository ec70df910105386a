"""The real datasets (only when $RESNETLAB_DATA points at a torchvision-style root):
counts and statistics against the published values, pixels against torchvision."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from resnetlab.data import DATASETS, build_loaders, load_arrays
from resnetlab.data.arrays import load_classes

ROOT = Path(os.environ["RESNETLAB_DATA"]) if os.environ.get("RESNETLAB_DATA") else None
pytestmark = [
    pytest.mark.skipif(ROOT is None, reason="RESNETLAB_DATA not set"),
    pytest.mark.filterwarnings("ignore:.*MD5 differs:UserWarning"),
]
MARKER = {
    "mnist": "MNIST/raw/train-images-idx3-ubyte",
    "fashion-mnist": "FashionMNIST/raw/train-images-idx3-ubyte",
    "cifar10": "cifar-10-batches-py/data_batch_1",
    "cifar100": "cifar-100-python/train",
}
# Published training-set statistics (pixels in [0, 1]) and per-class counts.
PUBLISHED = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
COUNTS = {
    "cifar10": ([5000] * 10, [1000] * 10),
    "mnist": (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ),
    "fashion-mnist": ([6000] * 10, [1000] * 10),
    "cifar100": ([500] * 100, [100] * 100),
}


def _needs(name: str) -> None:
    if ROOT is None or not (ROOT / MARKER[name]).is_file():
        pytest.skip(f"{name} not under $RESNETLAB_DATA")


@pytest.fixture(scope="module")
def arrays():
    cache: dict = {}

    def get(name: str, train: bool):
        if (name, train) not in cache:
            cache[(name, train)] = load_arrays(name, ROOT, train=train)
        return cache[(name, train)]

    return get


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_counts_and_statistics_match_the_published_values(arrays, name):
    _needs(name)
    info = DATASETS[name]
    for train, counts in zip((True, False), COUNTS[name], strict=True):
        images, labels = arrays(name, train)
        assert images.shape == (len(labels), info.in_channels, *info.image_size)
        assert torch.bincount(labels, minlength=info.num_classes).tolist() == counts
    images, _ = arrays(name, True)
    mean, std = PUBLISHED[name]
    assert (info.mean, info.std) == (mean, std)
    for c in range(info.in_channels):  # exact moments from the 256-bin histogram
        hist = torch.bincount(images[:, c].flatten(), minlength=256).double()
        v = torch.arange(256, dtype=torch.float64) / 255
        m = float((hist * v).sum() / hist.sum())
        s = float(((hist * (v - m) ** 2).sum() / hist.sum()).sqrt())
        assert (round(m, 4), round(s, 4)) == (mean[c], std[c])


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_pixels_equal_torchvisions_reading(arrays, name):
    _needs(name)
    tvd = torchvision.datasets
    for train in (True, False):
        images, labels = arrays(name, train)
        if name.startswith("cifar"):

            class CIFAR(tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100):
                def _check_integrity(self) -> bool:  # re-encoded copy, see its README
                    return True

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = CIFAR(str(ROOT), train=train)
            ref = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
        else:
            ds = (tvd.MNIST if name == "mnist" else tvd.FashionMNIST)(str(ROOT), train=train)
            ref = ds.data.unsqueeze(1)
        assert torch.equal(images, ref)
        assert labels.tolist() == [int(t) for t in ds.targets]


def test_cifar10_order_and_metadata(arrays):
    _needs("cifar10")
    _, train_labels = arrays("cifar10", True)
    _, test_labels = arrays("cifar10", False)
    assert train_labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert test_labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    published = ["airplane", "automobile", "bird", "cat", "deer"]
    assert load_classes("cifar10", ROOT) == [*published, "dog", "frog", "horse", "ship", "truck"]


def test_cifar10_copy_is_reported_as_not_official():
    _needs("cifar10")
    with pytest.warns(UserWarning, match="test_batch: MD5 differs"):
        load_arrays("cifar10", ROOT, train=False)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_build_loaders_on_the_real_data(arrays, name):
    _needs(name)
    info = DATASETS[name]
    b = build_loaders(name, ROOT, batch_size=500, val_split=5000, seed=0)
    assert (b.train.dataset_size, b.val.dataset_size, b.test.dataset_size) == (
        info.num_train - 5000,
        5000,
        info.num_test,
    )
    _, train_labels = arrays(name, True)
    _, test_labels = arrays(name, False)
    seen = {"train": [], "val": [], "test": []}
    for split in seen:
        loader = getattr(b, split)
        for x, y in loader:
            assert x.shape[1:] == b.input_size and x.dtype == torch.float32
            seen[split].append(y)
    k = info.num_classes
    got = {s: torch.bincount(torch.cat(v), minlength=k) for s, v in seen.items()}
    assert torch.equal(got["train"] + got["val"], torch.bincount(train_labels, minlength=k))
    assert torch.equal(got["test"], torch.bincount(test_labels, minlength=k))
    x, _ = next(iter(b.test))  # test images: normalised by train stats, mean near 0
    assert np.allclose(x.mean((0, 2, 3)).numpy(), 0, atol=0.1)
