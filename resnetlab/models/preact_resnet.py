"""Pre-activation ResNets (He et al. 2016): BN and ReLU come before each convolution and nothing
follows the addition, so the shortcut path is a clean identity from the first block to the last,
which lets the 1001-layer network train. The wide ResNets reuse these blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.resnet import conv1x1, conv3x3

from resnetlab.errors import UserError
from resnetlab.models.registry import register_builder
from resnetlab.models.resnet import init_weights, zero_init_last_bn

HE2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks (arXiv:1603.05027)"


class _PreActBlock(nn.Module):
    """BN-ReLU, then the block's ``residual`` branch plus the shortcut, and no ReLU after the
    sum. A projection (``downsample``) reads the pre-activated input, as in the paper's code."""

    def residual(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        shortcut = self.downsample(out) if self.downsample is not None else x
        return self.residual(out) + shortcut


class PreActBasicBlock(_PreActBlock):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample

    def last_bn(self) -> nn.Module:
        return self.bn2

    def residual(self, out: Tensor) -> Tensor:
        return self.conv2(self.dropout(self.relu(self.bn2(self.conv1(out)))))


class PreActBottleneck(_PreActBlock):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (with the stride), BN-ReLU-conv1x1 to 4x width."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        if dropout > 0:
            raise UserError("dropout is only implemented for the basic (wide) blocks")
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.downsample = downsample

    def last_bn(self) -> nn.Module:
        return self.bn3

    def residual(self, out: Tensor) -> Tensor:
        out = self.conv2(self.relu(self.bn2(self.conv1(out))))
        return self.conv3(self.relu(self.bn3(out)))


class PreActResNet(nn.Module):
    """3x3 stem, three stages at 32/16/8 maps, final BN-ReLU, average pool, fc.
    ``stem_width`` differs from ``widths[0]`` for the wide networks (16 then 16k)."""

    def __init__(
        self,
        block: type[PreActBasicBlock | PreActBottleneck],
        layers: list[int],
        widths: tuple[int, int, int] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        dropout: float = 0.0,
        stem_width: int = 16,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {dropout}")
        self.inplanes = stem_width
        self.dropout = dropout

        self.conv1 = conv3x3(in_channels, stem_width)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.bn_final = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

        init_weights(self)
        if zero_init_residual:
            zero_init_last_bn(self)

    def _make_layer(
        self,
        block: type[PreActBasicBlock | PreActBottleneck],
        planes: int,
        blocks: int,
        stride: int,
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            # A bare 1x1 conv: the next block's BN normalises the sum anyway.
            downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride))
        layers = [block(self.inplanes, planes, stride, downsample, self.dropout)]
        self.inplanes = out_planes
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, dropout=self.dropout))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)

        x = self.relu(self.bn_final(x))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


_PREACT = {"family": "preact", "input_size": (3, 32, 32), "num_classes": 10, "paper": HE2016}


def _preact(
    block: type[PreActBasicBlock | PreActBottleneck], depth: int, doc: str
) -> Callable[..., PreActResNet]:
    n = (depth - 2) // (9 if block is PreActBottleneck else 6)  # 3 stages of n blocks
    build = partial(PreActResNet, block, [n, n, n], (16, 32, 64))
    return register_builder(f"preact_resnet{depth}", build, doc, **_PREACT)


preact_resnet110 = _preact(PreActBasicBlock, 110, "Pre-activation ResNet-110, paper Table 2.")
preact_resnet164 = _preact(PreActBottleneck, 164, "Pre-activation ResNet-164, paper Table 3.")
preact_resnet1001 = _preact(PreActBottleneck, 1001, "Pre-activation ResNet-1001, paper Table 3.")
