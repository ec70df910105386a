"""An exponential moving average of the weights and BatchNorm statistics: torch's
``AveragedModel(use_buffers=True)``, as torchvision's reference uses it, with ``decay`` per
optimizer step whatever the update interval (so the horizon does not move with the cost
knob) and TensorFlow's warm-up, so that a short run's average does not cling to the init.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(step: int, decay: float) -> float:
    """The per-step decay after ``step`` optimizer steps: ``decay``, held lower at the start."""
    return min(decay, (1 + step) / (10 + step))


def create_ema(model: nn.Module, decay: float, every: int) -> AveragedModel:
    """The average of ``model``'s parameters and buffers, in its device and memory format."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:  # noqa: ANN001
        # AveragedModel has already read n_averaged on the host: int() costs no extra sync.
        d = ema_decay_at(int(n_averaged) * every, decay) ** every
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): the model's count
            torch._foreach_copy_(averaged, current)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
