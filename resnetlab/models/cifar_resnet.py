"""CIFAR-10 residual networks and their plain twins (He et al. 2015, section 4.2): 6n+2
layers in three stages of n BasicBlocks. The plain twins (Fig. 6, the degradation experiment)
are the same network built with ``shortcut=None``: the same blocks minus the additions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import conv1x1, conv3x3

from resnetlab.errors import UserError
from resnetlab.models.registry import register_builder
from resnetlab.models.resnet import HE2015, BasicBlock, Bottleneck, init_weights, zero_init_last_bn

SHORTCUTS = ("A", "B")


class ShortcutA(nn.Module):
    """The paper's option A: identity, subsampled by ``stride``, extra channels zero.
    Parameter-free, so a 6n+2 ResNet has exactly the parameters of its plain twin."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError("option A can only add channels")
        self.extra = out_planes - in_planes
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zeros after the last channel

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


class CifarResNet(nn.Module):
    """3x3 stem, no max-pool, one stage per entry of ``widths``, average pool, fc. ``shortcut``:
    "A" (parameter-free, the paper's CIFAR choice), "B" (projections) or None (plain)."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        widths: tuple[int, ...] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: str | None = "A",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if shortcut is not None and shortcut not in SHORTCUTS:
            raise UserError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if shortcut == "A" and block is not BasicBlock:
            raise UserError("shortcut 'A' is defined for BasicBlock networks only")
        if shortcut is None and block is not BasicBlock:
            raise UserError("plain networks are built from BasicBlocks only")
        if shortcut is None and zero_init_residual:
            raise UserError("zero_init_residual needs shortcuts; a plain network has none")
        if len(layers) != len(widths) or len(widths) not in (3, 4):
            raise ValueError("three or four stages, one entry of layers per stage width")
        self.shortcut = shortcut
        self.inplanes = widths[0]

        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2) if len(widths) == 4 else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

        init_weights(self)
        if zero_init_residual:
            zero_init_last_bn(self)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        layers = []
        out = planes * block.expansion
        for s in [stride] + [1] * (blocks - 1):
            if self.shortcut is None:
                layers.append(BasicBlock(self.inplanes, planes, s, residual=False))
            elif s == 1 and self.inplanes == out:
                layers.append(block(self.inplanes, planes, s))
            elif self.shortcut == "A":
                layers.append(block(self.inplanes, planes, s, ShortcutA(self.inplanes, out, s)))
            else:  # option B, a projection: 1x1 conv and BN, keys downsample.0 and .1
                projection = nn.Sequential(conv1x1(self.inplanes, out, s), nn.BatchNorm2d(out))
                layers.append(block(self.inplanes, planes, s, projection))
            self.inplanes = out
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        if self.layer4 is not None:  # the 4-stage cifar_resnet18 / 34
            x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


_CIFAR = {"family": "cifar", "input_size": (3, 32, 32), "num_classes": 10, "paper": HE2015}
_PLAIN = {**_CIFAR, "family": "plain"}
_CIFAR_LAYOUT = {**_CIFAR, "paper": "He et al. 2015, CIFAR variant (3x3 stem, no max-pool)"}
_WIDTHS_X4 = (64, 128, 256, 512)  # the ImageNet stages, for the CIFAR-layout ResNet-18 / 34


def _six_n_plus_2(depth: int) -> partial[CifarResNet]:
    n = (depth - 2) // 6
    return partial(CifarResNet, BasicBlock, [n, n, n], (16, 32, 64))


def _resnet(depth: int, doc: str) -> Callable[..., CifarResNet]:
    return register_builder(f"resnet{depth}", _six_n_plus_2(depth), doc, **_CIFAR)


def _plain(depth: int, doc: str) -> Callable[..., CifarResNet]:
    def build(num_classes: int, in_channels: int, **kwargs: Any) -> CifarResNet:
        if kwargs.pop("shortcut", None) is not None:
            raise UserError("a plain network has no shortcut to choose")
        return _six_n_plus_2(depth)(num_classes, in_channels, shortcut=None, **kwargs)

    return register_builder(f"plain{depth}", build, doc, **_PLAIN)


def _cifar_layout(depth: int, layers: list[int]) -> Callable[..., CifarResNet]:
    build = partial(CifarResNet, BasicBlock, layers, _WIDTHS_X4, shortcut="B")
    doc = f"ResNet-{depth} for 32x32 images: 3x3 stem, no max-pool, projection shortcuts."
    return register_builder(f"cifar_resnet{depth}", build, doc, **_CIFAR_LAYOUT)


resnet20 = _resnet(20, "ResNet-20 (n=3), paper Table 6.")
resnet32 = _resnet(32, "ResNet-32 (n=5), paper Table 6.")
resnet44 = _resnet(44, "ResNet-44 (n=7), paper Table 6.")
resnet56 = _resnet(56, "ResNet-56 (n=9), paper Table 6.")
resnet110 = _resnet(110, "ResNet-110 (n=18), paper Table 6, which reports the best of 5 runs.")
resnet1202 = _resnet(1202, "ResNet-1202 (n=200), paper Table 6: it overfits CIFAR-10.")
cifar_resnet18 = _cifar_layout(18, [2, 2, 2, 2])
cifar_resnet34 = _cifar_layout(34, [3, 4, 6, 3])
plain20 = _plain(20, "Plain-20: ResNet-20 without shortcuts, paper Fig. 6 (left).")
plain32 = _plain(32, "Plain-32: ResNet-32 without shortcuts, paper Fig. 6 (left).")
plain44 = _plain(44, "Plain-44: ResNet-44 without shortcuts, paper Fig. 6 (left).")
plain56 = _plain(56, "Plain-56: deeper than plain-20 yet worse, the degradation of paper Fig. 1.")
plain110 = _plain(110, "Plain-110: the paper reports it fails to train well (Fig. 6).")
