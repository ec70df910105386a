"""An exponential moving average of the weights and BatchNorm statistics: torch's
``AveragedModel(use_buffers=True)``, as torchvision's reference uses it, with ``decay`` per
optimizer step whatever the update interval (so the horizon does not move with the cost
knob) and TensorFlow's warm-up, so that a short run's average does not cling to the init.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["create_ema", "ema_decay_at"]


def ema_decay_at(step: int, decay: float) -> float:
    """The per-step decay after ``step`` optimizer steps: ``decay``, held lower at the start."""
    return min(decay, (1 + step) / (10 + step))


def _multi_avg_fn(decay: float, every: int) -> Callable[..., None]:
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:  # noqa: ANN001
        # AveragedModel has already read n_averaged on the host: int() costs no extra sync.
        d = ema_decay_at(int(n_averaged) * every, decay) ** every
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): the model's count
            torch._foreach_copy_(averaged, current)

    return update


def create_ema(model: nn.Module, decay: float, every: int) -> AveragedModel:
    """The average of ``model``'s parameters and buffers; ``update_parameters(model)`` steps it.

    The copy keeps the model's device and memory format (channels_last included).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    return AveragedModel(model, multi_avg_fn=_multi_avg_fn(decay, every), use_buffers=True)
