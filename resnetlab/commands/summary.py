"""Layer tree of a model with output shapes, parameters, MACs and FLOPs.

MACs are multiply-accumulates of one forward pass of one image, counted by
torch.utils.flop_counter over convolutions and linear layers; torchvision's
"GFLOPS" (4.09 for resnet50 at 224x224) are these. FLOPs = 2 x MACs.
The model is built on the meta device, so even resnet1202 needs no memory.

  resnetlab summary resnet20
  resnetlab summary resnet18 --input-size 1 64 64 --num-classes 10 --depth 2
"""

from __future__ import annotations

import argparse

import torch

from resnetlab.errors import UserError
from resnetlab.models import create_model, get_model_entry
from resnetlab.reports.summary import format_summary, layer_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a registered model name (see `resnetlab models`)")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        metavar=("C", "H", "W"),
        help="one input's size; default: the model's own (3 32 32 for CIFAR models)",
    )
    parser.add_argument("--num-classes", type=int, help="default: the model's own")
    parser.add_argument(
        "--in-channels", type=int, help="input channels; default: C of --input-size"
    )
    parser.add_argument(
        "--depth", type=int, default=3, help="deepest tree level shown (default 3; 0: all)"
    )


def run(args: argparse.Namespace) -> int:
    entry = get_model_entry(args.model)
    input_size = tuple(args.input_size or entry.input_size)
    in_channels = input_size[0] if args.in_channels is None else args.in_channels
    if args.input_size and in_channels != input_size[0]:
        raise UserError(
            f"--input-size has {input_size[0]} channels but --in-channels is {in_channels}"
        )
    input_size = (in_channels, *input_size[1:])
    if args.depth < 0:
        raise UserError(f"--depth must be 0 (all) or more, got {args.depth}")

    with torch.device("meta"):
        model = create_model(args.model, num_classes=args.num_classes, in_channels=in_channels)
    rows, macs = layer_rows(model, input_size)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    classes = args.num_classes or entry.num_classes
    title = (
        f"{args.model} ({type(model).__name__}, {entry.family}; {entry.paper})\n"
        f"input {'x'.join(map(str, input_size))}, {classes} classes, batch of 1"
    )
    print(format_summary(title, rows, macs, trainable, args.depth or None))
    return 0
