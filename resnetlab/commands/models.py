"""List every registered model: family, parameters, default input size and paper.

Models are built on the meta device (shapes, no memory, no initialisation cost),
so the table is instant even for resnet1202 and wide_resnet101_2.

  resnetlab models
  resnetlab models --family cifar
"""

from __future__ import annotations

import argparse

from resnetlab.models.table import format_table, model_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", help="only this family (imagenet, cifar, plain, ...)")


def run(args: argparse.Namespace) -> int:
    print(format_table(model_table(args.family)))
    return 0
