"""`resnetlab export`: ONNX checked against onnxruntime, and the safetensors bundle round trip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TrainedRun
from PIL import Image
from torch import nn

from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.inference import export
from resnetlab.inference.predict import predict
from resnetlab.models import create_model
from resnetlab.models.weights import load_checkpoint, save_weights

META = {
    "model": "resnet20",
    "num_classes": 10,
    "in_channels": 3,
    "model_kwargs": {},
    "dataset": "cifar10",
    "classes": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
    "mean": [0.4914, 0.4822, 0.4465],
    "std": [0.2470, 0.2435, 0.2616],
    "input_size": [3, 32, 32],
    "resize_size": None,
    "epoch": 1,
    "iteration": 391,
    "resnetlab_version": "0.1.0",
}
MNIST_META = {
    **META,
    "model": "mnist_cnn",
    "in_channels": 1,
    "input_size": [1, 28, 28],
    "mean": [0.1307],
    "std": [0.3081],
    "dataset": "mnist",
}


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-default BatchNorm statistics, so BN really takes part in the comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    folder = tmp_path_factory.mktemp("run")
    model = randomise(create_model("resnet20"))
    save_weights(folder / "best.safetensors", model, META)
    (folder / "config.json").write_text(json.dumps({"model": "resnet20", "val_split": 0}))
    return folder, model


def test_onnx_matches_pytorch_in_onnxruntime(
    tmp_path: Path, run, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    folder, model = run
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "cat.png")
    out = tmp_path / "out" / "r20.onnx"
    code = main(
        ["export", "--checkpoint", str(folder), "--format", "onnx", "--output", str(out)]
        + ["--images", str(tmp_path / "cat.png")]
    )
    assert code == 0 and out.is_file()
    assert "onnxruntime matches PyTorch on random inputs and 1 image:" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["r20.onnx"]  # no temp or .data file

    proto = onnx.load(str(out))
    (dim0, *rest) = proto.graph.input[0].type.tensor_type.shape.dim
    assert dim0.dim_param and [d.dim_value for d in rest] == [3, 32, 32]  # dynamic batch
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["resnetlab"]) == META

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 4, 7):
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (n, 10)
        assert np.abs(got - want).max() <= 1e-4

    # The real image, preprocessed the way predict does, gives predict's probabilities.
    x = (
        torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
        - torch.tensor(META["mean"])[:, None, None]
    ) / torch.tensor(META["std"])[:, None, None]
    (logits,) = session.run(None, {"input": x[None].numpy()})
    probs = torch.softmax(torch.from_numpy(logits), dim=1)[0]
    (pred,) = predict(folder, tmp_path / "cat.png", topk=10, precision="fp32")
    assert [i for i, _, _ in pred.topk] == probs.topk(10).indices.tolist()
    assert np.allclose([p for _, _, p in pred.topk], probs.topk(10).values.tolist(), atol=1e-5)


def test_failed_onnx_check_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    model = randomise(create_model("mnist_cnn"))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no export can pass
    with pytest.raises(UserError, match="disagrees with PyTorch.*nothing written"):
        export.export_onnx(model, MNIST_META, out)
    assert out.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_missing_onnx_packages_are_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(UserError, match=r"pip install 'resnetlab\[onnx\]'"):
        export.export_onnx(create_model("mnist_cnn"), MNIST_META, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_bundle_round_trip_is_exact(
    tmp_path: Path, run, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, model = run
    bundle = tmp_path / "bundle"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(folder),
                "--format",
                "safetensors",
                "--output",
                str(bundle),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((bundle / "config.json").read_text()) == META

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        loaded, meta = load_checkpoint(bundle)
        assert meta == META and torch.equal(loaded(x), want)
        assert torch.equal(create_model("resnet20", weights=bundle).eval()(x), want)

    # The config.json alone is enough when the weights file lost its metadata.
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, bundle / "model.safetensors"
    )
    loaded, meta = load_checkpoint(bundle)
    with torch.no_grad():
        assert meta == META and torch.equal(loaded(x), want)


def test_single_safetensors_file_and_default_output(tmp_path: Path, run) -> None:
    folder, model = run
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(folder),
                "--format",
                "safetensors",
                "--output",
                str(tmp_path / "r.safetensors"),
            ]
        )
        == 0
    )
    loaded, _ = load_checkpoint(tmp_path / "r.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert export.default_output(folder, META, "onnx") == folder / "resnet20.onnx"
    assert (
        export.default_output(folder / "best.safetensors", META, "safetensors")
        == folder / "resnet20-safetensors"
    )


def test_bundle_never_overwrites_a_run_folder(run, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = run
    before = (folder / "config.json").read_bytes()
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(folder),
                "--format",
                "safetensors",
                "--output",
                str(folder),
            ]
        )
        == 2
    )
    assert "holds other files" in capsys.readouterr().err
    assert (folder / "config.json").read_bytes() == before
    assert not (folder / "model.safetensors").exists()


def test_export_bad_input_is_exit_2(
    tmp_path: Path, run, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = run
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    assert "no such weights file" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"junk")
    code = main(
        [
            "export",
            "--checkpoint",
            str(folder),
            "--format",
            "onnx",
            "--images",
            str(tmp_path / "bad.png"),
        ]
    )
    assert code == 2 and "bad.png" in capsys.readouterr().err
    assert not (folder / "resnet20.onnx").exists()


def test_onnx_of_a_trained_run_gives_its_test_set_logits(
    trained_run: TrainedRun, mnist_test_set: tuple, tmp_path: Path
) -> None:
    """A run folder as training left it exports with its own metadata, and onnxruntime
    gives the logits of the saved model on the hand-normalised test images."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    before = {p.name: p.stat().st_mtime_ns for p in trained_run.path.iterdir()}
    out = tmp_path / "mnist.onnx"
    argv = ["export", "--checkpoint", str(trained_run.path), "--format", "onnx"]
    assert main([*argv, "--output", str(out)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in trained_run.path.iterdir()} == before
    model, meta = load_checkpoint(trained_run.path / "best.safetensors")
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["resnetlab"]) == meta
    x, y = mnist_test_set
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model.eval()(x).numpy()
    assert got.shape == (len(y), 10)
    assert np.abs(got - want).max() <= 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()
