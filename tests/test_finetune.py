"""`resnetlab train --weights`: torchvision names through torch.hub's cache (offline here),
local files, the head and stem adapted to the data, and refusals in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import TrainedRun
from fakedata import write_cifar10
from interrupt import stopped_after_epoch_2
from PIL import Image
from safetensors.torch import load_file
from torchvision.models import ResNet18_Weights, get_weight

from resnetlab.cli import main
from resnetlab.models import create_model, get_model_entry
from resnetlab.models.pretrained import (
    adapt,
    adapt_stem_weight,
    meta_preprocessing,
    torchvision_preprocessing,
)
from resnetlab.models.weights import read_weights, save_weights
from resnetlab.training.config import TrainConfig, fill_recipe, merge
from resnetlab.training.engine import weights_preprocessing
from resnetlab.training.freeze import head_parameters
from resnetlab.training.optim import build_optimizer
from resnetlab.training.schedule import LrSchedule, build_scheduler

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NAME = "ResNet18_Weights.IMAGENET1K_V1"
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """torchvision's resnet18 (random init) as the cached ImageNet file; no download allowed."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return state


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for split, n in (("train", 4), ("val", 2)):
        for k, colour in enumerate(COLOURS):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40), tuple(c // (i + 1) for c in colour)).save(
                    folder / f"{i}.png"
                )
    return root


def train(images: Path, out: Path, *extra: str) -> int:
    return main([
        "train", "--model", "resnet18", "--dataset", "folder", "--data-path", str(images),
        "--epochs", "1", "-b", "4", "--workers", "0", "--image-size", "32",
        "--resize-size", "36", "--precision", "fp32", "--output-dir", str(out), *extra,
    ])  # fmt: skip


def test_a_torchvision_name_loads_from_the_hub_cache_and_the_head_is_reinitialised(
    hub: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert train(images, run, "--weights", NAME, "--lr", "1e-9", "--wd", "0") == 0
    out = capsys.readouterr().out
    assert "notice: fc re-initialised for 3 classes (weights: 1000 x 512, now 3 x 512)" in out
    state, meta = read_weights(run)
    assert state["fc.weight"].shape == (3, 512)
    # lr 1e-9: one step moves conv1 by at most ~1e-9 from the cached file's weights.
    torch.testing.assert_close(state["conv1.weight"], hub["conv1.weight"], atol=1e-6, rtol=0)
    fresh = create_model("resnet18", num_classes=3).state_dict()["conv1.weight"]
    assert not torch.allclose(fresh, hub["conv1.weight"], atol=1e-3)  # not the default init
    assert json.loads((run / "config.json").read_text())["weights"] == NAME


def test_a_run_folder_is_a_weights_source(
    hub: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = tmp_path / "first"
    assert train(images, first, "--weights", NAME) == 0
    second = tmp_path / "second"
    assert train(images, second, "--weights", str(first), "--lr", "1e-9", "--wd", "0") == 0
    assert "re-initialised" not in capsys.readouterr().out.split("first")[-1]
    a, _ = read_weights(first)
    b, _ = read_weights(second)
    torch.testing.assert_close(b["fc.weight"], a["fc.weight"], atol=1e-6, rtol=0)


def test_grayscale_stem_is_the_sum_of_the_rgb_filters(capsys: pytest.CaptureFixture) -> None:
    rgb = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)  # 0..5
    assert adapt_stem_weight(rgb, 1).flatten().tolist() == [0 + 1 + 2, 3 + 4 + 5]
    # 4 channels: R G B R, times 3/4.
    assert adapt_stem_weight(rgb, 4)[0].flatten().tolist() == [0, 0.75, 1.5, 0]
    assert adapt_stem_weight(rgb, 4)[1].flatten().tolist() == [2.25, 3, 3.75, 2.25]

    state = torchvision.models.resnet18().state_dict()
    gray = create_model("resnet18", num_classes=1000, in_channels=1)
    adapted = adapt(gray, state)
    notice = "notice: conv1 adapted to 1 input channel (weights: 64 x 3 x 7 x 7, now 64 x 1 x 7 x 7"
    assert notice in capsys.readouterr().out
    w = state["conv1.weight"]
    torch.testing.assert_close(adapted["conv1.weight"][:, 0], w[:, 0] + w[:, 1] + w[:, 2])
    gray.load_state_dict(adapted)


def test_grayscale_data_train_from_rgb_weights_with_their_own_normalisation(
    hub: dict, mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--model", "resnet18", "--dataset", "mnist", "--data-path", str(mnist_root),
            "--iterations", "1", "-b", "32", "--val-split", "64", "--workers", "0",
            "--precision", "fp32", "--lr", "1e-9", "--wd", "0", "--output-dir", str(run),
            "--weights", NAME]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "notice: conv1 adapted to 1 input channel (weights: 64 x 3 x 7 x 7, now 64 x 1" in out
    assert "notice: fc re-initialised for 10 classes" in out
    assert "not 1: kept the data's" in out
    state, meta = read_weights(run)
    w = hub["conv1.weight"]
    rgb_sum = w[:, 0:1] + w[:, 1:2] + w[:, 2:3]
    torch.testing.assert_close(state["conv1.weight"], rgb_sum, atol=1e-6, rtol=0)
    assert (meta["mean"], meta["std"]) == ([0.1307], [0.3081])  # MNIST's, one channel


def test_cifar_data_take_the_imagenet_normalisation_of_imagenet_weights(
    hub: dict, tmp_path: Path
) -> None:
    root = write_cifar10(tmp_path / "cifar", per_batch=8, n_test=8)
    run = tmp_path / "run"
    argv = ["train", "--model", "resnet18", "--dataset", "cifar10", "--data-path", str(root),
            "--iterations", "1", "-b", "8", "--val-split", "0", "--workers", "0",
            "--precision", "fp32", "--output-dir", str(run), "--weights", NAME]  # fmt: skip
    assert main(argv) == 0
    _, meta = read_weights(run)
    assert (meta["mean"], meta["std"]) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert meta["input_size"] == [3, 32, 32]  # in memory: the images keep their size


def test_a_broken_cached_file_is_one_line_exit_2(
    hub: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    cached.write_bytes(b"not a checkpoint")
    code = train(images, tmp_path / "run", "--weights", NAME)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"cannot read {cached} (" in err and "replace it with https://" in err


@pytest.mark.parametrize(
    "weights, message",
    [
        ("ResNet18_Weights.NOPE", "unknown weights 'ResNet18_Weights.NOPE'"),
        ("ResNet50_Weights.DEFAULT", "are weights of resnet50, not of resnet18"),
        ("ResNet34_Weights.IMAGENET1K_V1", "put resnet34-b627a593.pth in "),
    ],
)  # fmt: skip
def test_bad_weights_are_one_line_exit_2(
    hub: dict,
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    weights: str,
    message: str,
) -> None:
    if weights.startswith("ResNet34"):
        args = ["--model", "resnet34"]
        message += str(tmp_path / "hub" / "checkpoints")
    else:
        args = []
    code = train(images, tmp_path / "run", "--weights", weights, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_a_file_of_another_architecture_is_one_line_exit_2(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    file = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), file)
    code = train(images, tmp_path / "run", "--weights", str(file))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "do not match" in err, err


def test_freeze_trains_only_the_head_and_keeps_the_bn_statistics(
    hub: dict, images: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert train(images, run, "--weights", NAME, "--freeze", "--lr", "0.1") == 0
    state, _ = read_weights(run)
    assert state["fc.weight"].shape == (3, 512)
    still = tmp_path / "still"  # the same seed, so the same new head, barely moved
    assert train(images, still, "--weights", NAME, "--freeze", "--lr", "1e-9") == 0
    initial, _ = read_weights(still)
    assert (state["fc.weight"] - initial["fc.weight"]).abs().max() > 1e-3  # the head learned
    for key, cached in hub.items():
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(state[key], cached), key  # weights and BN running stats


def test_backbone_lr_scale_gives_the_backbone_groups_a_share_of_the_lr() -> None:
    model = create_model("resnet20")
    head = head_parameters(model)
    opt = build_optimizer(model, "sgd", 0.1, 0.9, False, 1e-4, True, 0.25, head)
    fc = {id(model.fc.weight), id(model.fc.bias)}
    groups = [({id(p) for p in g["params"]}, g["lr"], g["weight_decay"]) for g in opt.param_groups]
    backbone = [g for g in groups if not g[0] & fc]
    top = [g for g in groups if g[0] & fc]
    assert all(ids.isdisjoint(fc) and lr == pytest.approx(0.025) for ids, lr, _ in backbone)
    assert all(ids <= fc and lr == 0.1 for ids, lr, _ in top)
    assert groups[0][0] <= fc  # group 0's lr is the one logged: --lr, the head's
    assert sorted(wd for *_, wd in top) == [0.0, 1e-4]  # fc.bias undecayed, fc.weight decayed
    everything = set().union(*(ids for ids, *_ in groups))
    assert everything == {id(p) for p in model.parameters()}
    # The schedule scales every group's own base lr: the ratio holds at every step.
    sched = build_scheduler(opt, LrSchedule(name="cosine", total=10, steps_per_epoch=5))
    for _ in range(3):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert min(lrs) / max(lrs) == pytest.approx(0.25)


@pytest.mark.parametrize("model, dataset", [("resnet18", "folder"), ("resnet110", "cifar10")])
def test_the_finetune_recipe_is_short_warmed_up_and_cosine(model: str, dataset: str) -> None:
    family = get_model_entry(model).family
    cfg = fill_recipe(merge({}, dict(model=model, dataset=dataset, recipe="finetune")), family)
    assert (cfg.epochs, cfg.iterations, cfg.lr, cfg.schedule) == (10, None, 0.01, "cosine")
    assert (cfg.warmup_epochs, cfg.warmup_method, cfg.label_smoothing) == (1.0, "linear", 0.1)
    assert (cfg.batch_size, cfg.weight_decay, cfg.no_wd_norm_bias) == (64, 1e-4, True)
    assert cfg.recipe == "finetune" and cfg.momentum == 0.9  # the rest is the default recipe's
    given = fill_recipe(
        merge({}, dict(model=model, dataset=dataset, recipe="finetune", lr=0.1)), family
    )
    assert given.lr == 0.1


def test_folder_preprocessing_follows_the_torchvision_weights_unless_given(
    capsys: pytest.CaptureFixture,
) -> None:
    # torchvision's documented eval presets: V1 resize 256 crop 224, ResNet50's V2 resize 232.
    v1 = torchvision_preprocessing(get_weight(NAME))
    assert (v1["image_size"], v1["resize_size"]) == (224, 256)
    assert v1["mean"] == (0.485, 0.456, 0.406) and v1["std"] == (0.229, 0.224, 0.225)
    v2 = torchvision_preprocessing(get_weight("ResNet50_Weights.IMAGENET1K_V2"))
    assert (v2["image_size"], v2["resize_size"]) == (224, 232)

    cfg = TrainConfig(model="resnet18", dataset="folder", weights=NAME)
    assert weights_preprocessing(cfg, v1, 3, print) == (v1["mean"], v1["std"])
    assert (cfg.image_size, cfg.resize_size) == (224, 256)
    assert capsys.readouterr().out == (
        f"notice: preprocessing from {NAME}: resize 256, crop 224, "
        "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]\n"
    )
    given = TrainConfig(model="resnet18", dataset="folder", weights=NAME, image_size=112)
    weights_preprocessing(given, v1, 3, print)
    assert (given.image_size, given.resize_size) == (112, 128)  # 256:224 kept
    assert "resize 128 (its 256:224 ratio), mean" in capsys.readouterr().out
    both = TrainConfig(
        model="resnet18", dataset="folder", weights=NAME, image_size=32, resize_size=36
    )
    weights_preprocessing(both, v1, 3, print)
    assert (both.image_size, both.resize_size) == (32, 36)
    assert "resize" not in capsys.readouterr().out


def test_in_memory_data_keep_their_sizes_and_take_a_mean_of_their_channel_count(
    capsys: pytest.CaptureFixture,
) -> None:
    v1 = torchvision_preprocessing(get_weight(NAME))
    cifar = TrainConfig(model="resnet18", dataset="cifar10", weights=NAME)
    assert weights_preprocessing(cifar, v1, 3, print) == (v1["mean"], v1["std"])
    assert cifar.image_size is None and cifar.resize_size is None
    assert "resize" not in capsys.readouterr().out
    mnist = TrainConfig(model="resnet18", dataset="mnist", weights=NAME)
    assert weights_preprocessing(mnist, v1, 1, print) is None  # 3 values for 1 channel
    assert capsys.readouterr().out == (
        f"notice: preprocessing from {NAME}: none "
        "(its mean and std are for 3 channels, not 1: kept the data's)\n"
    )


def test_our_checkpoints_meta_gives_the_preprocessing() -> None:
    folder = {"input_size": [3, 160, 160], "resize_size": 176, "mean": [0.5] * 3, "std": [0.2] * 3}
    assert meta_preprocessing(folder) == {
        "image_size": 160, "resize_size": 176, "mean": (0.5,) * 3, "std": (0.2,) * 3
    }  # fmt: skip
    # Trained in memory: whole 32 x 32 images, so a folder is resized to 32, not cropped from 256.
    cifar = {"input_size": [3, 32, 32], "resize_size": None, "mean": [0.4] * 3, "std": [0.2] * 3}
    sides = meta_preprocessing(cifar)
    assert (sides["image_size"], sides["resize_size"]) == (32, 32)
    assert meta_preprocessing({}) == {}  # a foreign .pth says nothing


def test_a_run_folder_of_another_model_is_one_line_exit_2(
    trained_run: TrainedRun, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = train(images, tmp_path / "run", "--weights", str(trained_run.path))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "holds weights of mnist_cnn, not of resnet18" in err
    assert not (tmp_path / "run").exists()


@pytest.fixture
def ours(tmp_path: Path) -> Path:
    """A resnet20 file of ours (10 classes) whose metadata ask for a mean and std unlike
    ImageNet's, and for 32 px images resized to 36."""
    torch.manual_seed(2)
    file = tmp_path / "ours.safetensors"
    meta = {"model": "resnet20", "num_classes": 10, "input_size": [3, 32, 32],
            "resize_size": 36, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
    save_weights(file, create_model("resnet20", num_classes=10), meta)
    return file


def resume_argv(images: Path, out: Path, weights: Path) -> list[str]:
    return ["train", "--model", "resnet20", "--dataset", "folder", "--data-path", str(images),
            "--epochs", "3", "-b", "4", "--workers", "0", "--precision", "fp32",
            "--output-dir", str(out), "--weights", str(weights)]  # fmt: skip


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), a.name


def test_a_run_from_weights_resumes_bit_exactly_without_reading_them_again(
    ours: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference"
    assert main(resume_argv(images, reference, ours)) == 0
    config = json.loads((reference / "config.json").read_text())
    assert (config["image_size"], config["resize_size"], config["weights"]) == (32, 36, str(ours))
    _, meta = read_weights(reference / "last.safetensors")
    assert (meta["mean"], meta["std"]) == ([0.5] * 3, [0.25] * 3)  # the file's, not ImageNet's

    run = tmp_path / "run"
    stopped_after_epoch_2(resume_argv(images, run, ours), monkeypatch)
    ours.rename(ours.with_suffix(".gone"))  # resume must read its checkpoint, not the weights
    assert main(["train", "--resume", str(run)]) == 0
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(run / name, reference / name)

    # Stopped in epoch 1, before any checkpoint: the resumed run starts from the weights again.
    ours.with_suffix(".gone").rename(ours)
    early = tmp_path / "early"
    import resnetlab.training.checkpoint as ckpt

    def stop(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_state", stop)
    assert main(resume_argv(images, early, ours)) == 130
    monkeypatch.undo()
    assert main(["train", "--resume", str(early)]) == 0
    assert_same_weights(early / "last.safetensors", reference / "last.safetensors")


def test_a_head_of_other_classes_is_reinitialised_even_when_the_count_matches(
    capsys: pytest.CaptureFixture,
) -> None:
    torch.manual_seed(0)
    source = create_model("resnet20", num_classes=5).state_dict()
    model = create_model("resnet20", num_classes=5)
    animals, vehicles = ["cat", "deer", "dog", "frog", "horse"], ["airplane", "car", "ship"]
    vehicles += ["truck", "bus"]
    kept = adapt(model, source, classes=animals, source_classes=animals)
    assert "re-initialised" not in capsys.readouterr().out
    assert torch.equal(kept["fc.weight"], source["fc.weight"])
    fresh = adapt(model, source, classes=vehicles, source_classes=animals)
    out = capsys.readouterr().out
    assert "notice: fc re-initialised for 5 classes (weights' classes cat, deer, dog, ..., " in out
    assert torch.equal(fresh["fc.weight"], model.fc.weight)  # the model's own init, not theirs
    assert not torch.equal(fresh["fc.weight"], source["fc.weight"])
    assert torch.equal(fresh["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
