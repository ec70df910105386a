"""`resnetlab explain` and resnetlab.inference.gradcam: Grad-CAM with captum."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_flags import options
from test_predict import CLASSES, META, by_hand, random_pixels, randomise, save_png
from torch import Tensor, nn

from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.inference.gradcam import default_layer, grad_cam, iter_explanations
from resnetlab.models import create_model, get_model_entry, list_models
from resnetlab.models.weights import save_weights

PNG_SIZE = (900, 450)  # every picture, whatever the model's input size
IMAGENET_META = {
    **META,
    "model": "resnet18",
    "num_classes": 3,
    "classes": ["apple", "bee", "cloud"],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "input_size": [3, 64, 64],
    "resize_size": 72,
}


def square_images(g: torch.Generator, n: int, corners: Tensor | None = None) -> tuple[Tensor, ...]:
    """Dim noise; class 1 has a bright 8x8 square at a random place (or at ``corners``)."""
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.5
    y = torch.randint(0, 2, (n,), generator=g) if corners is None else torch.ones(n).long()
    corners = torch.randint(0, 25, (n, 2), generator=g) if corners is None else corners
    for i, (r, c) in enumerate(corners.tolist()):
        if y[i]:
            x[i, :, r : r + 8, c : c + 8] = 1.0
    return x, y, corners


def test_the_heat_lies_on_the_bright_square() -> None:
    """A resnet20 trained for 10 steps to tell "a bright square somewhere" from noise: its
    Grad-CAM for "square" peaks inside the square, wherever the square is."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = create_model("resnet20", num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        x, y, _ = square_images(g, 16)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    corners = torch.tensor([[2, 20], [20, 3], [12, 12], [23, 24], [0, 0]])
    x, _, _ = square_images(g, len(corners), corners)
    with torch.no_grad():
        assert model(x).argmax(1).tolist() == [1] * len(corners)  # it learned the task
    heat = grad_cam(model, default_layer(model, "resnet20"), x, target=1)
    assert heat.shape == (len(corners), 32, 32)
    for h, (r, c) in zip(heat, corners.tolist(), strict=True):
        row, col = divmod(int(h.argmax()), 32)
        assert r <= row < r + 8 and c <= col < c + 8, (row, col, r, c)


REAL_RUN_PARAMS = 2_000_000  # larger models are checked on the meta device only (no compute)


@pytest.mark.parametrize("name", list_models())
def test_default_layer_is_the_last_stage(name: str) -> None:
    """The default layer's output is what the global pool reads (the MNIST CNN, which has no
    global pool, ends in its last conv); checked on the meta device, where shapes and module
    calls are real but no arithmetic runs. Grad-CAM then runs for real on the smaller models."""
    entry = get_model_entry(name)
    size = 28 if entry.family == "mnist" else 32
    with torch.device("meta"):
        model = create_model(name, num_classes=3).eval()
        layer_name = default_layer(model, name)
        if entry.family == "mnist":
            convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            assert layer_name == convs[-1] == "conv2"
        else:
            seen: dict[str, Tensor] = {}
            model.get_submodule(layer_name).register_forward_hook(
                lambda m, i, out: seen.update(layer=out)
            )
            model.avgpool.register_forward_pre_hook(lambda m, i: seen.update(pool=i[0]))
            with torch.no_grad():
                model(torch.empty(1, entry.input_size[0], size, size))
            assert seen["pool"] is seen["layer"]
    if sum(p.numel() for p in model.parameters()) > REAL_RUN_PARAMS:
        return
    # Residual branches start at zero, so that deep fresh nets stay finite in eval mode.
    residual = {} if entry.family in ("plain", "mnist") else {"zero_init_residual": True}
    model = create_model(name, num_classes=3, **residual).eval()
    x = torch.randn(1, entry.input_size[0], size, size)
    heat = grad_cam(model, layer_name, x, target=2)
    assert heat.shape == (1, size, size) and torch.isfinite(heat).all() and heat.min() >= 0


def hand_grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, target: int) -> Tensor:
    """Selvaraju et al.'s equations 1 and 2 with autograd: channel weights are the mean
    gradients, the map is the ReLU of the weighted sum of the maps, bilinearly upsampled."""
    seen = {}
    hook = layer.register_forward_hook(lambda m, i, out: seen.update(a=out))
    try:
        logit = model(x)[0, target]
    finally:
        hook.remove()
    (grad,) = torch.autograd.grad(logit, seen["a"])
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * seen["a"]).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[2:], mode="bilinear")[:, 0].detach()


@pytest.mark.parametrize("layer", ["layer2", "layer3.1", "conv1"])
def test_grad_cam_is_the_papers_formula_at_any_layer(layer: str) -> None:
    model = randomise(create_model("resnet20"))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = hand_grad_cam(model, model.get_submodule(layer), x, 4)
    assert expected.max() > 0
    assert torch.allclose(grad_cam(model, layer, x, 4), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "preact_resnet110"])
def test_at_the_default_layer_grad_cam_is_cam(name: str) -> None:
    """Where the classifier is linear in the layer's global average (the reason the
    pre-activation nets use the output after bn_final + ReLU), Grad-CAM equals CAM
    (Zhou et al. 2016): the fc weights of the class times the maps, over h * w."""
    model = randomise(create_model(name, num_classes=5))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    layer = default_layer(model, name)
    seen = {}
    model.get_submodule(layer).register_forward_hook(lambda m, i, out: seen.update(a=out.clone()))
    with torch.no_grad():
        top = int(model(x).argmax())  # a class with some positive evidence
    a = seen["a"][0]
    cam = torch.relu(torch.einsum("c,chw->hw", model.fc.weight[top], a) / a[0].numel())
    expected = F.interpolate(cam[None, None], size=(64, 64), mode="bilinear")[0]
    assert expected.max() > 0
    assert torch.allclose(grad_cam(model, layer, x, top), expected, atol=1e-6)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, list[Path]]:
    folder = tmp_path_factory.mktemp("explain")
    model = randomise(create_model("resnet20"))
    save_weights(folder / "run" / "best.safetensors", model, META)
    images = [save_png(folder / f"img{i}.png", random_pixels(i, (32, 32, 3))) for i in range(2)]
    return folder / "run", model, images


def lines(text: str) -> list[str]:
    return text.strip().splitlines()


def test_cli_cifar_writes_one_picture_per_image_in_the_run_folder(
    cifar_run, capsys: pytest.CaptureFixture[str]
) -> None:
    run, model, images = cifar_run
    assert main(["explain", "--checkpoint", str(run), *map(str, images)]) == 0
    out = lines(capsys.readouterr().out)
    for line, image in zip(out, images, strict=True):
        probs = by_hand(model, np.asarray(Image.open(image)), META["mean"], META["std"])
        top = CLASSES[int(probs.argmax())]
        png = run / "explain" / f"{image.stem}_gradcam.png"
        assert line == f"{image}: {top} {100 * float(probs.max()):.2f}% at layer3 -> {png}"
        assert Image.open(png).size == PNG_SIZE


def test_cli_class_and_layer_choose_what_is_explained(
    cifar_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, model, (image, _) = cifar_run
    probs = by_hand(model, np.asarray(Image.open(image)), META["mean"], META["std"])
    last = int(probs.argmin())  # surely not the top class
    pictures = {}
    for flags in ([], ["--class", CLASSES[last]], ["--class", str(last)], ["--layer", "layer2"]):
        out_dir = tmp_path / str(len(pictures))
        argv = ["explain", "--checkpoint", str(run), str(image), "--output-dir", str(out_dir)]
        assert main(argv + flags) == 0
        (line,) = lines(capsys.readouterr().out)
        pictures[" ".join(flags)] = (line, (out_dir / "img0_gradcam.png").read_bytes())
    top = CLASSES[int(probs.argmax())]
    line, default = pictures[""]
    assert f": {top} " in line and "at layer3" in line
    for flags in (f"--class {CLASSES[last]}", f"--class {last}"):
        line, picture = pictures[flags]
        assert f": {CLASSES[last]} {100 * float(probs[last]):.2f}% at layer3" in line
        assert picture != default
    line, picture = pictures["--layer layer2"]
    assert f": {top} " in line and "at layer2" in line and picture != default


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--layer", "layer9"], "no layer 'layer9'; did you mean layer3"),
        (["--layer", "fc"], "layer 'fc' (Linear) gives no spatial maps"),
        (["--class", "unicorn"], "unknown class 'unicorn'"),
        (["--class", "10"], "an index 0-9"),
        (["--topk", "0"], "--topk must be at least 1"),
    ],
)
def test_cli_bad_flags_are_one_line_and_exit_2(
    cifar_run, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags, message
) -> None:
    run, _, images = cifar_run
    argv = ["explain", "--checkpoint", str(run), str(images[0]), "--output-dir", str(tmp_path)]
    assert main(argv + flags) == 2
    (err,) = lines(capsys.readouterr().err)
    assert err.startswith("resnetlab explain: error: ") and message in err
    assert not list(tmp_path.iterdir())


def test_cli_unreadable_image_gets_a_line_and_exit_1(
    cifar_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _, (good, _) = cifar_run
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    missing = tmp_path / "missing.jpg"
    argv = ["explain", "--checkpoint", str(run), str(bad), str(good), str(missing)]
    assert main(argv + ["--output-dir", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    err = lines(captured.err)
    assert len(err) == 2 and str(bad) in err[0] and str(missing) in err[1]
    assert len(lines(captured.out)) == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["img0_gradcam.png"]


def test_cli_without_captum_is_one_line(
    cifar_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _, images = cifar_run
    for module in ("captum", "captum.attr"):
        monkeypatch.setitem(sys.modules, module, None)  # `import captum` now fails
    argv = ["explain", "--checkpoint", str(run), str(images[0]), "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    (err,) = lines(capsys.readouterr().err)
    assert err == (
        "resnetlab explain: error: Grad-CAM needs captum: "
        "pip install 'resnetlab[explain]' (or pip install captum)"
    )


def test_cli_imagenet_resnet_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Folders are walked as predict walks them; images of any size are resized and
    centre-cropped; two files of one name get two pictures."""
    model = randomise(create_model("resnet18", num_classes=3))
    save_weights(tmp_path / "resnet18.safetensors", model, IMAGENET_META)
    photos = tmp_path / "photos"
    pixels = random_pixels(3, (72, 96, 3))  # 72 on the short side: the resize keeps it
    save_png(photos / "a" / "x.png", pixels)
    save_png(photos / "b" / "x.png", random_pixels(4, (100, 80, 3)))
    Image.fromarray(random_pixels(5, (64, 64, 3))).save(photos / "c.jpg")
    argv = ["explain", "--checkpoint", str(tmp_path / "resnet18.safetensors"), str(photos)]
    assert main(argv + ["--topk", "2", "--output-dir", str(tmp_path / "maps")]) == 0
    assert len(lines(capsys.readouterr().out)) == 3
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == ["c_gradcam.png", "x_gradcam-2.png", "x_gradcam.png"]
    for name in written:
        assert Image.open(tmp_path / "maps" / name).size == PNG_SIZE
    # What the picture shows is what the model saw: the 64x64 centre of the 72x96 image.
    (first, *_) = iter_explanations(model, IMAGENET_META, [photos / "a" / "x.png"], topk=2)
    assert first.view.shape == (64, 64, 3) and first.heat.shape == (64, 64)
    crop = pixels[4:68, 16:80]
    assert torch.allclose(first.view, torch.from_numpy(crop / 255).float(), atol=1e-5)
    probs = by_hand(model, crop, IMAGENET_META["mean"], IMAGENET_META["std"])
    assert [i for i, _, _ in first.topk] == probs.topk(2).indices.tolist()


def test_cli_mnist_cnn_writes_beside_the_weights_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = randomise(create_model("mnist_cnn"))
    meta = {**META, "model": "mnist_cnn", "in_channels": 1, "input_size": [1, 28, 28]}
    meta.update(mean=[0.1307], std=[0.3081], classes=[str(i) for i in range(10)])
    save_weights(tmp_path / "mnist.safetensors", model, meta)
    gray = random_pixels(6, (28, 28))
    image = save_png(tmp_path / "digit.png", gray)
    argv = ["explain", "--checkpoint", str(tmp_path / "mnist.safetensors"), str(image)]
    assert main(argv + ["--class", "7"]) == 0
    (line,) = lines(capsys.readouterr().out)
    p7 = float(by_hand(model, gray, [0.1307], [0.3081])[7])
    png = tmp_path / "explain" / "digit_gradcam.png"
    assert line == f"{image}: 7 {100 * p7:.2f}% at conv2 -> {png}"
    assert Image.open(png).size == PNG_SIZE


def test_help_and_shared_flags() -> None:
    flags = options("explain")
    assert {"--checkpoint", "--class", "--topk", "--layer", "--output-dir", "--device"} <= set(
        flags
    )
    assert flags["--device"].help == options("train")["--device"].help
    assert flags["--topk"].default == 3
    with pytest.raises(UserError, match="topk"):
        iter_explanations(create_model("resnet20"), META, [], topk=0)
