"""`resnetlab models`, `resnetlab summary` and count_macs: published and hand-counted MACs."""

from __future__ import annotations

import pytest
import torch

from resnetlab.cli import main
from resnetlab.models import create_model, list_models
from resnetlab.reports.summary import count_macs, layer_rows


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def test_resnet50_macs_are_torchvisions_4_09_gflops() -> None:
    assert count_macs(meta_model("resnet50"), (3, 224, 224)) == pytest.approx(4.09e9, rel=0.01)


def test_resnet20_macs_are_the_published_40_55m() -> None:
    assert count_macs(meta_model("resnet20"), (3, 32, 32)) == pytest.approx(40.55e6, rel=0.01)


def test_mnist_cnn_macs_counted_by_hand() -> None:
    # Each output value of a conv costs (in_channels * k * k) MACs, a linear layer in * out.
    by_hand = (
        6 * 24 * 24 * (1 * 5 * 5)  # conv1 -> 6x24x24
        + 16 * 8 * 8 * (6 * 5 * 5)  # conv2 -> 16x8x8
        + 256 * 120
        + 120 * 84
        + 84 * 10
    )
    assert by_hand == 281_640
    assert count_macs(create_model("mnist_cnn"), (1, 28, 28)) == by_hand
    assert count_macs(create_model("mnist_cnn"), (1, 28, 28), batch_size=3) == 3 * by_hand


def test_count_macs_on_a_real_model_leaves_it_untouched() -> None:
    model = create_model("resnet20")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_macs(model, (3, 32, 32)) == count_macs(meta_model("resnet20"), (3, 32, 32))
    assert model.training  # mode restored
    for key, value in model.state_dict().items():  # no BatchNorm statistics updated
        assert torch.equal(value, before[key]), key


def test_layer_rows_shapes_follow_the_paper() -> None:
    # He et al. 2015 section 4.2: 16/32/64 filters on 32/16/8 maps.
    rows, macs = layer_rows(meta_model("resnet20"), (3, 32, 32))
    by_name = {r.name: r for r in rows if r.parameters is not None}
    assert by_name["layer1"].output_shape == (1, 16, 32, 32)
    assert by_name["layer2"].output_shape == (1, 32, 16, 16)
    assert by_name["layer3"].output_shape == (1, 64, 8, 8)
    assert by_name["fc"].output_shape == (1, 10)
    assert by_name["conv1"].macs == 16 * 32 * 32 * 27  # 3x3x3 per output value
    assert by_name[""].parameters == 269_722
    top = [r for r in rows if r.depth == 1 and r.parameters is not None]
    assert sum(r.parameters for r in top) == 269_722
    assert sum(r.macs for r in top) == macs
    # the block's ReLU runs twice; both calls are rows, in call order
    relus = [r.name for r in rows if r.name.startswith("layer1.0.")]
    assert relus == [f"layer1.0.{n}" for n in ("conv1", "bn1", "relu", "conv2", "bn2", "relu")]


def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    names = {line.split()[0] for line in out.splitlines()[2:]}
    assert names == set(list_models())
    assert "19,421,274" in out  # resnet1202, built on the meta device
    assert "126,886,696" in out  # wide_resnet101_2


def test_models_command_family_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--family", "plain"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == ["plain20", "plain32", "plain44", "plain56", "plain110"]
    assert main(["models", "--family", "transformers"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cifar" in err


def test_summary_of_resnet20(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "Parameters: 269,722" in out
    macs_line = next(line for line in out.splitlines() if line.startswith("MACs"))
    assert "40.55 M" in macs_line
    flops_line = next(line for line in out.splitlines() if line.startswith("FLOPs"))
    assert "81.10 M" in flops_line
    assert "layer3.2.conv2 (Conv2d)" in out
    assert "[1, 64, 8, 8]" in out


def test_summary_options(capsys: pytest.CaptureFixture[str]) -> None:
    # a grey 64x64 input sets in_channels=1: the stem loses 2 * 64 * 49 weights
    args = ["summary", "resnet18", "--input-size", "1", "64", "64", "--num-classes", "10"]
    assert main([*args, "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert f"Parameters: {11_689_512 - 2 * 64 * 49 - 990 * 513:,}" in out
    assert "[1, 10]" in out and "[1, 512, 2, 2]" in out
    assert "layer1.0" not in out  # depth 1: the top level only


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["summary", "resnt20"], "resnet20"),
        (["summary", "mnist_cnn", "--input-size", "1", "32", "32"], "input size"),
        (["summary", "resnet20", "--input-size", "3", "32", "32", "--in-channels", "1"], "3"),
        (["summary", "resnet20", "--input-size", "3", "0", "32"], "positive"),
    ],
)
def test_summary_bad_input_is_one_line_and_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("resnetlab summary: error:")
    assert needle in err
    assert "Traceback" not in captured.err
