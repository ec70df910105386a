"""Few labels and imbalanced classes: --classes / --per-class subsets (in memory and in folders),
--class-weights balanced and --sampler balanced."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import CIFAR10_NAMES, write_fake_dataset
from PIL import Image

from resnetlab.cli import main
from resnetlab.data import InMemoryLoader, balanced_class_weights, build_loaders
from resnetlab.data.order import EpochShards
from resnetlab.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the tiny data's counts


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory):
    """200 train images (20 of each class), 50 test (5 of each), and the raw arrays."""
    root = tmp_path_factory.mktemp("cifar")
    return root, write_fake_dataset("cifar10", root, num_train=200, num_test=50)


def rows(images: torch.Tensor) -> list[bytes]:
    return [img.numpy().tobytes() for img in images]


def test_classes_and_per_class_give_n_images_of_each_reindexed_with_the_test_set_filtered(cifar):
    root, ((xtr, ytr), (xte, yte)) = cifar
    b = build_loaders("cifar10", root, batch_size=4, class_subset="5,6,7,8,9", per_class=3)
    assert b.classes == CIFAR10_NAMES[5:] and b.num_classes == 5
    train = b.train
    assert train.dataset_size == 15 and train.labels.bincount().tolist() == [3] * 5
    assert b.train_labels.tolist() == train.labels.tolist()
    raw_of_class = {c: set(rows(torch.from_numpy(xtr[ytr == c]))) for c in range(10)}
    for img, label in zip(rows(train.images), train.labels.tolist(), strict=True):
        assert img in raw_of_class[label + 5]  # an image of the class the new label names
    # The test set: all 25 images of classes 5-9, in order, labels minus 5.
    keep = yte >= 5
    assert b.test.dataset_size == 25
    assert rows(b.test.images) == rows(torch.from_numpy(xte[keep]))
    assert b.test.labels.tolist() == (yte[keep] - 5).tolist()
    # By name, in any order: the same run.
    named = build_loaders("cifar10", root, batch_size=4, class_subset="truck,dog,frog,horse,ship",
                          per_class=3)  # fmt: skip
    assert named.classes == b.classes and torch.equal(named.train.images, train.images)


def test_per_class_picks_by_seed_and_subset_seed(cifar):
    root, _ = cifar

    def picked(**kw) -> set[bytes]:
        return set(
            rows(build_loaders("cifar10", root, batch_size=4, per_class=4, **kw).train.images)
        )

    same, other = picked(seed=0), picked(seed=1)
    assert len(same) == 40 and same == picked(seed=0) and same != other
    assert picked(seed=0, subset_seed=1) == other  # --subset-seed decides, not --seed
    assert picked(seed=5, subset_seed=0) == same


def test_val_split_is_held_out_of_the_kept_classes_before_per_class(cifar):
    root, _ = cifar
    b = build_loaders("cifar10", root, batch_size=4, class_subset="0,1", per_class=5, val_split=6)
    assert b.val.dataset_size == 6 and set(b.val.labels.tolist()) <= {0, 1}
    assert b.train.labels.bincount().tolist() == [5, 5]
    assert not set(rows(b.val.images)) & set(rows(b.train.images))
    with pytest.raises(UserError, match=r"class 'airplane' has only 1\d training images"):
        build_loaders("cifar10", root, batch_size=4, class_subset="0,1", per_class=18, val_split=6)


COLOURS = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cow": (0, 0, 255)}


def test_folder_subsets_filter_every_split(tmp_path: Path):
    for split, n in (("train", 6), ("val", 2)):
        for name, colour in COLOURS.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 20), colour).save(tmp_path / split / name / f"{i}.png")
    b = build_loaders("folder", tmp_path, batch_size=2, image_size=16, resize_size=16, workers=0,
                      class_subset="ant,cow", per_class=2)  # fmt: skip
    assert b.classes == ["ant", "cow"] and b.num_classes == 2
    assert b.train.dataset_size == 4 and sorted(b.train_labels.tolist()) == [0, 0, 1, 1]
    paths = [b.train.dataset.samples[i][0] for i in b.train.indices().tolist()]
    assert sorted(Path(p).parent.name for p in paths) == ["ant", "ant", "cow", "cow"]
    x, y = zip(*b.val, strict=True)
    x, y = torch.cat(x), torch.cat(y)
    assert y.tolist() == [0, 0, 1, 1]  # val/bee left out, cow is 1 now
    blue = x[y == 1][:, :, 0, 0]  # cow's colour survived the re-indexing
    assert (blue[:, 2] > blue[:, 0]).all()


def test_balanced_class_weights_equal_hand_computed_values():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2])  # counts 6, 3, 1 of n = 10
    w = balanced_class_weights(labels, ["a", "b", "c"])
    # n / (k * count): 10 / 18, 10 / 9, 10 / 3
    torch.testing.assert_close(w, torch.tensor([10 / 18, 10 / 9, 10 / 3]))
    assert (w * torch.tensor([6, 3, 1])).sum().item() == pytest.approx(10)  # sums to n
    with pytest.raises(UserError, match="no training images of class c"):
        balanced_class_weights(torch.tensor([0, 1, 1]), ["a", "b", "c"])


def test_balanced_sampler_draws_a_90_10_set_about_evenly_and_reproducibly():
    labels = torch.tensor([0] * 900 + [1] * 100)
    shards = EpochShards(1000, batch_size=10, train=True, seed=7, rank=0, world_size=1,
                         drop_last=False)  # fmt: skip
    assert (labels[shards.indices()] == 1).sum() == 100  # a shuffle: the set as it is
    shards.balance(labels)
    drawn = shards.indices(epoch=0)
    assert len(drawn) == 1000  # the epoch's length is unchanged
    minority = int((labels[drawn] == 1).sum())
    # Binomial(1000, 1/2): sd 15.8, so 400..600 is over six sd either way.
    assert 400 <= minority <= 600, minority
    assert drawn.unique().numel() < 1000  # with replacement
    assert torch.equal(drawn, shards.indices(epoch=0))
    assert not torch.equal(drawn, shards.indices(epoch=1))
    # A sample drawn twice is augmented twice: keys are draw positions, not samples.
    assert shards.augment_keys(drawn).tolist() == list(range(1000))
    # Two ranks share one draw, each taking every other position (as a shuffle is shared).
    ranks = []
    for rank in (0, 1):
        r = EpochShards(1000, batch_size=10, train=True, seed=7, rank=rank, world_size=2,
                        drop_last=False)  # fmt: skip
        r.balance(labels)
        ranks.append(r.indices(epoch=0))
    assert torch.equal(ranks[0], drawn[0::2]) and torch.equal(ranks[1], drawn[1::2])


def test_balanced_sampler_in_the_loader_evens_the_classes_of_an_epoch():
    images = torch.zeros(100, 1, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0] * 90 + [1] * 10)
    ld = InMemoryLoader(images, labels, batch_size=25, mean=(0.5,), std=(0.5,), train=True,
                        augment="crop-flip", padding=1)  # fmt: skip
    ld.balance(labels)
    ys = torch.cat([y for _, y in ld])
    assert len(ys) == 100 and 30 <= int((ys == 1).sum()) <= 70  # from 10: sd 5


def test_a_subset_run_records_its_classes_and_eval_uses_them(
    mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "run"
    argv = ["train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(mnist_root),
            "--epochs", "1", "-b", "16", "--val-split", "64", "--workers", "0",
            "--output-dir", str(out), "--classes", "5,6,7,8,9", "--per-class", "8",
            "--class-weights", "balanced", "--sampler", "balanced"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["classes"], cfg["per_class"], cfg["sampler"]) == ("5,6,7,8,9", 8, "balanced")
    assert cfg["subset_seed"] == cfg["seed"] == 0  # written out: the order that was used
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    capsys.readouterr()
    # eval finds the run's classes in its config.json: 5 classes, their test images only.
    assert main(["eval", "--checkpoint", str(out), "--workers", "0"]) == 0
    raw = np.frombuffer(
        (mnist_root / "MNIST/raw/t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8
    )
    assert f"{int((raw >= 5).sum())} images" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--per-class", "0"], "per-class must be at least 1, got 0"),
        (["--classes", "5,zebra"], "--classes: no class 'zebra' in this dataset"),
        (["--classes", "3,10"], "--classes: no class '10' in this dataset"),
        (["--classes", "4,4"], "names class '4 - four' twice"),
        (["--classes", "7"], "a classifier needs at least two classes"),
        (["--per-class", "1000"], "--per-class 1000: class '0 - zero' has only"),
        (["--sampler", "weighted"], "invalid choice: 'weighted'"),
    ],
)
def test_bad_subsets_are_one_line_and_exit_2(
    mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
):
    out = tmp_path / "run"
    argv = ["train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(mnist_root),
            "--epochs", "1", "--val-split", "64", "--output-dir", str(out), *flags]  # fmt: skip
    with pytest.raises(SystemExit) if "choice" in message else contextlib.nullcontext() as stop:
        code = main(argv)
    code = stop.value.code if stop else code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
