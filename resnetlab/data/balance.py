"""Loss weights for imbalanced classes (``--class-weights balanced``): scikit-learn's
"balanced" heuristic, ``n_samples / (n_classes * count_c)``, so that every class weighs as much
in the loss as if the classes were equally frequent."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from resnetlab.errors import UserError


def balanced_class_weights(labels: Tensor, names: Sequence[str]) -> Tensor:
    """float32 ``[len(names)]`` weights from the training ``labels`` (int64, 0..k-1)."""
    k = len(names)
    counts = torch.bincount(labels.cpu(), minlength=k)
    if len(counts) > k:
        raise ValueError(f"label {len(counts) - 1} outside 0..{k - 1}")
    empty = [names[c] for c in range(k) if counts[c] == 0]
    if empty:
        raise UserError(
            f"--class-weights balanced: no training images of class {', '.join(empty[:5])}"
        )
    return (len(labels) / (k * counts.double())).float()
