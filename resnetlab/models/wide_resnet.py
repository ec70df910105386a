"""Wide residual networks for CIFAR (Zagoruyko & Komodakis 2016). WRN-d-k: the pre-activation
network with (d-4)/6 basic blocks per stage, k times as wide (16k/32k/64k), optional dropout.
"""

from __future__ import annotations

from functools import partial

from resnetlab.errors import UserError
from resnetlab.models.preact_resnet import PreActBasicBlock, PreActResNet
from resnetlab.models.registry import register_builder
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


_WIDE = {"family": "wide", "input_size": (3, 32, 32), "num_classes": 10, "paper": ZAGORUYKO2016}
_WRN28_10 = "WRN-28-10 of paper Tables 4 and 6; ``dropout=0.3`` gives its variant with dropout."
wrn28_10 = register_builder("wrn28_10", partial(wide_resnet_cifar, 28, 10), _WRN28_10, **_WIDE)
