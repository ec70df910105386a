"""A few classes, and a few images of each (few-shot and imbalance experiments).

``--classes`` keeps some classes in every split, re-indexed 0..k-1 in the dataset's order
(their names follow). ``--per-class N`` keeps the first N training images of each class in an
order shuffled by the subset seed (the run's ``--seed`` unless ``--subset-seed``): one seed
always picks the same images, another seed other ones. The validation split is held out
before (of the kept classes), so it does not shrink with N.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor

from resnetlab.data.order import SUBSET_STREAM, generator
from resnetlab.errors import UserError

D = TypeVar("D")


def parse_classes(spec: str, names: Sequence[str]) -> list[int]:
    """Indices (ascending) of the classes in ``spec``: class names or indices, comma-separated.

    A name wins over an index, so a folder whose classes are called ``0``, ``1``, ... is
    read by name.
    """
    names = list(names)
    items = [item.strip() for item in spec.split(",")]
    keep: list[int] = []
    for item in items:
        if item in names:
            i = names.index(item)
        elif item.isdigit() and int(item) < len(names):
            i = int(item)
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise UserError(
                f"--classes: no class {item!r} in this dataset (its classes: {shown}; "
                f"or an index 0-{len(names) - 1})"
            )
        if i in keep:
            raise UserError(f"--classes names class {names[i]!r} twice")
        keep.append(i)
    if len(keep) < 2:
        raise UserError(f"--classes {spec!r}: a classifier needs at least two classes")
    return sorted(keep)


def relabel(labels: Tensor, keep: Sequence[int], num_classes: int) -> tuple[Tensor, Tensor]:
    """(positions of the samples of a kept class, their labels re-indexed 0..k-1)."""
    table = torch.full((num_classes,), -1, dtype=torch.int64)
    table[torch.tensor(list(keep))] = torch.arange(len(keep))
    new = table[labels]
    where = (new >= 0).nonzero().squeeze(1)
    return where, new[where]


def restrict_folder(dataset: D, keep: Sequence[int]) -> D:
    """A copy of an ImageFolder with the samples of the ``keep`` classes only, re-indexed."""
    out = copy.copy(dataset)
    table = {old: new for new, old in enumerate(keep)}
    out.samples = [(path, table[t]) for path, t in dataset.samples if t in table]
    out.imgs = out.samples
    out.targets = [t for _, t in out.samples]
    out.classes = [dataset.classes[i] for i in keep]
    out.class_to_idx = {c: i for i, c in enumerate(out.classes)}
    return out


def per_class_indices(labels: Tensor, per_class: int, seed: int, names: Sequence[str]) -> Tensor:
    """Sorted positions of the first ``per_class`` samples of each class in a seeded order."""
    if per_class < 1:
        raise UserError(f"per-class must be at least 1, got {per_class}")
    perm = torch.randperm(len(labels), generator=generator(SUBSET_STREAM, seed))
    chosen = []
    for c, name in enumerate(names):
        of_class = perm[labels[perm] == c]
        if len(of_class) < per_class:
            raise UserError(
                f"--per-class {per_class}: class {name!r} has only {len(of_class)} training "
                "images (after any --val-split)"
            )
        chosen.append(of_class[:per_class])
    return torch.cat(chosen).sort().values
