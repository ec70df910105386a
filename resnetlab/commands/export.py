"""Export a checkpoint to ONNX or to a self-contained safetensors bundle.

onnx: one .onnx file with a dynamic batch dimension (input "input", output
"logits"), exported with torch.onnx and checked with onnxruntime before it is
written: its outputs must equal PyTorch's within 1e-4 on random inputs, and on
the images given with --images. The checkpoint's metadata (classes, mean, std,
input size) is stored in the model's metadata_props under "resnetlab".
Needs the onnx extra: pip install 'resnetlab[onnx]'.

safetensors: a folder holding model.safetensors (the metadata inside) and
config.json, which `create_model(NAME, weights=FOLDER)`, `resnetlab eval
--checkpoint FOLDER` and `resnetlab predict --checkpoint FOLDER` read; an --output
ending in .safetensors gives the single file instead.

examples:
  resnetlab export --checkpoint runs/resnet20-cifar10 --format onnx
  resnetlab export --checkpoint runs/resnet20-cifar10 --format onnx --images cat.png
  resnetlab export --checkpoint runs/resnet20-cifar10 --format safetensors --output resnet20/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resnetlab.commands.flags import add_checkpoint
from resnetlab.errors import UserError
from resnetlab.inference.export import FORMATS, default_output, export_onnx, export_safetensors
from resnetlab.inference.predict import find_images, preprocess_fn, read_image
from resnetlab.models.weights import load_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint(parser, "a run folder, an exported bundle folder or a .safetensors file")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="where to write (default: next to the checkpoint, MODEL.onnx or MODEL-safetensors/)",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        default=[],
        metavar="IMAGE_OR_FOLDER",
        help="onnx: also check the export on these images",
    )
    parser.add_argument("--opset", type=int, help="onnx: the ONNX opset (default: torch's)")


def run(args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint).expanduser()
    model, meta = load_checkpoint(checkpoint)
    prepare = preprocess_fn(meta)  # also checks the meta has the input size, mean and std
    default = default_output(checkpoint, meta, args.format)
    output = Path(args.output).expanduser() if args.output else default
    if args.format == "safetensors":
        if args.images or args.opset is not None:
            raise UserError("--images and --opset only apply to --format onnx")
        export_safetensors(model, meta, output)
        print(f"wrote {output}")
        return 0
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; give a file name such as model.onnx")
    channels = int(meta["input_size"][0])
    images = [prepare(read_image(p, channels)) for p in find_images(args.images)]
    if args.images and not images:
        raise UserError(f"no images found in {', '.join(args.images)}")
    error = export_onnx(model, meta, output, check_inputs=images, opset=args.opset)
    n = len(images)
    checked = "random inputs" + (f" and {n} image{'s' if n > 1 else ''}" if n else "")
    print(f"wrote {output} (onnxruntime matches PyTorch on {checked}: max error {error:.1e})")
    return 0
