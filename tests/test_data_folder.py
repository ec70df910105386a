"""Image folders: a small tree on disk through build_loaders("folder", ...)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from resnetlab.data import build_loaders
from resnetlab.data.info import FOLDER_MEAN, FOLDER_STD
from resnetlab.errors import UserError

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _tree(root: Path, split: str, per_class: dict[str, int], size=(48, 40)) -> None:
    for name, n in per_class.items():
        folder = root / split / name if split else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, COLOURS[name]).save(folder / f"{i}.png")


def _expected_pixel(name: str) -> torch.Tensor:
    rgb = torch.tensor(COLOURS[name], dtype=torch.float32) / 255
    return (rgb - torch.tensor(FOLDER_MEAN)) / torch.tensor(FOLDER_STD)


@pytest.fixture
def tree(tmp_path):
    _tree(tmp_path, "train", {"cat": 4, "dog": 3, "emu": 5})
    _tree(tmp_path, "val", {"cat": 2, "emu": 2})  # no "dog": indices must not shift
    return tmp_path


def _all(loader):
    xs, ys = zip(*list(loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_classes_come_from_train_and_val_keeps_their_indices(tree):
    b = build_loaders("folder", tree, batch_size=4, image_size=16, resize_size=20, workers=0)
    assert b.classes == ["cat", "dog", "emu"] and b.num_classes == 3 and b.in_channels == 3
    assert b.input_size == (3, 16, 16) and b.resize_size == 20 and b.test is None
    assert (b.mean, b.std) == (FOLDER_MEAN, FOLDER_STD)
    x, y = _all(b.val)
    assert y.tolist() == [0, 0, 2, 2]  # emu stays 2 although val has only two classes
    assert x.shape == (4, 3, 16, 16)
    for xi, yi in zip(x, y, strict=True):  # solid colour: every pixel (c/255 - mean)/std
        want = _expected_pixel(b.classes[yi]).view(3, 1, 1).expand(3, 16, 16)
        torch.testing.assert_close(xi, want, atol=1e-5, rtol=0)
    x, y = _all(b.train)
    assert sorted(y.tolist()) == [0] * 4 + [1] * 3 + [2] * 5 and x.shape[1:] == (3, 16, 16)
    assert len(b.train) == 3 and b.train.num_samples == 12


def test_train_order_and_augmentation_are_reproducible_and_worker_independent(tmp_path):
    folder = tmp_path / "train" / "cat"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        pixels = torch.randint(0, 256, (24, 32, 3), dtype=torch.uint8, generator=g)
        Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    kw = dict(batch_size=3, image_size=16, resize_size=20, seed=4)

    def epoch(workers, e):
        loader = build_loaders("folder", tmp_path, workers=workers, **kw).train
        loader.set_epoch(e)
        return _all(loader)[0]

    a = epoch(0, 1)
    assert torch.equal(a, epoch(0, 1))
    assert torch.equal(a, epoch(1, 1))  # same crops in a worker process
    assert not torch.equal(a, epoch(0, 2))


def test_unreadable_image_is_named_or_skipped(tree):
    bad = tree / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    kw = dict(batch_size=4, image_size=16, resize_size=20)
    b = build_loaders("folder", tree, workers=0, **kw)
    with pytest.raises(UserError) as e:
        _all(b.train)
    assert str(bad) in str(e.value) and "--skip-bad-images" in str(e.value)
    assert "\n" not in str(e.value)
    for workers in (0, 1):
        b = build_loaders("folder", tree, workers=workers, skip_bad_images=True, **kw)
        with pytest.warns(UserWarning, match="broken.png"):
            x, y = _all(b.train)
        assert len(y) == 12 and b.train.skipped == [str(bad)]


def test_unreadable_image_in_a_worker_is_still_one_line(tree):
    bad = tree / "val" / "cat" / "zero.png"
    bad.write_bytes(b"")
    b = build_loaders("folder", tree, batch_size=2, image_size=16, resize_size=20, workers=1)
    with pytest.raises(UserError, match="zero.png"):
        _all(b.val)


def test_single_folder_with_val_split(tmp_path):
    _tree(tmp_path, "", {"cat": 5, "dog": 5})
    b = build_loaders(
        "folder", tmp_path, batch_size=2, val_split=4, image_size=8, resize_size=8, workers=0
    )
    assert b.val is not None and b.test is None
    assert b.train.dataset_size == 6 and b.val.dataset_size == 4
    held_out = set(b.val.indices().tolist())
    train_idx = set(b.train.indices().tolist())
    assert not held_out & train_idx and len(held_out | train_idx) == 10
    x, y = _all(b.val)
    assert len(y) == 4
    # the same seed holds out the same images
    again = build_loaders(
        "folder", tmp_path, batch_size=2, val_split=4, image_size=8, resize_size=8, workers=0
    )
    assert set(again.val.indices().tolist()) == held_out


def test_val_split_with_a_val_folder_turns_it_into_test(tree):
    b = build_loaders(
        "folder", tree, batch_size=2, val_split=3, image_size=8, resize_size=8, workers=0
    )
    assert b.val.dataset_size == 3 and b.test.dataset_size == 4


def test_fixed_class_list_and_foreign_classes(tree):
    b = build_loaders(
        "folder",
        tree,
        batch_size=2,
        image_size=8,
        resize_size=8,
        workers=0,
        classes=["ant", "cat", "dog", "emu"],
    )
    assert b.num_classes == 4 and sorted(set(_all(b.val)[1].tolist())) == [1, 3]
    with pytest.raises(UserError, match="emu are not among the 2 classes"):
        build_loaders("folder", tree, batch_size=2, workers=0, classes=["cat", "dog"])


def test_grayscale_images_become_three_channels(tmp_path):
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("L", (10, 10), 128).save(folder / f"{i}.png")
    b = build_loaders("folder", tmp_path, batch_size=2, image_size=8, resize_size=8, workers=0)
    x, _ = next(iter(b.train))
    assert x.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    ("setup", "kw", "message"),
    [
        (lambda r: None, {}, "not found"),
        (lambda r: (r / "train").mkdir(parents=True), {}, "no class folders"),
        (lambda r: _tree(r, "train", {"cat": 2}), dict(batch_size=3), "larger than the 2"),
        (lambda r: _tree(r, "train", {"cat": 2}), dict(image_size=0), "must be positive"),
        (lambda r: _tree(r, "train", {"cat": 2}), dict(resize_size=100), "smaller than"),
        (lambda r: (r / "train" / "x").mkdir(parents=True), {}, "no valid file"),
    ],
)
def test_bad_folders_and_numbers(tmp_path, setup, kw, message):
    root = tmp_path / "data"
    setup(root)
    args = dict(batch_size=1, workers=0, image_size=200) | kw
    with pytest.raises(UserError, match=message) as e:
        build_loaders("folder", root, **args)
    assert "\n" not in str(e.value)


def test_an_all_unreadable_training_batch_is_refused_across_processes(tmp_path):
    """Alone it is skipped; under torchrun one rank a batch short would hang the others."""
    _tree(tmp_path, "train", {"cat": 4})
    for i in range(4):
        (tmp_path / "train" / "cat" / f"{i}.png").write_bytes(b"")
    _tree(tmp_path, "train", {"dog": 4})
    kw = dict(batch_size=2, image_size=16, resize_size=20, workers=0, skip_bad_images=True)
    alone = build_loaders("folder", tmp_path, **kw).train
    with pytest.warns(UserWarning, match="unreadable"):
        _, y = _all(alone)
    assert y.tolist() == [1, 1, 1, 1]
    for i in range(4):  # now every batch of every shard is unreadable
        (tmp_path / "train" / "dog" / f"{i}.png").write_bytes(b"")
    for rank in (0, 1):
        shard = build_loaders("folder", tmp_path, rank=rank, world_size=2, **kw).train
        with pytest.warns(UserWarning), pytest.raises(UserError, match="stall the other"):
            _all(shard)
