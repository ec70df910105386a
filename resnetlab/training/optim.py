"""The optimizer, with weight decay optionally kept off normalization layers and biases.

``--no-wd-norm-bias`` follows torchvision's ``--norm-weight-decay 0`` and timm's
default: decaying BatchNorm scales and biases only fights the normalization.
"""

from __future__ import annotations

import torch
from torch import nn

# _NormBase: BatchNorm*, SyncBatchNorm and InstanceNorm*
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, no_wd_norm_bias: bool) -> list[dict]:
    """One group with ``weight_decay``, and, with ``no_wd_norm_bias``, one without it."""
    if not no_wd_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                (no_decay if is_norm or name == "bias" else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def scale_backbone(groups: list[dict], head: set[int], lr: float, scale: float) -> list[dict]:
    """Each group split into its head part (the parameters whose ids are in ``head``), at
    ``lr``, and its backbone part, at ``lr * scale``; the schedule keeps the ratio. The head's
    groups come first: group 0's lr is the one the run logs, and it is --lr."""
    top, backbone = [], []
    for group in groups:
        mine = [p for p in group["params"] if id(p) in head]
        rest = [p for p in group["params"] if id(p) not in head]
        if mine:
            top.append({**group, "params": mine})
        if rest:
            backbone.append({**group, "params": rest, "lr": lr * scale})
    return top + backbone


def build_optimizer(
    model: nn.Module,
    opt: str,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    no_wd_norm_bias: bool,
    backbone_lr_scale: float = 1.0,
    head: set[int] | None = None,
) -> torch.optim.Optimizer:
    """SGD (the paper's) or AdamW, with the multi-tensor (``foreach``) update; with
    ``backbone_lr_scale``, every parameter but those in ``head`` (ids) at that share of lr."""
    groups = param_groups(model, weight_decay, no_wd_norm_bias)
    if backbone_lr_scale != 1.0:
        groups = scale_backbone(groups, head or set(), lr, backbone_lr_scale)
    common = {"lr": lr, "weight_decay": weight_decay, "foreach": True}
    if opt == "sgd":
        return torch.optim.SGD(groups, momentum=momentum, nesterov=nesterov, **common)
    if opt == "adamw":
        return torch.optim.AdamW(groups, **common)
    raise ValueError(f"unknown optimizer {opt!r}")
