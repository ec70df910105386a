"""`resnetlab predict` and resnetlab.inference.predict: preprocessing from the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TrainedRun
from fakedata import read_idx
from PIL import Image
from torch import nn

from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.inference.predict import find_images, predict, preprocess_fn
from resnetlab.models import create_model
from resnetlab.models.weights import load_checkpoint, save_weights

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
META = {
    "model": "resnet20",
    "num_classes": 10,
    "in_channels": 3,
    "model_kwargs": {},
    "dataset": "cifar10",
    "classes": CLASSES,
    "mean": MEAN,
    "std": STD,
    "input_size": [3, 32, 32],
    "resize_size": None,
    "epoch": 1,
    "iteration": 391,
    "resnetlab_version": "0.1.0",
}


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights and non-default BatchNorm statistics: a model that is not the identity
    of a fresh init, yet keeps activations in a sane range."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


def save_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def random_pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Noise over a random tint, so that images differ enough to get different classes."""
    rng = np.random.default_rng(seed)
    tint = rng.uniform(0, 255, shape[2:] or (1,))
    return (0.7 * tint + 0.3 * rng.uniform(0, 255, shape)).round().astype(np.uint8).reshape(shape)


def by_hand(
    model: nn.Module, pixels: np.ndarray, mean: list[float], std: list[float]
) -> torch.Tensor:
    """Softmax of the model on HWC (or HW) uint8 pixels, normalised the textbook way."""
    x = torch.from_numpy(pixels.astype(np.float64) / 255.0)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    x = (x - torch.tensor(mean, dtype=x.dtype)[:, None, None]) / torch.tensor(std, dtype=x.dtype)[
        :, None, None
    ]
    with torch.no_grad():
        return torch.softmax(model(x[None].float()), dim=1)[0]


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    run = tmp_path_factory.mktemp("run")
    model = randomise(create_model("resnet20"))
    save_weights(run / "best.safetensors", model, META)
    return run, model


def check(pred, probs: torch.Tensor, k: int, atol: float = 1e-5) -> None:
    values, indices = probs.topk(k)
    assert [i for i, _, _ in pred.topk] == indices.tolist()
    assert [name for _, name, _ in pred.topk] == [CLASSES[i] for i in indices.tolist()]
    assert np.allclose([p for _, _, p in pred.topk], values.tolist(), atol=atol)


def test_top_k_matches_the_model_run_by_hand(tmp_path: Path, cifar_run) -> None:
    run, model = cifar_run
    images = [save_png(tmp_path / f"img{i}.png", random_pixels(i, (32, 32, 3))) for i in range(5)]
    preds = predict(run, images, topk=3, batch_size=2, precision="fp32")
    assert [p.image for p in preds] == [str(p) for p in images]
    tops = set()
    for pred, image in zip(preds, images, strict=True):
        check(pred, by_hand(model, np.asarray(Image.open(image)), MEAN, STD), 3)
        tops.add(round(pred.topk[0][2], 6))
    assert len(tops) == len(images)  # each image got its own answer


def test_top_k_is_capped_at_the_classes_and_sums_to_one(tmp_path: Path, cifar_run) -> None:
    run, model = cifar_run
    image = save_png(tmp_path / "a.png", random_pixels(7, (32, 32, 3)))
    (pred,) = predict((model, META), image, topk=50)
    probs = [p for _, _, p in pred.topk]
    assert len(probs) == 10 and probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_other_sizes_are_resized_to_the_input_size(tmp_path: Path, cifar_run) -> None:
    """resnet20 would run on 64x64 too (global pooling): the input must be the 32x32 one."""
    run, model = cifar_run
    pixels = random_pixels(3, (64, 64, 3))
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].double() / 255
    small = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    expected = ((small[0].float() - mean) / std).float()
    got = preprocess_fn(META)(torch.from_numpy(pixels).permute(2, 0, 1))
    assert got.shape == (3, 32, 32)
    assert torch.allclose(got, expected, atol=1.01 / 255 / min(STD))  # uint8 rounding
    image = save_png(tmp_path / "big.png", pixels)
    (pred,) = predict(run, image, topk=10, precision="fp32")
    with torch.no_grad():
        check(pred, torch.softmax(model(got[None]), dim=1)[0], 10)


def test_folder_models_resize_then_centre_crop(tmp_path: Path, cifar_run) -> None:
    run, model = cifar_run
    meta = {**META, "resize_size": 40}
    # Already 40 pixels on the shorter side, so the resize keeps it and the crop is exact:
    # rows 4..36 and columns (56 - 32) / 2 = 12..44.
    pixels = random_pixels(11, (40, 56, 3))
    image = save_png(tmp_path / "wide.png", pixels)
    (pred,) = predict((model, meta), image, topk=10, precision="fp32")
    check(pred, by_hand(model, pixels[4:36, 12:44], MEAN, STD), 10)


def test_grayscale_model_gets_one_channel(tmp_path: Path) -> None:
    model = randomise(create_model("mnist_cnn"))
    meta = {**META, "model": "mnist_cnn", "in_channels": 1, "input_size": [1, 28, 28]}
    meta.update(mean=[0.1307], std=[0.3081], classes=[str(i) for i in range(10)])
    gray = random_pixels(5, (28, 28))
    as_l = save_png(tmp_path / "gray.png", gray)
    # The same picture stored as RGB: every channel equal, so any luma formula gives it back.
    as_rgb = save_png(tmp_path / "rgb.png", np.repeat(gray[:, :, None], 3, axis=2))
    pred_l, pred_rgb = predict((model, meta), [as_l, as_rgb], topk=10, precision="fp32")
    probs = by_hand(model, gray, [0.1307], [0.3081])
    for pred in (pred_l, pred_rgb):
        assert [i for i, _, _ in pred.topk] == probs.topk(10).indices.tolist()
        assert np.allclose([p for _, _, p in pred.topk], probs.topk(10).values.tolist(), atol=1e-5)


def test_tensors_and_paths_keep_their_order(tmp_path: Path, cifar_run) -> None:
    run, model = cifar_run
    pixels = random_pixels(2, (32, 32, 3))
    image = save_png(tmp_path / "p.png", pixels)
    tensor = torch.from_numpy(random_pixels(4, (32, 32, 3))).permute(2, 0, 1).contiguous()
    preds = predict((model, META), [tensor, image], topk=1, precision="fp32")
    assert [p.image for p in preds] == ["<tensor 0>", str(image)]
    check(preds[1], by_hand(model, pixels, MEAN, STD), 1)
    with pytest.raises(UserError, match="topk"):
        predict((model, META), image, topk=0)


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(tmp_path: Path, cifar_run) -> None:
    from resnetlab.device import native_bf16

    run, _ = cifar_run
    image = save_png(tmp_path / "a.png", random_pixels(11, (32, 32, 3)))
    (fp32,) = predict(run, image, topk=10, precision="fp32")
    (auto,) = predict(run, image, topk=10)
    exact, rounded = ({i: p for i, _, p in pred.topk} for pred in (fp32, auto))
    diff = max(abs(exact[i] - rounded[i]) for i in exact)
    if native_bf16("cpu"):
        assert 0 < diff <= 2e-2  # bf16 ran: 8 significant bits, probabilities near 0.1
    else:
        assert diff == 0


def test_folders_are_walked_for_images(tmp_path: Path) -> None:
    for name in ["b.png", "a/x.jpg", "a/y.JPEG", "a/.hidden.png", ".cache/z.png", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])]
    assert found == ["b.png", "a/x.jpg", "a/y.JPEG"] or found == ["a/x.jpg", "a/y.JPEG", "b.png"]


def test_cli_unreadable_image_gets_a_line_and_exit_1(
    tmp_path: Path, cifar_run, capsys: pytest.CaptureFixture[str]
) -> None:
    run, model = cifar_run
    good = save_png(tmp_path / "good.png", random_pixels(1, (32, 32, 3)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    missing = tmp_path / "missing.jpg"
    code = main(
        ["predict", "--checkpoint", str(run), str(bad), str(good), str(missing), "--topk", "2"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert str(good) in out and str(bad) not in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and str(bad) in lines[0] and str(missing) in lines[1]
    probs = by_hand(model, np.asarray(Image.open(good)), MEAN, STD)
    top = CLASSES[int(probs.argmax())]
    assert out.splitlines()[1].split()[:2] == ["1", top]
    assert out.splitlines()[1].endswith(f"{100 * float(probs.max()):.2f}%")


def test_cli_json(tmp_path: Path, cifar_run, capsys: pytest.CaptureFixture[str]) -> None:
    run, model = cifar_run
    folder = tmp_path / "imgs"
    for i in range(3):
        save_png(folder / f"{i}.png", random_pixels(20 + i, (32, 32, 3)))
    code = main(
        ["predict", "--checkpoint", str(run / "best.safetensors"), str(folder), "--json", "-b", "2"]
        + ["--precision", "fp32"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [Path(r["image"]).name for r in out] == ["0.png", "1.png", "2.png"]
    for record in out:
        probs = by_hand(model, np.asarray(Image.open(record["image"])), MEAN, STD)
        assert [t["index"] for t in record["top"]] == probs.topk(5).indices.tolist()
        assert [t["rank"] for t in record["top"]] == [1, 2, 3, 4, 5]
        assert record["top"][0]["class"] == CLASSES[int(probs.argmax())]
        assert record["top"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_cli_bad_input_is_exit_2(
    tmp_path: Path, cifar_run, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = cifar_run
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--checkpoint", str(run), str(tmp_path / "empty")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "no such weights file" in capsys.readouterr().err


def test_a_trained_runs_folder_predicts_its_own_test_images(
    trained_run: TrainedRun, mnist_root: Path, mnist_test_set: tuple, tmp_path: Path
) -> None:
    """The preprocessing predict reads from a checkpoint training wrote (1 channel, MNIST's
    mean and std) gives the probabilities of the hand-normalised idx images."""
    model, meta = load_checkpoint(trained_run.path / "best.safetensors")
    raw = read_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    images = [save_png(tmp_path / f"{i}.png", raw[i]) for i in range(6)]
    preds = predict(trained_run.path, images, topk=3, batch_size=4, precision="fp32")
    x, _ = mnist_test_set
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x[:6]), dim=1)
    for pred, p in zip(preds, probs, strict=True):
        values, indices = p.topk(3)
        assert [i for i, _, _ in pred.topk] == indices.tolist()
        assert [name for _, name, _ in pred.topk] == [meta["classes"][i] for i in indices]
        assert np.allclose([q for _, _, q in pred.topk], values.tolist(), atol=1e-5)
