"""Wide residual networks for CIFAR (Zagoruyko & Komodakis 2016). WRN-d-k: the pre-activation
network with (d-4)/6 basic blocks per stage, k times as wide (16k/32k/64k), optional dropout.
"""

from __future__ import annotations

from resnetlab.errors import UserError
from resnetlab.models.preact_resnet import PreActBasicBlock, PreActResNet
from resnetlab.models.registry import register_model
from resnetlab.models.resnet import ZAGORUYKO2016


def wide_resnet_cifar(
    depth: int, widen_factor: int, num_classes: int = 10, in_channels: int = 3, **kwargs
) -> PreActResNet:
    """WRN-depth-widen_factor; ``dropout=0.3`` is the paper's setting with dropout."""
    n, rest = divmod(depth - 4, 6)
    if rest or n < 1:
        raise UserError(f"a wide ResNet has depth 6n+4, got {depth}")
    if widen_factor < 1:
        raise UserError(f"widen_factor must be at least 1, got {widen_factor}")
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    return PreActResNet(
        PreActBasicBlock, [n, n, n], widths, num_classes, in_channels, stem_width=16, **kwargs
    )


@register_model(family="wide", input_size=(3, 32, 32), num_classes=10, paper=ZAGORUYKO2016)
def wrn28_10(num_classes: int = 10, in_channels: int = 3, **kwargs) -> PreActResNet:
    """WRN-28-10 (36.5M): 4.00% CIFAR-10 error, 3.89% with dropout 0.3 (paper Table 4/6)."""
    return wide_resnet_cifar(28, 10, num_classes, in_channels, **kwargs)
