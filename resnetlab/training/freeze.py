"""Fine-tuning only the head: ``--freeze`` keeps the pretrained backbone exactly as loaded.

The backbone's parameters stop requiring gradients, and its BatchNorm layers stay in eval
mode, so their running statistics are not updated by the new data: the training loop calls
``model.train()`` every epoch, so a forward pre-hook puts each of them back in eval mode.
"""

from __future__ import annotations

from torch import nn

from resnetlab.models.pretrained import head


def _stay_in_eval(module: nn.Module, args: tuple) -> None:
    module.train(False)


def freeze_backbone(model: nn.Module) -> None:
    """Everything but the head (the last linear layer) frozen, BatchNorm statistics included."""
    name, fc = head(model)
    kept = {id(p) for p in fc.parameters()}
    for p in model.parameters():
        if id(p) not in kept:
            p.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_stay_in_eval)
            module.eval()


def head_parameters(model: nn.Module) -> set[int]:
    """The ids of the head's parameters: what ``--backbone-lr-scale`` leaves at the base lr."""
    return {id(p) for p in head(model)[1].parameters()}
