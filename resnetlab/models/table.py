"""The table of registered models."""

from __future__ import annotations

import torch

from resnetlab.errors import UserError
from resnetlab.models import create_model, get_model_entry, list_models


def count_parameters(name: str, num_classes: int | None = None) -> int:
    """Parameters of a registered model, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def model_table(family: str | None = None) -> list[dict[str, object]]:
    """One row per registered model, in registration order."""
    families = sorted({get_model_entry(n).family for n in list_models()})
    if family is not None and family not in families:
        raise UserError(f"unknown family {family!r}; known: {', '.join(families)}")
    return [
        {
            "name": entry.name,
            "family": entry.family,
            "parameters": count_parameters(entry.name),
            "input_size": entry.input_size,
            "num_classes": entry.num_classes,
            "paper": entry.paper,
        }
        for entry in map(get_model_entry, list_models(family))
    ]


def format_table(rows: list[dict[str, object]]) -> str:
    """Aligned columns under a ruled header."""
    header = ("model", "family", "parameters", "input", "classes", "paper")
    cells = [header] + [
        (
            str(r["name"]),
            str(r["family"]),
            f"{r['parameters']:,}",
            "x".join(str(d) for d in r["input_size"]),  # type: ignore[union-attr]
            str(r["num_classes"]),
            str(r["paper"]),
        )
        for r in rows
    ]
    widths = [max(len(c) for c in column) for column in zip(*cells, strict=True)]
    cells.insert(1, tuple("-" * w for w in widths))
    return "\n".join(
        "  ".join(
            c.rjust(w) if i in (2, 4) else c.ljust(w)  # numbers align right
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        ).rstrip()
        for cols in cells
    )
