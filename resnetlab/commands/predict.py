"""Top-k classes of images with a trained model.

The preprocessing comes from the checkpoint, so an image is prepared exactly as the
model saw its evaluation data: converted to the model's channels (grayscale for
MNIST), resized to the input size (or, for models trained on image folders, resized
to the checkpoint's resize size and centre-cropped), and normalised with the
training set's mean and std. Folders are searched recursively for images.

An image that cannot be read is reported on stderr; the others are still predicted
and the exit code is then 1.

examples:
  resnetlab predict --checkpoint runs/resnet20-cifar10 cat.png dog.jpg
  resnetlab predict --checkpoint model.safetensors photos/ --topk 3 --json
"""

from __future__ import annotations

import argparse
import json

from resnetlab.commands.flags import add_checkpoint, add_inference
from resnetlab.commands.per_image import ImageResults
from resnetlab.device import resolve_device
from resnetlab.inference.predict import iter_predictions
from resnetlab.models.weights import load_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint(parser, "a run folder, an exported bundle folder or a .safetensors file")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_inference(parser, batch_size=32, precision="auto")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    stream = iter_predictions(
        model,
        meta,
        args.images,
        topk=args.topk,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
    )
    results, images = [], ImageResults("predict", stream, args.images)
    for pred in images:
        if args.json:
            results.append(pred.to_json())
        else:
            width = max(len(name) for _, name, _ in pred.topk)
            print(pred.image, flush=True)
            for r, (_, name, p) in enumerate(pred.topk, 1):
                print(f"  {r:>2}  {name:<{width}}  {100 * p:6.2f}%", flush=True)
    code = images.exit_code()
    if args.json:
        print(json.dumps(results, indent=2))
    return code
