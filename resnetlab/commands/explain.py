"""Grad-CAM pictures: where in each image a trained model found the evidence for a class.

One PNG per image (NAME_gradcam.png): the picture as the model saw it (preprocessed as
`resnetlab predict` does) beside it under the heat map, titled with the file name, the
explained class and the top-k probabilities. The heat map is taken at the last stage's
output (layer4 or layer3; the MNIST CNN's conv2) unless --layer names another module.
Needs captum: pip install 'resnetlab[explain]'.

An image that cannot be read is reported on stderr; the others are still explained and
the exit code is then 1.

examples:
  resnetlab explain --checkpoint runs/resnet20-cifar10 cat.png dog.jpg
  resnetlab explain --checkpoint runs/resnet20-cifar10 photos/ --class dog --topk 5
  resnetlab explain --checkpoint model.safetensors cat.png --layer layer2 --output-dir maps
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resnetlab.commands.flags import add_checkpoint, add_setting
from resnetlab.commands.per_image import ImageResults
from resnetlab.device import resolve_device
from resnetlab.inference.gradcam import iter_explanations, plot_explanation
from resnetlab.models.weights import load_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint(parser, "a run folder, an exported bundle folder or a .safetensors file")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument(
        "--class",
        dest="target",
        metavar="NAME_OR_INDEX",
        help="the class to explain (default: each image's top class)",
    )
    parser.add_argument("--topk", type=int, default=3, help="classes in the title (default 3)")
    parser.add_argument(
        "--layer", help="dotted module name to take the heat map at (default: the last stage)"
    )
    parser.add_argument(
        "--output-dir",
        help="where the PNGs go (default: explain/ in the run folder, or beside the file)",
    )
    add_setting(parser, "device", default="auto")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    checkpoint = Path(args.checkpoint).expanduser()
    default_dir = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "explain"
    out_dir = Path(args.output_dir).expanduser() if args.output_dir else default_dir
    stream = iter_explanations(
        model, meta, args.images, layer=args.layer, target=args.target, topk=args.topk
    )
    taken: set[str] = set()
    images = ImageResults("explain", stream, args.images)
    for e in images:
        png = out_dir / png_name(Path(e.image), taken)
        plot_explanation(e, png)
        _, name, p = e.target
        print(f"{e.image}: {name} {100 * p:.2f}% at {e.layer} -> {png}", flush=True)
    return images.exit_code()


def png_name(image: Path, taken: set[str]) -> str:
    """NAME_gradcam.png, numbered when two images share a name (a/x.jpg, b/x.png)."""
    name, n = f"{image.stem}_gradcam.png", 1
    while name in taken:
        n += 1
        name = f"{image.stem}_gradcam-{n}.png"
    taken.add(name)
    return name
