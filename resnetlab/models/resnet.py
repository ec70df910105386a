"""ImageNet-style residual networks (He et al. 2015) on torchvision's own blocks, layer builder
and forward: its attribute names are the checkpoint format, so its state_dicts load strictly.
The helpers and blocks here serve the CIFAR and plain networks too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torchvision.models import resnet

from resnetlab.errors import UserError
from resnetlab.models.registry import register_builder

HE2015 = "He et al. 2015, Deep Residual Learning (arXiv:1512.03385)"
ZAGORUYKO2016 = "Zagoruyko & Komodakis 2016, Wide Residual Networks (arXiv:1605.07146)"
XIE2017 = "Xie et al. 2017, Aggregated Residual Transformations (arXiv:1611.05431)"

NormLayer = Callable[[int], nn.Module]


def init_weights(model: nn.Module) -> None:
    """The papers' initialisation: Kaiming normal (fan_out) convs, BN weight 1 and bias 0.
    Skipped on the meta device, where tensors hold no values and the fills only cost time."""
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def zero_init_last_bn(model: nn.Module) -> None:
    """Zero every residual block's last BN, so it starts as the identity (Goyal et al. 2017)."""
    for m in model.modules():
        last = getattr(m, "last_bn", None)
        if callable(last) and isinstance(last(), nn.BatchNorm2d):
            nn.init.constant_(last().weight, 0)


class BasicBlock(resnet.BasicBlock):
    """torchvision's two 3x3 convs plus a shortcut; ``residual=False`` gives the paper's plain
    block (the same keys, no addition)."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: NormLayer | None = None,
        residual: bool = True,
    ) -> None:
        if groups != 1 or base_width != 64:
            raise UserError("BasicBlock supports only groups=1 and base_width=64")
        if dilation > 1:
            raise UserError("dilation > 1 is not supported in BasicBlock")
        if downsample is not None and not residual:
            raise ValueError("a plain block has no shortcut to downsample")
        super().__init__(inplanes, planes, stride, downsample, norm_layer=norm_layer)
        self.residual = residual

    def last_bn(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        if self.residual:
            return super().forward(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class Bottleneck(resnet.Bottleneck):
    """torchvision's 1x1 reduce, 3x3 (carrying the stride: "V1.5"), 1x1 expand by 4."""

    def last_bn(self) -> nn.Module:
        return self.bn3


class ResNet(resnet.ResNet):
    """torchvision's network (7x7/2 stem, max-pool, four stages, average pool, fc) with
    ``in_channels``. The stem is built with them rather than swapped in afterwards, which would
    draw other random numbers: so every seed gives torchvision's weights, draw for draw."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None,
        norm_layer: NormLayer | None = None,
    ) -> None:
        nn.Module.__init__(self)  # not torchvision's __init__: its stem has 3 channels
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes = 64
        self.dilation = 1
        dilate = replace_stride_with_dilation or [False, False, False]
        if len(dilate) != 3:
            raise UserError(f"replace_stride_with_dilation needs 3 booleans, got {dilate}")
        self.groups = groups
        self.base_width = width_per_group

        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        init_weights(self)
        if zero_init_residual:
            zero_init_last_bn(self)


_IMAGENET = {"family": "imagenet", "input_size": (3, 224, 224), "num_classes": 1000}
_LAYERS = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def _imagenet(name: str, depth: int, paper: str, doc: str, **fixed: int) -> Callable[..., ResNet]:
    """Register a network of paper Table 1's depths; ``fixed`` arguments win over the caller's
    and fill in the docstring."""
    block = BasicBlock if depth < 50 else Bottleneck

    def build(num_classes: int, in_channels: int, **kwargs: Any) -> ResNet:
        return ResNet(block, _LAYERS[depth], num_classes, in_channels, **{**kwargs, **fixed})

    return register_builder(name, build, doc.format(depth=depth, **fixed), paper=paper, **_IMAGENET)


_TABLE1 = "ResNet-{depth} of paper Table 1."
_WIDE = "ResNet-{depth} with bottlenecks twice as wide."
_RESNEXT = "ResNeXt-{depth}: {groups} groups of {width_per_group} channels in stage 1's 3x3s."
resnet18 = _imagenet("resnet18", 18, HE2015, _TABLE1)
resnet34 = _imagenet("resnet34", 34, HE2015, _TABLE1)
resnet50 = _imagenet("resnet50", 50, HE2015, _TABLE1)
resnet101 = _imagenet("resnet101", 101, HE2015, _TABLE1)
resnet152 = _imagenet("resnet152", 152, HE2015, _TABLE1)
wide_resnet50_2 = _imagenet("wide_resnet50_2", 50, ZAGORUYKO2016, _WIDE, width_per_group=128)
wide_resnet101_2 = _imagenet("wide_resnet101_2", 101, ZAGORUYKO2016, _WIDE, width_per_group=128)
resnext50_32x4d = _imagenet("resnext50_32x4d", 50, XIE2017, _RESNEXT, groups=32, width_per_group=4)
resnext101_32x8d = _imagenet(
    "resnext101_32x8d", 101, XIE2017, _RESNEXT, groups=32, width_per_group=8
)
