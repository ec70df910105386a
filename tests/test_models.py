"""The model zoo against published parameter counts, torchvision, and hand-made tensors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import resnetlab.models as zoo
from resnetlab.errors import UserError
from resnetlab.models import create_model, get_model_entry, list_models
from resnetlab.models.cifar_resnet import ShortcutA
from resnetlab.models.preact_resnet import PreActBasicBlock, PreActBottleneck
from resnetlab.models.resnet import BasicBlock, Bottleneck

IMAGENET = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on 2 shared cores, OpenMP spinning makes 2 threads several x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return n_params(create_model(name, **kwargs))


def test_registry_holds_the_whole_zoo_and_builders_import_by_name() -> None:
    expected = {
        *IMAGENET,
        *(f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)),
        *(f"plain{d}" for d in (20, 32, 44, 56, 110)),
        "preact_resnet110",
        "preact_resnet164",
        "preact_resnet1001",
        "wrn28_10",
        "cifar_resnet18",
        "cifar_resnet34",
        "mnist_cnn",
    }
    assert set(list_models()) == expected
    for name in expected:
        entry = get_model_entry(name)
        assert getattr(zoo, name) is entry.builder
        assert entry.builder.__doc__, f"{name} has no docstring"
        assert entry.paper
    assert list_models("plain") == ["plain20", "plain32", "plain44", "plain56", "plain110"]


# --- parameter counts: the published numbers -------------------------------------------------

PUBLISHED = {
    # torchvision's model cards, 1000 classes
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    # He et al. 2015 Table 6 (0.27M ... 19.4M), exact for option A and 10 classes
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
    "cifar_resnet18": 11_173_962,
    "mnist_cnn": 44_426,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_count_is_the_published_one(name: str) -> None:
    assert meta_params(name) == PUBLISHED[name]


def test_plain_twins_have_exactly_the_parameters_of_the_option_a_resnets() -> None:
    # Option A is parameter-free, so the only difference is the additions.
    for depth in (20, 32, 44, 56, 110):
        assert meta_params(f"plain{depth}") == PUBLISHED[f"resnet{depth}"]


def test_option_b_adds_two_projections() -> None:
    # resnet20, 16->32 and 32->64: 1x1 convs (16*32 + 32*64) plus their BNs (2*32 + 2*64).
    assert meta_params("resnet20", shortcut="B") == 269_722 + 512 + 2048 + 64 + 128


def test_papers_rounded_counts_for_the_models_beyond_he2015() -> None:
    # He et al. 2016 Table 3: 164 layers 1.7M; Zagoruyko & Komodakis 2016: WRN-28-10 36.5M.
    assert round(meta_params("preact_resnet164") / 1e6, 1) == 1.7
    assert round(meta_params("preact_resnet110") / 1e6, 1) == 1.7
    assert round(meta_params("wrn28_10") / 1e6, 1) == 36.5
    # The paper's 10.2M for ResNet-1001 counts the convolution weights; BN and fc add 0.15M.
    with torch.device("meta"):
        model = create_model("preact_resnet1001")
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert round(conv / 1e6, 1) == 10.2
    assert abs(n_params(model) - 10.2e6) / 10.2e6 < 0.015


def test_num_classes_only_changes_the_head() -> None:
    # fc: (features + 1) * classes, so 100 classes add 90 * 65 to resnet20 (64 features).
    assert meta_params("resnet20", num_classes=100) == 269_722 + 90 * 65
    assert meta_params("resnet50", num_classes=10) == 25_557_032 - 990 * 2049


# --- the contract every registered model keeps ------------------------------------------------

DEEP = {"resnet1202", "preact_resnet1001"}


def _spatial(name: str) -> int:
    entry = get_model_entry(name)
    if entry.family == "mnist":
        return 28  # the fully connected layer fixes the size
    if entry.family == "imagenet":
        return 32  # 32 -> 1x1 after the five strides: small and still valid
    return 8 if name in DEEP else 16  # three or four stages: 8 -> 2x2, 16 -> 4x4 (or 2x2)


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in model.named_buffers() if "running" in n]


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name: str) -> None:
    entry = get_model_entry(name)
    in_channels = 3 if entry.input_size[0] == 1 else 1  # always the non-default
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=in_channels)
    size = _spatial(name)
    x = torch.randn(2, in_channels, size, size)

    # train mode: batch statistics are used and the running ones move
    model.train()
    before = _bn_buffers(model)
    out = model(x)
    assert out.shape == (2, 7)
    nn.functional.cross_entropy(out, torch.tensor([1, 6])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    after = _bn_buffers(model)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (entry.family != "mnist")
    if has_bn:
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))

    # eval mode: deterministic, statistics frozen, and different from the batch-statistics pass
    model.eval()
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(after, _bn_buffers(model), strict=True))
    if has_bn:
        assert not torch.allclose(first, out.detach())
    else:
        assert torch.allclose(first, out.detach())


def test_default_input_sizes_give_default_outputs() -> None:
    for name in ("resnet20", "mnist_cnn", "cifar_resnet18", "preact_resnet110"):
        entry = get_model_entry(name)
        model = create_model(name).eval()
        with torch.no_grad():
            out = model(torch.randn(1, *entry.input_size))
        assert out.shape == (1, entry.num_classes)
        assert model.conv1.in_channels == entry.input_size[0]


def test_wide_resnet_dropout_acts_in_training_only() -> None:
    model = zoo.wrn28_10(dropout=0.3)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 12  # one per block
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


# --- option A, hand-made ----------------------------------------------------------------------


def test_option_a_subsamples_and_pads_with_zeros() -> None:
    x = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    out = ShortcutA(2, 4, stride=2)(x)
    expected = torch.tensor(
        [
            [
                [[0.0, 2.0], [8.0, 10.0]],
                [[16.0, 18.0], [24.0, 26.0]],
                [[0, 0], [0, 0]],
                [[0, 0], [0, 0]],
            ]
        ]
    )
    assert torch.equal(out, expected)
    assert list(ShortcutA(2, 4, 2).parameters()) == []


def test_option_a_carries_the_input_into_the_block_output() -> None:
    model = zoo.resnet20(zero_init_residual=True).eval()
    block = model.layer2[0]  # 16 -> 32 channels, 32x32 -> 16x16
    assert isinstance(block.downsample, ShortcutA)
    x = torch.rand(2, 16, 32, 32)  # non-negative, so relu leaves the shortcut untouched
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(out[:, 16:], torch.zeros(2, 16, 16, 16))


def test_shortcut_options_and_their_keys() -> None:
    a = zoo.resnet20().state_dict()
    b = zoo.resnet20(shortcut="B").state_dict()
    assert not any("downsample" in k for k in a)
    assert b["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
    assert b["layer3.0.downsample.1.running_var"].shape == (64,)
    assert set(b) - set(a) == {k for k in b if "downsample" in k}
    plain = zoo.plain20()
    assert not any(blk.residual for blk in plain.modules() if isinstance(blk, BasicBlock))
    with pytest.raises(UserError, match="shortcut"):
        zoo.resnet20(shortcut="C")
    with pytest.raises(UserError, match="plain"):
        zoo.plain20(shortcut="A")


def test_plain_block_has_no_shortcut() -> None:
    # With the residual branch zeroed by hand, a plain block outputs relu(0) = 0 everywhere,
    # where the ResNet block would pass its input through.
    for name, expect_identity in (("plain20", False), ("resnet20", True)):
        block = create_model(name).layer1[1].eval()
        nn.init.zeros_(block.bn2.weight)
        x = torch.rand(1, 16, 8, 8)
        with torch.no_grad():
            out = block(x)
        assert torch.equal(out, x) == expect_identity
        assert torch.equal(out, torch.zeros_like(x)) == (not expect_identity)


# --- zero_init_residual -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("resnet18", 32),
        ("resnext50_32x4d", 32),
        ("resnet20", 16),
        ("cifar_resnet18", 16),
        ("preact_resnet110", 8),
        ("preact_resnet164", 8),
        ("wrn28_10", 8),
    ],
)
def test_zero_init_residual_makes_every_block_the_identity_map(name: str, size: int) -> None:
    model = create_model(name, zero_init_residual=True).eval()
    blocks = [
        m
        for m in model.modules()
        if isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck))
    ]
    assert blocks
    seen: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o))) for b in blocks]
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
        for h in hooks:
            h.remove()
        assert len(seen) == len(blocks)
        for block, x, out in seen:
            assert torch.count_nonzero(block.last_bn().weight) == 0
            if isinstance(block, (BasicBlock, Bottleneck)):
                shortcut = x if block.downsample is None else block.downsample(x)
                expected = torch.relu(shortcut)
            else:  # pre-activation: nothing after the addition; projections see BN-ReLU(x)
                pre = torch.relu(block.bn1(x))
                expected = x if block.downsample is None else block.downsample(pre)
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_zero_init_residual_is_refused_without_residual_blocks() -> None:
    for name in ("plain20", "mnist_cnn"):
        with pytest.raises(UserError, match="zero_init_residual"):
            create_model(name, zero_init_residual=True)


# --- torchvision equivalence ------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGENET)
def test_torchvision_state_dict_loads_strictly_and_gives_the_same_outputs(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    with torch.device("meta"):
        ours = create_model(name)
    ref_state = reference.state_dict()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref_state.items()
    ]
    ours.load_state_dict(ref_state, strict=True, assign=True)
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("name", "zero_init_residual"), [("resnet18", False), ("resnet50", True)])
def test_initialisation_is_torchvisions_draw_for_draw(name: str, zero_init_residual: bool) -> None:
    # Same seed, same module order, same Kaiming fan_out / BN constants: identical weights.
    torch.manual_seed(1)
    ours = create_model(name, zero_init_residual=zero_init_residual).state_dict()
    torch.manual_seed(1)
    ref = getattr(torchvision.models, name)(zero_init_residual=zero_init_residual)
    for key, value in ref.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_in_channels_one_for_imagenet_models() -> None:
    # torchvision has no in_channels (vision#7356); ours changes only the stem's weight.
    with torch.device("meta"):
        grey = create_model("resnet50", in_channels=1)
    assert grey.conv1.weight.shape == (64, 1, 7, 7)
    assert n_params(grey) == PUBLISHED["resnet50"] - 2 * 64 * 49


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="resnet20"):
        create_model("resnt20")
    with pytest.raises(UserError, match="num_classes"):
        create_model("resnet20", num_classes=0)
    with pytest.raises(UserError, match="dropout"):
        create_model("wrn28_10", dropout=1.5)


def test_unknown_model_option_is_a_user_error():
    with pytest.raises(UserError, match="unexpected keyword argument 'shortcutt'"):
        create_model("resnet20", shortcutt="B")
