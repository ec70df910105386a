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
    header = ("model", "family", "parameters", "input", "classes", "paper")
    cells = [
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
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    right = {2, 4}  # numbers align right

    def line(cols: tuple[str, ...]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(tuple("-" * w for w in widths))]
    out += [line(c) for c in cells]
    return "\n".join(out)
