"""The fast inference path: BN folding is exact, the original is untouched, bf16 stays close."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from torch import nn

from resnetlab.device import native_bf16
from resnetlab.errors import UserError
from resnetlab.inference.fast import (
    InferenceModel,
    fold_batchnorm,
    optimize_for_inference,
)
from resnetlab.models import create_model
from resnetlab.training.evaluate import evaluate


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine terms, as training would.

    With the initial mean 0, var 1, weight 1, bias 0 a BN is nearly the identity in
    eval mode, and a wrong fold could go unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_((torch.rand(c, generator=g) - 0.5) * 0.4)
    return model.eval()


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


CASES = [
    ("resnet18", {}, (2, 3, 32, 32)),  # the fold does not depend on the size: small inputs
    ("resnet50", {}, (2, 3, 32, 32)),
    ("resnet20", {"shortcut": "A"}, (4, 3, 32, 32)),
    ("resnet20", {"shortcut": "B"}, (4, 3, 32, 32)),
    ("cifar_resnet18", {}, (2, 3, 32, 32)),
    ("mnist_cnn", {}, (4, 1, 28, 28)),
]


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=lambda v: str(v))
def test_folded_model_matches_the_eval_model(name, kwargs, shape):
    torch.manual_seed(0)
    model = trained_like(create_model(name, **kwargs))
    x = torch.randn(shape)
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model, precision="fp32")
    out = fast(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    # Every BN of these networks follows a conv read by nothing else: all fold.
    bns = count(model, nn.BatchNorm2d)
    assert len(fast.folded) == bns
    assert count(fast, nn.BatchNorm2d) == 0


def test_parameter_count_drops_by_bn_parameters_minus_new_biases():
    # Hand count for ResNet-18: BNs over 64 + 4*64 + 5*128 + 5*256 + 5*512 = 4800 channels,
    # i.e. 9600 BN parameters; the bias-free convs gain 4800 biases. torchvision's
    # ResNet-18 has 11,689,512 parameters.
    model = create_model("resnet18")
    assert n_params(model) == 11_689_512
    bn_params = sum(n_params(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn_params == 9600
    fast = optimize_for_inference(model, precision="fp32")
    assert n_params(fast) == 11_689_512 - 9600 + 4800
    assert all(
        getattr(m, "bias", 0) is not None for m in fast.modules() if isinstance(m, nn.Conv2d)
    )


def test_preactivation_blocks_fold_only_the_bns_that_follow_a_conv():
    # preact_resnet110: 54 basic blocks. Each block's bn2 follows conv1 and folds; each
    # bn1 reads the previous sum (the first block's reads the stem conv, whose output is
    # also the identity shortcut), and bn_final reads the last sum: 55 stay.
    torch.manual_seed(0)
    model = trained_like(create_model("preact_resnet110"))
    fast = optimize_for_inference(model, precision="fp32")
    assert len(fast.folded) == 54
    assert all(bn.endswith(".bn2") for _, bn in fast.folded)
    assert count(fast, nn.BatchNorm2d) == 55
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_preactivation_bottleneck_stem_folds_when_only_the_first_bn_reads_it():
    # preact_resnet164: the first block projects its pre-activated input, so the stem
    # conv's output is read by that block's bn1 alone and it folds too: 2 per block + 1.
    model = trained_like(create_model("preact_resnet164"))
    fast = optimize_for_inference(model, precision="fp32")
    assert len(fast.folded) == 2 * 54 + 1
    assert ("conv1", "layer1.0.bn1") in fast.folded
    assert count(fast, nn.BatchNorm2d) == 54  # 53 later bn1s and bn_final


class _FanOut(nn.Module):
    """conv -> bn, but the conv output is also added back: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class _Shared(nn.Module):
    """The same conv and BN called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(self.bn(self.conv(x))))


@pytest.mark.parametrize("cls", [_FanOut, _Shared])
def test_unsafe_pairs_are_left_alone(cls):
    model = trained_like(cls())
    fast = optimize_for_inference(model, precision="fp32")
    assert fast.folded == []
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(fast(x), ref, rtol=1e-5, atol=1e-5)


def test_original_model_is_untouched_and_training_mode_input_gives_an_eval_copy():
    model = trained_like(create_model("resnet20")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model, precision="fp32")
    assert model.training and not fast.training
    assert count(model, nn.BatchNorm2d) == 19
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.conv1.weight.is_contiguous()  # not switched to channels_last
    assert all(p.requires_grad for p in model.parameters())
    # The copy computes what the original does in eval mode, not with batch statistics.
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_the_copy_refuses_training_and_folding_refuses_training_mode():
    fast = optimize_for_inference(create_model("resnet20"), precision="fp32")
    with pytest.raises(UserError, match="cannot be trained"):
        fast.train()
    fast.eval()  # what evaluate() and predict() call: allowed
    with pytest.raises(UserError, match="eval mode"):
        fold_batchnorm(create_model("resnet20").train())


def test_outputs_are_inference_tensors_in_float32_whatever_the_input_layout():
    fast = optimize_for_inference(create_model("resnet20"), precision="fp32")
    assert fast.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    out = fast(x)
    assert out.dtype == torch.float32 and out.is_inference() and not out.requires_grad


def test_bf16_path_agrees_with_fp32():
    # bf16 keeps 8 significant bits (relative rounding 2**-9); over 20 layers of trained-like
    # statistics the logits stay within 5% of their range, and the argmax nearly always agrees.
    torch.manual_seed(0)
    model = trained_like(create_model("resnet20"))
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    native = native_bf16("cpu")
    ctx = contextlib.nullcontext() if native else pytest.warns(UserWarning, match="emulated")
    with ctx:
        fast = optimize_for_inference(model, precision="bf16")
    assert fast.model.conv1.weight.dtype == torch.bfloat16
    out = fast(x)
    assert out.dtype == torch.float32
    spread = (ref.max() - ref.min()).item()
    assert (out - ref).abs().max().item() < 0.05 * spread
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.9


def test_auto_precision_follows_the_hardware():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns: it only picks native bf16
        fast = optimize_for_inference(create_model("resnet20"), precision="auto")
    expected = torch.bfloat16 if native_bf16("cpu") else torch.float32
    assert fast.dtype == expected


def test_bad_precision_and_untraceable_models_are_user_errors():
    with pytest.raises(UserError, match="unknown precision"):
        optimize_for_inference(create_model("resnet20"), precision="fp8")
    with pytest.raises(UserError, match="fp16 needs CUDA"):
        optimize_for_inference(create_model("resnet20"), precision="fp16")  # on the CPU

    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            if x.sum() > 0:  # fx cannot trace a branch on values
                x = -x
            return self.bn(self.conv(x))

    model = trained_like(DataDependent())
    with pytest.raises(UserError, match="fold_bn=False"):
        optimize_for_inference(model, precision="fp32")
    fast = optimize_for_inference(model, precision="fp32", fold_bn=False)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x))


def test_evaluate_gives_the_same_accuracy_with_the_fast_model():
    torch.manual_seed(0)
    model = trained_like(create_model("resnet20"))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 10) for _ in range(2)]
    fast = optimize_for_inference(model, precision="fp32")
    assert isinstance(fast, InferenceModel)
    a = evaluate(model, batches, num_classes=10)
    b = evaluate(fast, batches, num_classes=10)
    assert a.confusion == b.confusion
    assert abs(a.loss - b.loss) < 1e-4


@pytest.mark.slow
def test_compiled_path_matches_and_lists_each_layer_once():
    # ~25 s on 2 cores: inductor takes that long even for the small CNN.
    model = create_model("mnist_cnn").eval()
    fast = optimize_for_inference(model, precision="fp32", compile=True)
    assert count(fast, nn.Conv2d) == count(model, nn.Conv2d)
    assert sorted(fast.state_dict()) == sorted(f"model.{k}" for k in model.state_dict())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed compile would warn and run eagerly
        out = fast(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
