"""A model's layers, parameters and multiply-adds, counted on a real forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnetlab.errors import UserError, first_line


@dataclass
class LayerRow:
    """One call of one module during the forward pass (a reused ReLU gets one per call)."""

    name: str  # dotted path, as in the state_dict keys ("" is the model itself)
    kind: str  # class name
    depth: int
    output_shape: tuple[int, ...] | None
    parameters: int | None  # None on repeated calls of the same module
    macs: int | None  # None on repeated calls (the counter sums all calls of a module)


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-accumulates of one forward pass over ``batch_size`` inputs of ``input_size``.

    Counts convolutions and matrix products (what torchvision's "GFLOPS" count);
    works on any device, including meta. FLOPs are twice this.
    """
    return layer_rows(model, input_size, batch_size)[1]


def layer_rows(
    model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1
) -> tuple[list[LayerRow], int]:
    """The layer tree in call order with output shapes, and the total MACs.

    Counted on one eval-mode, no-grad forward pass of zeros; the model's mode is kept.
    """
    input_size = tuple(input_size)
    if len(input_size) != 3 or any(d < 1 for d in input_size):
        raise UserError(f"input size must be 3 positive numbers (C H W), got {input_size}")
    rows: list[LayerRow] = []
    running: list[LayerRow] = []  # the calls under way, innermost last
    seen: set[int] = set()
    names = {id(m): n for n, m in model.named_modules()}

    def before(module: nn.Module, _inputs: object) -> None:
        name = names[id(module)]
        params = sum(p.numel() for p in module.parameters()) if id(module) not in seen else None
        seen.add(id(module))
        depth = 0 if name == "" else name.count(".") + 1
        rows.append(LayerRow(name, type(module).__name__, depth, None, params, None))
        running.append(rows[-1])

    def after(module: nn.Module, _inputs: object, output: object) -> None:
        row = running.pop()
        if isinstance(output, torch.Tensor):
            row.output_shape = tuple(output.shape)

    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device, dtype = (param.device, param.dtype) if param is not None else ("cpu", torch.float32)
    x = torch.zeros(batch_size, *input_size, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    handles = [m.register_forward_pre_hook(before) for m in model.modules()]
    handles += [m.register_forward_hook(after) for m in model.modules()]
    was_training = model.training
    model.eval()  # a train-mode pass would update the BatchNorm running statistics
    try:
        with torch.no_grad(), counter:
            model(x)
    except RuntimeError as e:
        raise UserError(
            f"{type(model).__name__} cannot take input size {tuple(input_size)}: {first_line(e)}"
        ) from e
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    # The counter names modules "<RootClass>.<dotted path>"; the root is "<RootClass>".
    root = type(model).__name__
    flops = {key: sum(per_op.values()) for key, per_op in counter.get_flop_counts().items()}
    for row in rows:
        if row.parameters is not None:
            key = root if row.name == "" else f"{root}.{row.name}"
            row.macs = flops.get(key, 0) // 2
    return rows, counter.get_total_flops() // 2


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def format_summary(
    title: str, rows: list[LayerRow], total_macs: int, trainable: int, max_depth: int | None
) -> str:
    shown = [r for r in rows if r.depth >= 1 and (max_depth is None or r.depth <= max_depth)]
    cells = [
        (
            "  " * (r.depth - 1) + f"{r.name} ({r.kind})",
            "-" if r.output_shape is None else str(list(r.output_shape)),
            "" if not r.parameters else f"{r.parameters:,}",
            "" if not r.macs else f"{r.macs:,}",
        )
        for r in shown
    ]
    header = ("Layer (type)", "Output shape", "Params", "MACs")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
    justify = (str.ljust, str.ljust, str.rjust, str.rjust)
    table = [
        "  ".join(j(v, w) for j, v, w in zip(justify, c, widths, strict=True)).rstrip()
        for c in [header, *cells]
    ]
    total_params = rows[0].parameters or 0
    out = [title, "", table[0], "-" * len(table[0]), *table[1:]]
    out += [
        "",
        f"Parameters: {total_params:,} (trainable {trainable:,})",
        f"MACs:       {total_macs:,} ({_si(total_macs)}), multiply-accumulates of one forward "
        'pass (conv and linear layers): what torchvision calls "GFLOPS"',
        f"FLOPs:      {2 * total_macs:,} ({_si(2 * total_macs)}) = 2 x MACs",
    ]
    return "\n".join(out)
