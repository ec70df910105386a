"""The weights format (resnetlab.models.weights) and import of foreign state_dicts."""

from __future__ import annotations

import argparse
import json
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models import create_model
from resnetlab.models.weights import load_checkpoint, load_into, read_weights, save_weights

META = {
    "model": "resnet20",
    "num_classes": 10,
    "in_channels": 3,
    "model_kwargs": {},
    "dataset": "cifar10",
    "classes": [f"class{i}" for i in range(10)],
    "mean": [0.49, 0.48, 0.45],
    "std": [0.25, 0.24, 0.26],
    "input_size": [3, 32, 32],
    "resize_size": None,
    "epoch": 3,
    "iteration": 1173,
    "resnetlab_version": "0.1.0",
}


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic a non-default value, so a load that
    silently skipped a tensor would change the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
    return model.eval()


def same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> bool:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture
def resnet20() -> nn.Module:
    return randomise(create_model("resnet20"))


def test_save_read_round_trip_keeps_tensors_and_meta(tmp_path: Path, resnet20: nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, resnet20, META)
    state, meta = read_weights(path)
    assert meta == META
    expected = resnet20.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    # The safetensors metadata is str -> str with our meta as JSON under one key,
    # so other safetensors readers open the file too.
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items())
    assert json.loads(raw["resnetlab"]) == META
    assert not [p for p in tmp_path.iterdir() if p.name != "w.safetensors"]  # no temp left


def test_save_strips_dataparallel_and_compile_prefixes(tmp_path: Path, resnet20: nn.Module) -> None:
    wrapped = nn.DataParallel(torch.compile(resnet20))
    assert next(iter(wrapped.state_dict())).startswith("module._orig_mod.")
    save_weights(tmp_path / "w.safetensors", wrapped, META)
    state, _ = read_weights(tmp_path / "w.safetensors")
    assert sorted(state) == sorted(resnet20.state_dict())


def test_load_checkpoint_prefers_best_and_rebuilds_the_model(
    tmp_path: Path, resnet20: nn.Module
) -> None:
    last = randomise(create_model("resnet20", num_classes=100), seed=5)
    save_weights(tmp_path / "last.safetensors", last, {**META, "num_classes": 100})
    model, meta = load_checkpoint(tmp_path)
    assert meta["num_classes"] == 100 and not model.training
    assert same_outputs(model, last, (2, 3, 32, 32))

    save_weights(tmp_path / "best.safetensors", resnet20, META)
    model, meta = load_checkpoint(tmp_path)
    assert meta == META and not model.training
    assert same_outputs(model, resnet20, (2, 3, 32, 32))
    model, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert same_outputs(model, last, (2, 3, 32, 32))


def test_load_checkpoint_passes_model_kwargs_and_channels(tmp_path: Path) -> None:
    mnist = randomise(create_model("mnist_cnn"))
    meta = {**META, "model": "mnist_cnn", "in_channels": 1, "input_size": [1, 28, 28]}
    save_weights(tmp_path / "m.safetensors", mnist, meta)
    model, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert same_outputs(model, mnist, (2, 1, 28, 28))
    bad = {**META, "model_kwargs": {"no_such_argument": 1}}
    save_weights(tmp_path / "bad.safetensors", create_model("resnet20"), bad)
    with pytest.raises(UserError, match="cannot build resnet20 from its metadata"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_torchvision_state_dict_imports_exactly(tmp_path: Path) -> None:
    reference = randomise(torchvision.models.resnet18(num_classes=1000))
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), path)
    ours = create_model("resnet18", weights=path)
    assert same_outputs(ours, reference, (2, 3, 64, 64))

    # Torchvision's original files predate BatchNorm's num_batches_tracked.
    old = OrderedDict((k, v) for k, v in reference.state_dict().items() if "num_batches" not in k)
    torch.save(old, tmp_path / "old.pth")
    assert same_outputs(
        create_model("resnet18", weights=tmp_path / "old.pth"), reference, (1, 3, 64, 64)
    )


def test_torchvision_reference_script_checkpoint_loads(tmp_path: Path) -> None:
    """references/classification/train.py saves the state_dict under "model" next to its args."""
    reference = randomise(torchvision.models.resnet18(num_classes=10))
    ckpt = {"model": reference.state_dict(), "epoch": 7, "args": argparse.Namespace(lr=0.1)}
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    ours = create_model("resnet18", num_classes=10, weights=tmp_path / "checkpoint.pth")
    assert same_outputs(ours, reference, (1, 3, 64, 64))


def test_akamaster_dataparallel_checkpoint_loads(tmp_path: Path, resnet20: nn.Module) -> None:
    """pytorch_resnet_cifar10 saves {'state_dict': DataParallel state, 'best_prec1': ...}
    with the classifier called `linear`."""
    state = OrderedDict(
        ("module." + k.replace("fc.", "linear.", 1) if k.startswith("fc.") else "module." + k, v)
        for k, v in resnet20.state_dict().items()
    )
    assert "module.linear.weight" in state and "module.layer1.0.conv1.weight" in state
    torch.save({"state_dict": state, "best_prec1": 91.7}, tmp_path / "model.th")
    ours = create_model("resnet20", weights=tmp_path / "model.th")
    assert same_outputs(ours, resnet20, (2, 3, 32, 32))


def test_our_file_supplies_num_classes_to_create_model(tmp_path: Path) -> None:
    cifar100 = randomise(create_model("resnet20", num_classes=100))
    save_weights(tmp_path / "w.safetensors", cifar100, {**META, "num_classes": 100})
    ours = create_model("resnet20", weights=tmp_path / "w.safetensors")
    assert ours.fc.out_features == 100
    assert same_outputs(ours, cifar100, (1, 3, 32, 32))


class _CreatesFile:
    """A pickle payload: unpickling it calls open(marker, "w"), which creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_unsafe_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "payload-ran"
    payload = {"conv1.weight": torch.zeros(1), "evil": _CreatesFile(marker)}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(
        UserError, match=r"refusing to load .*not a plain state_dict \(unsafe pickle"
    ):
        create_model("resnet20", weights=path)
    assert not marker.exists()


def test_a_pickled_whole_model_is_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(UserError, match=r"unsafe pickle.*Linear"):
        read_weights(tmp_path / "model.pt")


@pytest.mark.parametrize(
    "name, content",
    [
        ("random.pth", bytes(range(256)) * 8),
        ("empty.pt", b""),
        ("text.bin", b"hello, not weights\n"),
        ("truncated.pth", None),
        ("truncated.safetensors", None),
        ("random.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{ not json  }" + b"x" * 50),
    ],
)
def test_files_that_are_not_weights_are_one_clear_line(
    tmp_path: Path, resnet20: nn.Module, name: str, content: bytes | None
) -> None:
    path = tmp_path / name
    if content is None:  # the first half of a real file of that kind
        full = tmp_path / ("full" + path.suffix)
        if path.suffix == ".safetensors":
            save_weights(full, resnet20, META)
        else:
            torch.save(resnet20.state_dict(), full)
        data = full.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_weights(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "cannot read" in message or "refusing" in message


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such weights file"):
        read_weights(tmp_path / "nope.pth")
    with pytest.raises(UserError, match="no weights in"):
        load_checkpoint(tmp_path)


def test_a_dict_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "best_prec1": 0.9}, tmp_path / "x.pth")
    with pytest.raises(UserError, match="expected a state_dict of tensors.*epoch"):
        read_weights(tmp_path / "x.pth")


def test_mismatch_names_missing_unexpected_and_shapes(resnet20: nn.Module) -> None:
    deeper = create_model("resnet32")  # 5 blocks per stage where resnet20 has 3
    with pytest.raises(UserError) as info:
        load_into(deeper, resnet20.state_dict())
    message = str(info.value)
    missing = sorted(set(deeper.state_dict()) - set(resnet20.state_dict()))
    assert f"{len(missing)} missing keys" in message
    assert "layer1.3.conv1.weight" in message and "\n" not in message

    state = dict(resnet20.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["layer3.2.bn2.bias"]
    with pytest.raises(UserError) as info:
        load_into(create_model("resnet20", num_classes=100), state)
    message = str(info.value)
    assert "1 missing key (layer3.2.bn2.bias)" in message
    assert "1 unexpected key (extra.weight)" in message
    assert "fc.weight: file [10, 64] vs model [100, 64]" in message


def test_wrong_num_classes_suggests_the_right_one(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18(num_classes=10)
    torch.save(reference.state_dict(), tmp_path / "r.pth")
    with pytest.raises(UserError, match="pass num_classes=10"):
        create_model("resnet18", weights=tmp_path / "r.pth")


def test_foreign_safetensors_has_empty_meta_and_is_not_a_checkpoint(
    tmp_path: Path, resnet20: nn.Module
) -> None:
    save_file(
        {k: v.contiguous() for k, v in resnet20.state_dict().items()}, tmp_path / "f.safetensors"
    )
    state, meta = read_weights(tmp_path / "f.safetensors")
    assert meta == {}
    assert same_outputs(
        create_model("resnet20", weights=tmp_path / "f.safetensors"), resnet20, (1, 3, 32, 32)
    )
    with pytest.raises(UserError, match="without resnetlab metadata"):
        load_checkpoint(tmp_path / "f.safetensors")


def test_legacy_torch_format_loads(tmp_path: Path, resnet20: nn.Module) -> None:
    torch.save(resnet20.state_dict(), tmp_path / "legacy.tar", _use_new_zipfile_serialization=False)
    assert same_outputs(
        create_model("resnet20", weights=tmp_path / "legacy.tar"), resnet20, (1, 3, 32, 32)
    )


def test_equal_weights_give_equal_bytes_every_time(tmp_path):
    """safetensors writes the header's metadata in the order of a randomly seeded hash map
    (new per save, not only per process): without sorting it, about half of the saves of the
    same weights give other bytes, so 20 agree by chance once in half a million."""
    torch.manual_seed(0)
    model = create_model("resnet20")
    files = [tmp_path / f"w{i}.safetensors" for i in range(20)]
    for f in files:
        save_weights(f, model, {"model": "resnet20", "n": 1})
    assert len({f.read_bytes() for f in files}) == 1
    state, meta = read_weights(files[0])  # and the sorted header still reads
    assert meta["n"] == 1 and state.keys() == model.state_dict().keys()
