"""The fast path trains the same network as the plain one: channels_last, bf16, "auto".

Each fast variant runs a few steps of `train_one_epoch` (the loop `resnetlab train` uses)
and is compared with a plain reference written here: fp32, NCHW, torch's own SGD
(for-loop implementation), the textbook step. What is compared is the change of the
weights over the steps (the weights themselves barely move in a few steps, which
would hide errors) and the mean loss.

Tolerances. fp32 channels_last only changes the order of sums inside oneDNN, so its
activations agree to 1e-6..1e-5 (BatchNorm's NHWC kernel is the least exact, ~1e-6 per
layer). A ReLU whose input is that close to 0 can still switch: at 32x32, batch 16, two
of layer3.1's 65,536 units did, which changed ResNet-20's gradients by ~1% (and NCHW
with oneDNN turned off, a second correct fp32 path, differs from the reference by the
same 6.5e-2 after 3 steps). So the update is compared at 8x8 inputs, where no unit
switches (measured 3.0e-6; bound 1e-4), and full-size CIFAR images are compared on the
forward pass (bound 1e-4, measured 1.7e-6). bf16 rounds to 8 significant bits (2^-8 =
0.4% per rounding), which over 20 layers of backward gives updates 15-30% off in norm
at 16 images (measured 0.16 after one step, 0.30 after two): bf16 must point the same
way (cosine >= 0.9, measured 0.96) and give the same loss to 1% (measured 0.04%).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from resnetlab.cli import main
from resnetlab.data import DATASETS
from resnetlab.data.in_memory import InMemoryLoader
from resnetlab.device import native_bf16, resolve_channels_last, resolve_precision
from resnetlab.errors import UserError
from resnetlab.models import create_model
from resnetlab.training.engine import TrainStep, train_one_epoch
from resnetlab.training.optim import build_optimizer
from resnetlab.training.schedule import LrSchedule, build_scheduler

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LR, MOMENTUM, WD = 0.1, 0.9, 1e-4
CPU = torch.device("cpu")


def cifar_like(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (n,), generator=g)


def loader(images: torch.Tensor, labels: torch.Tensor, batch: int, channels_last: bool):
    info = DATASETS["cifar10"]
    return InMemoryLoader(
        images,
        labels,
        batch_size=batch,
        mean=info.mean,
        std=info.std,
        train=True,
        channels_last=channels_last,
    )


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10, in_channels=3)


def reference(data: tuple, batch: int, steps: int) -> tuple[dict, float]:
    """The plain step: fp32, NCHW, torch.optim.SGD's for-loop update."""
    model = fresh_model().train()
    opt = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD, foreach=False
    )
    losses = []
    for step, (x, y) in enumerate(loader(*data, batch, channels_last=False)):
        if step == steps:
            break
        assert x.is_contiguous()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return dict(model.named_parameters()), sum(losses) / len(losses)


def fast(
    data: tuple, batch: int, steps: int, precision: str, channels_last: bool, tmp: Path
) -> tuple[dict, float]:
    """The same steps through resnetlab's optimizer, schedule and `train_one_epoch`."""
    model = fresh_model()
    batches = loader(*data, batch, channels_last=channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x, _ = next(iter(batches))
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    optimizer = build_optimizer(model, "sgd", LR, MOMENTUM, False, WD, False)
    schedule = LrSchedule("paper", total=1000, steps_per_epoch=len(batches))  # lr stays LR
    step = TrainStep(
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, schedule),
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        criterion=nn.CrossEntropyLoss(),
        precision=precision,
    )
    quiet = lambda *a, **k: None  # noqa: E731
    stats = train_one_epoch(
        model, batches, step, epoch=0, epochs=1, start=0, total=steps, print_freq=50, log=quiet
    )
    assert stats["iteration"] == steps
    if channels_last:
        assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    return dict(model.named_parameters()), stats["loss"]


def flat_update(params: dict) -> torch.Tensor:
    """Every parameter's change from the common initial weights, as one vector."""
    init = dict(fresh_model().named_parameters())
    return torch.cat([(params[k] - init[k]).detach().flatten() for k in init])


def update_error(fast_params: dict, ref_params: dict) -> float:
    """||delta_fast - delta_ref|| / ||delta_ref||."""
    fast_delta, ref_delta = flat_update(fast_params), flat_update(ref_params)
    assert ref_delta.norm() > 0  # the reference did learn something
    return ((fast_delta - ref_delta).norm() / ref_delta.norm()).item()


def test_fp32_channels_last_matches_plain_nchw(tmp_path: Path) -> None:
    data = cifar_like(48, 8)
    ref, ref_loss = reference(data, batch=16, steps=3)
    plain, plain_loss = fast(data, 16, 3, "fp32", channels_last=False, tmp=tmp_path)
    cl, cl_loss = fast(data, 16, 3, "fp32", channels_last=True, tmp=tmp_path)
    assert update_error(plain, ref) <= 1e-4
    assert update_error(cl, ref) <= 1e-4
    assert cl_loss == pytest.approx(ref_loss, rel=1e-5)
    assert plain_loss == pytest.approx(ref_loss, rel=1e-5)


def test_channels_last_forward_matches_at_cifar_size() -> None:
    data = cifar_like(16, 32)
    x, y = next(iter(loader(*data, 16, channels_last=False)))
    x_cl, _ = next(iter(loader(*data, 16, channels_last=True)))
    assert torch.equal(x, x_cl)  # same values, other layout
    with torch.no_grad():
        ref = fresh_model().train()(x)
        out = fresh_model().train().to(memory_format=torch.channels_last)(x_cl)
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-4
    loss_ref = nn.functional.cross_entropy(ref, y).item()
    assert nn.functional.cross_entropy(out, y).item() == pytest.approx(loss_ref, rel=1e-5)


def test_bf16_channels_last_matches_within_bf16_rounding(tmp_path: Path) -> None:
    # bf16 runs on any CPU (emulated without AVX512-BF16/AMX: slow), so a small input.
    data = cifar_like(32, 16)
    ref, ref_loss = reference(data, batch=16, steps=2)
    bf16, bf16_loss = fast(data, 16, 2, "bf16", channels_last=True, tmp=tmp_path)
    a, b = flat_update(bf16), flat_update(ref)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0).item() >= 0.9
    assert update_error(bf16, ref) > 1e-3  # bf16 really ran: fp32 agrees to ~1e-5
    assert bf16_loss == pytest.approx(ref_loss, rel=0.01)


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("no x86 flags in /proc/cpuinfo")


def test_auto_choices_follow_the_cpu() -> None:
    flags = cpu_flags()
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert native_bf16(CPU) is has_bf16
    assert resolve_precision("auto", CPU) == ("bf16" if has_bf16 else "fp32")
    assert resolve_channels_last(None, CPU) is True


def test_explicit_choices_are_kept_or_refused() -> None:
    for precision in ("fp32", "bf16"):
        assert resolve_precision(precision, CPU) == precision
    assert resolve_channels_last(False, CPU) is False
    assert resolve_channels_last(True, CPU) is True
    with pytest.raises(UserError, match="fp16 needs CUDA"):
        resolve_precision("fp16", CPU)


def test_run_records_the_resolved_choices(mnist_root: Path, tmp_path: Path) -> None:
    import json

    common = [
        "train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-path", str(mnist_root),
        "--iterations", "2", "-b", "32", "--val-split", "32", "--workers", "0",
    ]  # fmt: skip
    assert main([*common, "--output-dir", str(tmp_path / "auto")]) == 0
    cfg = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert cfg["precision"] == resolve_precision("auto", CPU)  # never "auto" on disk
    assert cfg["channels_last"] is True
    summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert summary["precision"] == cfg["precision"]
    # the machine, as lscpu names it, and whether its bf16 is native: what speed depends on
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert ("native bf16" in summary["device_name"]) is has_bf16
    if shutil.which("lscpu"):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in lscpu.splitlines()
                     if ln.startswith("Model name"))  # fmt: skip
        assert summary["device_name"].startswith(f"{model}, ")
    out = tmp_path / "plain"
    flags = ["--precision", "fp32", "--no-channels-last", "--output-dir", str(out)]
    assert main([*common, *flags]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["precision"], cfg["channels_last"]) == ("fp32", False)
