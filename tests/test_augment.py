"""Augmentation beyond crop and flip: auto-augment policies and random erasing (per image, in
memory and in folders), MixUp and CutMix (per batch, soft targets), and their exact resume."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_resume import assert_same_weights, metrics
from torchvision.transforms import v2

from resnetlab.cli import main
from resnetlab.data import InMemoryLoader
from resnetlab.data.folder import folder_transform
from resnetlab.data.mix import MixedLoader, batch_mix
from resnetlab.data.policies import POLICIES, PerImage, auto_augment_policy, random_erasing
from resnetlab.training import checkpoint as ckpt

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the tiny data's counts

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def loader(images: torch.Tensor, labels: torch.Tensor, **kw) -> InMemoryLoader:
    c = images.shape[1]
    kw = {"batch_size": len(images), "train": True, "augment": "none", "seed": 4, **kw}
    return InMemoryLoader(images, labels, mean=MEAN[:c], std=STD[:c], **kw)


def distinct_batch(n: int = 8, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 noise images (no two pixels of two images likely equal) with n different labels."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), torch.arange(
        n
    )


def partners(target: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From soft targets alone: each row's own weight and the batch row it was mixed with."""
    own = target.gather(1, y[:, None]).squeeze(1)
    other = target.clone()
    other.scatter_(1, y[:, None], 0.0)
    partner_label = other.argmax(1)
    partner_row = torch.tensor([int((y == c).nonzero()) for c in partner_label])
    return own, partner_row


def both(mixed: MixedLoader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plain batch and the same batch mixed (epoch as set)."""
    (x, y), (xm, t) = next(iter(mixed.loader)), next(iter(mixed))
    return x, y, xm, t


def test_mixup_images_are_the_convex_mix_the_targets_say():
    images, labels = distinct_batch()
    mixed = MixedLoader(loader(images, labels), batch_mix(8, mixup_alpha=0.4, cutmix_alpha=0.0))
    for epoch in range(3):
        mixed.set_epoch(epoch)
        x, y, xm, t = both(mixed)
        assert t.shape == (8, 8) and t.dtype == torch.float32
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        assert ((t > 0).sum(1) <= 2).all()  # two classes at most in each target
        lam, j = partners(t, y)
        assert torch.allclose(lam, lam[0]) and 0 < lam[0] < 1  # one lambda for the batch
        assert sorted(j.tolist()) == list(range(8)) and (j != torch.arange(8)).all()
        want = lam[0] * x + (1 - lam[0]) * x[j]  # lambda x_i + (1 - lambda) x_j
        torch.testing.assert_close(xm, want, atol=1e-5, rtol=1e-5)


def test_cutmix_pastes_a_rectangle_of_the_partner_weighted_by_its_area():
    images, labels = distinct_batch(size=16)
    mixed = MixedLoader(loader(images, labels), batch_mix(8, mixup_alpha=0.0, cutmix_alpha=1.0))
    pasted = 0
    for epoch in range(4):
        mixed.set_epoch(epoch)
        x, y, xm, t = both(mixed)
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        own, j = partners(t, y)
        for i in range(8):
            changed = (xm[i] != x[i]).any(0)  # [H, W]
            area = int(changed.sum())
            assert own[i].item() == pytest.approx(1 - area / (16 * 16), abs=1e-6)
            if not area:
                continue
            rows, cols = changed.any(1).nonzero().squeeze(1), changed.any(0).nonzero().squeeze(1)
            top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            assert area == (bottom - top) * (right - left)  # a full rectangle
            box = (slice(None), slice(top, bottom), slice(left, right))
            assert torch.equal(xm[i][box], x[j[i]][box])  # from the other image
            assert torch.equal(xm[i][:, ~changed], x[i][:, ~changed])
            pasted += 1
    assert pasted  # some batch really was cut and mixed


def test_mixing_is_reproducible_and_leaves_the_global_rng_alone():
    images, labels = distinct_batch()
    mix = batch_mix(8, mixup_alpha=1.0, cutmix_alpha=1.0)  # one of the two per batch
    assert isinstance(mix, v2.RandomChoice) and batch_mix(8, 0.0, 0.0) is None
    first, second = (MixedLoader(loader(images, labels), mix) for _ in range(2))
    before = torch.get_rng_state()
    a, b = list(first), list(second)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )
    second.set_epoch(1)
    assert not torch.equal(next(iter(second))[0], a[0][0])
    assert first.dataset_size == 8 and first.images.shape == (8, 3, 12, 12)  # passed through


def test_label_smoothing_combines_with_soft_targets():
    """What the loss does with both: CrossEntropyLoss smooths the probability target p to
    (1 - eps) p + eps / K and then takes its cross-entropy (weights multiply each class)."""
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    p = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), 1)
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    smoothed = 0.9 * p + 0.1 / 4
    by_hand = -(w * smoothed * F.log_softmax(logits, 1)).sum(1).mean()
    loss = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)(logits, p)
    torch.testing.assert_close(loss, by_hand)


@pytest.mark.parametrize("name", [p for p in POLICIES if p != "none"])
def test_policies_change_in_memory_images_and_keep_shape_and_dtype(name):
    images, labels = distinct_batch(size=32)  # CIFAR's side
    policy = PerImage(auto_augment_policy(name), None)
    seeds = PerImage.seeds(0, 0, 8)
    out = policy.apply_policy(images, seeds[:, 0])
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    # Image i depends on its seed alone, not on the batch it came in (re-sharding, resume).
    alone = policy.apply_policy(images[3:4], seeds[3:4, 0])
    assert torch.equal(alone[0], out[3])


def test_auto_augment_in_the_loader_is_reproducible_from_the_seed():
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (16, 1, 28, 28), generator=g, dtype=torch.uint8)  # MNIST-like
    labels = torch.arange(16) % 4
    per_image = PerImage(auto_augment_policy("ta_wide"), None)
    plain = loader(images, labels, batch_size=8, augment="crop-flip")
    a, b = (loader(images, labels, batch_size=8, augment="crop-flip", per_image=per_image)
            for _ in range(2))  # fmt: skip
    before = torch.get_rng_state()
    xa, xb, xp = (torch.cat([x for x, _ in ld]) for ld in (a, b, plain))
    assert torch.equal(torch.get_rng_state(), before)
    assert xa.shape == xp.shape == (16, 1, 28, 28) and xa.dtype == torch.float32
    assert torch.equal(xa, xb) and not torch.equal(xa, xp)
    changed = (xa != xp).flatten(1).any(1)
    assert changed.sum() >= 12  # most images, not one
    b.set_epoch(1)
    assert not torch.equal(torch.cat([x for x, _ in b]), xa)
    evaluation = loader(images, labels, train=False, per_image=per_image)
    assert evaluation.per_image is None  # never on evaluation


def test_random_erase_with_p1_erases_a_rectangle_of_every_image():
    images, labels = distinct_batch(size=16)
    erased = loader(images, labels, per_image=PerImage(None, random_erasing(1.0)))
    x, _ = next(iter(erased))
    plain, _ = next(iter(loader(images, labels)))
    assert not (plain == 0).any()  # 255 * mean is no integer: 0 only where erased
    for i in range(8):
        zero = (x[i] == 0).all(0)
        rows, cols = zero.any(1).nonzero().squeeze(1), zero.any(0).nonzero().squeeze(1)
        area = int(zero.sum())
        assert area >= 0.02 * 16 * 16 * 0.9  # RandomErasing's smallest scale, rounded
        assert area == len(rows) * len(cols)  # one rectangle
        assert torch.equal(x[i][:, ~zero], plain[i][:, ~zero])
    assert random_erasing(0.0) is None


def test_folder_transform_places_the_policy_and_erasing_as_torchvision_presets():
    policy, erasing = auto_augment_policy("ra", ra_magnitude=5), random_erasing(0.25)
    steps = folder_transform("crop-flip", 32, 36, policy, erasing).transforms
    kinds = [type(t) for t in steps]
    assert kinds == [
        v2.ToImage, v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandAugment,
        v2.ToDtype, v2.Normalize, v2.RandomErasing,
    ]  # fmt: skip
    assert steps[3].magnitude == 5 and steps[-1].p == 0.25
    assert auto_augment_policy("augmix", augmix_severity=7).severity == 7
    assert isinstance(auto_augment_policy("imagenet"), v2.AutoAugment)
    assert [type(t) for t in folder_transform("crop-flip", 32, 36).transforms] == [
        v2.ToImage, v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ToDtype, v2.Normalize,
    ]  # fmt: skip


def run_args(data_root: Path, out: Path) -> list[str]:
    # 384 - 224 held out: 160 training images, 5 steps of 32, 3 epochs
    return [
        "train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(data_root),
        "--epochs", "3", "-b", "32", "--val-split", "224", "--workers", "0", "--seed", "3",
        "--print-freq", "2", "--output-dir", str(out), "--precision", "fp32",
        "--auto-augment", "ta_wide", "--random-erase", "0.5", "--mixup-alpha", "0.2",
        "--cutmix-alpha", "1.0", "--sampler", "balanced", "--class-weights", "balanced",
        "--label-smoothing", "0.1",
    ]  # fmt: skip


def test_resume_is_bit_exact_with_augmentation_mixing_and_the_balanced_sampler(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after epoch 1 and resumed = uninterrupted: every new random draw is a
    function of (seed, epoch, key), none moves the RNG state the checkpoint holds."""
    reference, out = tmp_path / "reference", tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(run_args(mnist_root, reference)) == 0
    import resnetlab.training.run_folder as run_folder

    real = run_folder.RunFolder.commit_epoch

    def stop_after_epoch_1(self, state, published, meta, run, plot):  # noqa: ANN001
        real(self, state, published, meta, run, plot)
        if run.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_folder.RunFolder, "commit_epoch", stop_after_epoch_1)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(run_args(mnist_root, out)) == 130
    monkeypatch.undo()
    assert ckpt.load_state(out / ckpt.STATE_FILE)["run"]["epoch"] == 1
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--resume", str(out)]) == 0
    assert metrics(out) == metrics(reference) and len(metrics(out)) == 3
    assert_same_weights(out / ckpt.LAST_WEIGHTS, reference / ckpt.LAST_WEIGHTS)
    assert_same_weights(out / ckpt.BEST_WEIGHTS, reference / ckpt.BEST_WEIGHTS)
    # ...and the options did something: the same run without them ends elsewhere.
    plain = tmp_path / "plain"
    args = run_args(mnist_root, plain)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args[: args.index("--auto-augment")]) == 0
    a, b = load_file(str(plain / ckpt.LAST_WEIGHTS)), load_file(str(out / ckpt.LAST_WEIGHTS))
    assert not all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--auto-augment", "rand"], "invalid choice: 'rand'"),
        (["--random-erase", "2"], "random-erase must be a probability in [0, 1], got 2.0"),
        (["--mixup-alpha", "-0.5"], "mixup-alpha must not be negative"),
        (["--cutmix-alpha", "nan"], "cutmix-alpha must not be negative"),
        (["--ra-magnitude", "31"], "ra-magnitude must be in 0..30"),
        (["--augmix-severity", "0"], "augmix-severity must be in 1..10"),
    ],
)
def test_bad_augmentation_settings_are_one_line_and_exit_2(
    mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(mnist_root)]
    with pytest.raises(SystemExit) if "choice" in message else contextlib.nullcontext() as stop:
        code = main([*args, "--epochs", "1", "--output-dir", str(out), *flags])
    code = stop.value.code if stop else code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
