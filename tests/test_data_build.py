"""build_loaders on tiny official-format roots: the bundle, the split, the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from fakedata import CIFAR10_NAMES, CIFAR100_NAMES, write_fake_dataset

from resnetlab.data import DATASETS, build_loaders, default_data_root
from resnetlab.errors import UserError

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*official release has:UserWarning", "ignore:.*MD5 differs:UserWarning"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    for name in DATASETS:
        write_fake_dataset(name, path, num_train=60, num_test=25)
    return path


# MNIST's names as torchvision gives them (predictions read the same); CIFAR's from meta.
CLASSES = {
    "mnist": torchvision.datasets.MNIST.classes,
    "fashion-mnist": torchvision.datasets.FashionMNIST.classes,
    "cifar10": CIFAR10_NAMES,
    "cifar100": CIFAR100_NAMES,
}


@pytest.mark.parametrize("name", list(DATASETS))
def test_bundle_describes_the_dataset(root, name):
    info = DATASETS[name]
    b = build_loaders(name, root, batch_size=8)
    assert (b.num_classes, b.in_channels, b.classes) == (
        info.num_classes,
        info.in_channels,
        CLASSES[name],
    )
    assert b.input_size == (info.in_channels, *info.image_size) and b.resize_size is None
    assert (b.mean, b.std) == (info.mean, info.std) and b.val is None
    assert len(b.train) == 8 and b.train.num_samples == 60  # ceil(60 / 8)
    x, y = next(iter(b.test))
    assert x.shape == (16, *b.input_size) and y.dtype == torch.int64  # eval batch 2 x 8


def test_cifar_class_names_come_from_the_meta_file(tmp_path):
    write_fake_dataset("cifar10", tmp_path, num_train=10, num_test=5)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.unlink()
    with pytest.raises(UserError, match=f"cifar10 not found: expected {meta}"):
        build_loaders("cifar10", tmp_path, batch_size=2)
    meta.write_bytes(b"\x80\x02}q\x00U\x0blabel_namesq\x01]q\x02U\x01aq\x03as.")
    with pytest.raises(UserError, match="'label_names' is not a list of 10 class names") as e:
        build_loaders("cifar10", tmp_path, batch_size=2)
    assert "\n" not in str(e.value)


def test_test_loader_is_the_normalised_test_set_in_order(root):
    from resnetlab.data import load_arrays

    info = DATASETS["cifar10"]
    images, labels = load_arrays("cifar10", root, train=False)
    b = build_loaders("cifar10", root, batch_size=4, eval_batch_size=10)
    x = torch.cat([x for x, _ in b.test])
    y = torch.cat([y for _, y in b.test])
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images.float() / 255 - mean) / std)
    assert torch.equal(y, labels) and len(b.test) == 3


def test_validation_split_is_held_out_and_deterministic(root):
    from resnetlab.data import load_arrays

    images, _ = load_arrays("mnist", root, train=True)

    def held_out(seed):
        b = build_loaders("mnist", root, batch_size=5, val_split=12, seed=seed)
        assert b.val.dataset_size == 12 and b.train.dataset_size == 48
        x = torch.cat([x for x, _ in b.val])
        return b, {bytes(img.numpy().tobytes()) for img in _pixels(x, "mnist")}

    b, val0 = held_out(0)
    train_imgs = {bytes(img.numpy().tobytes()) for img in b.train.images}
    assert not val0 & train_imgs  # (the fake images are random, hence distinct)
    assert len(val0 | train_imgs) == 60
    assert held_out(0)[1] == val0 and held_out(1)[1] != val0
    assert all(bytes(img.numpy().tobytes()) in val0 | train_imgs for img in images)


def _pixels(x: torch.Tensor, name: str) -> torch.Tensor:
    info = DATASETS[name]
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def test_options_reach_the_loaders(root):
    b = build_loaders(
        "cifar10",
        root,
        batch_size=7,
        drop_last=True,
        dtype=torch.bfloat16,
        channels_last=True,
        rank=1,
        world_size=2,
        augment="none",
    )
    assert len(b.train) == 30 // 7 and b.train.num_samples == 30
    x, _ = next(iter(b.train))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert b.test.num_samples == 12  # samples 1, 3, ..., 23 of 25


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(dataset="imagenet"), "known: mnist, fashion-mnist, cifar10, cifar100, folder"),
        (dict(batch_size=0), "batch-size must be positive"),
        (dict(eval_batch_size=-1), "eval-batch-size must be positive"),
        (dict(batch_size=61), "larger than the 60 training images"),
        (dict(val_split=-1), "val-split must not be negative"),
        (dict(val_split=60), "val-split must be between 0 and 59"),
        (dict(seed=-2), "seed must not be negative"),
        (dict(augment="autoaugment"), "unknown augmentation"),
        (dict(world_size=0), "world-size must be positive"),
        (dict(dataset="folder", download=True), "built-in datasets only"),
    ],
)
def test_bad_arguments_are_one_line_user_errors(root, kw, message):
    args = dict(dataset="mnist", data_path=root) | kw
    with pytest.raises(UserError, match=message) as e:
        build_loaders(**args)
    assert "\n" not in str(e.value)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    assert default_data_root() == Path("data")
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    with pytest.raises(UserError, match=str(tmp_path / "MNIST" / "raw")):
        build_loaders("mnist")  # data_path=None -> $RESNETLAB_DATA
