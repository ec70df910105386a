"""ImageNet-style residual networks (He et al. 2015) on torchvision's own blocks, layer builder
and forward: its attribute names are the checkpoint format, so its state_dicts load strictly.
The helpers and blocks here serve the CIFAR and plain networks too.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import resnet

from resnetlab.errors import UserError
from resnetlab.models.registry import register_model

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


@register_model(**_IMAGENET, paper=HE2015)
def resnet18(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-18, paper Table 1 (11.7M parameters, 1.8G MACs)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=HE2015)
def resnet34(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-34, paper Table 1 (21.8M parameters, 3.6G MACs)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=HE2015)
def resnet50(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-50, paper Table 1 (25.6M parameters, 4.1G MACs in the V1.5 layout)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=HE2015)
def resnet101(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-101, paper Table 1 (44.5M parameters, 7.8G MACs)."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=HE2015)
def resnet152(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-152, paper Table 1 (60.2M parameters, 11.5G MACs)."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=ZAGORUYKO2016)
def wide_resnet50_2(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide (68.9M parameters)."""
    kwargs["width_per_group"] = 64 * 2
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=ZAGORUYKO2016)
def wide_resnet101_2(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide (126.9M parameters)."""
    kwargs["width_per_group"] = 64 * 2
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=XIE2017)
def resnext50_32x4d(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNeXt-50 (32x4d): 32 groups of 4 channels in the first stage's 3x3 (25.0M)."""
    kwargs.update(groups=32, width_per_group=4)
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET, paper=XIE2017)
def resnext101_32x8d(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNeXt-101 (32x8d): 32 groups of 8 channels in the first stage's 3x3 (88.8M)."""
    kwargs.update(groups=32, width_per_group=8)
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, **kwargs)
