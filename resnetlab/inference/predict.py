"""Top-k classes of images with a trained model, preprocessed as the checkpoint says."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor, nn

from resnetlab.errors import UserError, first_line
from resnetlab.inference.fast import optimize_for_inference

# torchvision is imported inside the functions that use it: it takes over a second, and
# `import resnetlab` (which exports `predict`) must stay fast for every other command.
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}

ImageInput = str | os.PathLike | Tensor


@dataclass
class Prediction:
    """The top-k classes of one image, most likely first; ``error`` says why there are none."""

    image: str
    topk: list[tuple[int, str, float]] = field(default_factory=list)  # (index, name, prob)
    error: str | None = None

    def to_json(self) -> dict:
        return {
            "image": self.image,
            "top": [
                {"rank": r, "index": i, "class": name, "probability": p}
                for r, (i, name, p) in enumerate(self.topk, 1)
            ],
        }


def preprocess_fn(meta: dict) -> Callable[[Tensor], Tensor]:
    """The evaluation preprocessing a checkpoint's meta describes, for one uint8 CHW image."""
    from torchvision.transforms import v2 as T

    missing = [k for k in ("input_size", "mean", "std") if not meta.get(k)]
    if missing:
        raise UserError(f"the checkpoint's metadata lacks {', '.join(missing)}: cannot preprocess")
    channels, height, width = (int(v) for v in meta["input_size"])
    mean, std = [float(v) for v in meta["mean"]], [float(v) for v in meta["std"]]
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"the checkpoint's mean/std have not {channels} values")
    resize = meta.get("resize_size")
    if resize:  # image-folder data: resize the shorter side, then centre-crop
        size = [T.Resize(int(resize)), T.CenterCrop([height, width])]
    else:  # in-memory data: already that size, which Resize leaves as it is
        size = [T.Resize([height, width])]
    return T.Compose([*size, T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])


def read_image(path: str | os.PathLike, channels: int) -> Tensor:
    """A uint8 [channels, H, W] tensor; UserError naming the file if it is not a readable image.

    PIL reads every format torchvision's ImageFolder does, and the EXIF orientation of a
    phone photo is applied, so the model sees the picture upright.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    if channels not in _PIL_MODES:
        raise UserError(f"cannot read images for a model with {channels} input channels")
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert(_PIL_MODES[channels])
            return TF.pil_to_tensor(im)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable image ({first_line(e)})") from None


def find_images(inputs: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files as given, and the image files under folders (recursively, sorted, no hidden ones).

    A folder is searched for what torchvision's ImageFolder reads (and GIFs); a file
    named explicitly is tried whatever its suffix.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    suffixes = {*IMG_EXTENSIONS, ".gif"}
    for item in inputs:
        path = Path(item).expanduser()
        if not path.is_dir():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                    yield Path(root) / name


def iter_predictions(
    model: nn.Module,
    meta: dict,
    images: Iterable[ImageInput],
    *,
    topk: int = 5,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> Iterator[Prediction]:
    """Predictions as each batch finishes, in input order, so a big folder streams.

    ``precision="auto"`` is bf16 where it is native (`optimize_for_inference`), else fp32.
    """
    if topk < 1:
        raise UserError(f"--topk must be at least 1, got {topk}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prepare = preprocess_fn(meta)
    channels = int(meta["input_size"][0])
    classes = list(meta.get("classes") or [])
    model = optimize_for_inference(model, precision=precision)

    def prepared() -> Iterator[tuple[Prediction, Tensor | None]]:
        for i, item in enumerate(images):
            if isinstance(item, Tensor):
                named = [(f"<tensor {i}>", item)]
            else:
                named = ((str(path), path) for path in find_images([item]))
            for name, source in named:
                try:
                    image = read_image(source, channels) if isinstance(source, Path) else source
                    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != channels:
                        raise UserError(f"{name}: expected a uint8 [{channels}, H, W] tensor")
                    yield Prediction(name), prepare(image)
                except UserError as e:
                    yield Prediction(name, error=str(e)), None

    stream = prepared()
    while chunk := list(islice(stream, batch_size)):  # failed images keep their place in it
        ready = [(pred, x) for pred, x in chunk if x is not None]
        if ready:
            with torch.inference_mode():
                logits = model(torch.stack([x for _, x in ready]).to(device))
            values, indices = torch.softmax(logits.float(), dim=1).topk(min(topk, logits.shape[1]))
            for (pred, _), vals, idxs in zip(ready, values.tolist(), indices.tolist(), strict=True):
                names = [classes[i] if i < len(classes) else str(i) for i in idxs]
                pred.topk = list(zip(idxs, names, vals, strict=True))
        yield from (pred for pred, _ in chunk)


def predict(
    checkpoint: str | os.PathLike | tuple[nn.Module, dict],
    images: ImageInput | Sequence[ImageInput],
    *,
    topk: int = 5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> list[Prediction]:
    """Top-k classes of image files, folders of images, or uint8 CHW tensors.

    ``checkpoint`` is anything `load_checkpoint` reads, or the (model, meta) pair it
    returned. An unreadable image gives a Prediction with ``error`` set rather than
    stopping the others.
    """
    from resnetlab.models.weights import load_checkpoint

    if isinstance(checkpoint, tuple):
        model, meta = checkpoint[0].to(device), checkpoint[1]
    else:
        model, meta = load_checkpoint(checkpoint, map_location=device)
    if isinstance(images, (str, os.PathLike, Tensor)):
        images = [images]
    predictions = iter_predictions(
        model, meta, images, topk=topk, batch_size=batch_size, device=device, precision=precision
    )
    return list(predictions)
