"""Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391) with captum: where in an image the
evidence for a class lies, as a heat map over the picture the model saw.

The target layer is the last stage's output, where the maps are still spatial and the
features most about classes. For the pre-activation and wide ResNets it is the output of
``bn_final`` + ReLU (the module ``relu``) rather than ``layer3``: the classifier is linear
in that tensor's global average, so Grad-CAM there is exactly CAM (Zhou et al. 2016),
whereas ``layer3``'s unnormalised sum still has to pass the BN-ReLU gate, and its map
also lights up places that the gate switches off.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from resnetlab.errors import UserError
from resnetlab.inference.predict import find_images, preprocess_fn, read_image
from resnetlab.io import atomic_write
from resnetlab.models import get_model_entry

INSTALL_HINT = "Grad-CAM needs captum: pip install 'resnetlab[explain]' (or pip install captum)"
FIGSIZE, DPI = (9.0, 4.5), 100  # 900 x 450 pixels: GitHub's page width, unscaled

# The module whose output the global pool reads, for the families that do not end in `layerN`.
_FAMILY_LAYER = {"mnist": "conv2", "preact": "relu", "wide": "relu"}


@dataclass
class Explanation:
    """One image's Grad-CAM: ``heat`` is [H, W] over ``view``, the [H, W, C] picture in [0, 1]
    the model saw (resized, cropped); ``error`` says why there is none."""

    image: str
    layer: str = ""
    target: tuple[int, str, float] = (-1, "", 0.0)  # the explained class: (index, name, prob)
    topk: list[tuple[int, str, float]] = field(default_factory=list)
    heat: Tensor | None = None
    view: Tensor | None = None
    error: str | None = None


def default_layer(model: nn.Module, model_name: str) -> str:
    """The name of the last stage's output: ``layer4`` or ``layer3`` for the ResNets and plain
    nets, ``relu`` (after ``bn_final``) for the pre-activation and wide ones, ``conv2`` for the
    MNIST CNN (its last conv block; its ReLU and max-pool modules are shared with others)."""
    family = get_model_entry(model_name).family
    if family in _FAMILY_LAYER:
        return _FAMILY_LAYER[family]
    return "layer4" if getattr(model, "layer4", None) is not None else "layer3"


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``; an unknown name is one UserError naming valid ones."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        top = ", ".join(n for n, _ in model.named_children())
        dotted = next((f", and dotted names such as {n}" for n in names if "." in n), "")
        raise UserError(
            f"{type(model).__name__} has no layer {name!r}; {hint}layers: {top}{dotted}"
        ) from None


def class_index(name_or_index: str, classes: list[str], num_classes: int) -> int:
    """A class given by name (as the checkpoint's meta lists them) or by index."""
    if name_or_index in classes:
        return classes.index(name_or_index)
    if name_or_index.isdigit() and 0 <= int(name_or_index) < num_classes:
        return int(name_or_index)
    some = f"{', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}; or " if classes else ""
    raise UserError(
        f"unknown class {name_or_index!r}: give a class name ({some}an index 0-{num_classes - 1})"
    )


def grad_cam(model: nn.Module, layer: str, x: Tensor, target: int) -> Tensor:
    """Grad-CAM of class ``target`` at the module named ``layer`` for a batch ``x``: [N, H, W]
    at x's size, >= 0 (the paper's ReLU keeps only what raises the class), upsampled
    bilinearly from the layer's maps."""
    attributions, gradcam = _captum()
    module = get_layer(model, layer)
    attribution = gradcam(model, module).attribute(x, target=target, relu_attributions=True)
    if attribution.ndim != 4:  # e.g. fc: Grad-CAM needs [N, C, h, w] feature maps
        raise UserError(f"layer {layer!r} ({type(module).__name__}) gives no spatial maps")
    size = tuple(x.shape[2:])
    return attributions.interpolate(attribution, size, interpolate_mode="bilinear")[:, 0].detach()


def _captum() -> tuple[type, type]:
    """captum's LayerAttribution and LayerGradCam; an optional extra, imported when used."""
    try:
        from captum.attr import LayerAttribution, LayerGradCam
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return LayerAttribution, LayerGradCam


def iter_explanations(
    model: nn.Module,
    meta: dict,
    images: Iterable[str | os.PathLike],
    *,
    layer: str | None = None,
    target: str | None = None,
    topk: int = 3,
) -> Iterator[Explanation]:
    """Grad-CAM of image files and folders of images, one at a time, for ``target`` (a class
    name or index; default: each image's top class) at ``layer`` (default: `default_layer`).

    Bad arguments and a missing captum raise here, before any image is read; an unreadable
    image gives an Explanation with ``error`` set and the others still come.
    """
    if topk < 1:
        raise UserError(f"--topk must be at least 1, got {topk}")
    layer = layer or default_layer(model, meta["model"])
    get_layer(model, layer)  # an unknown name: one line now
    classes = [str(c) for c in meta.get("classes") or []]
    num_classes = int(meta["num_classes"])
    wanted = None if target is None else class_index(str(target), classes, num_classes)
    names = [classes[i] if i < len(classes) else str(i) for i in range(num_classes)]
    prepare = preprocess_fn(meta)
    _captum()  # missing: one line now, not after the first image
    mean, std = (torch.tensor(meta[k], dtype=torch.float32)[:, None, None] for k in ("mean", "std"))
    device = next(model.parameters()).device

    def explain() -> Iterator[Explanation]:
        for path in find_images(images):
            try:
                x = prepare(read_image(path, int(meta["input_size"][0])))
            except UserError as e:
                yield Explanation(str(path), error=str(e))
                continue
            batch = x[None].to(device)
            with torch.no_grad():
                probs = torch.softmax(model(batch).float(), dim=1)[0].cpu()
            values, indices = probs.topk(min(topk, probs.numel()))
            ranked = [
                (i, names[i], p) for i, p in zip(indices.tolist(), values.tolist(), strict=True)
            ]
            t = int(probs.argmax()) if wanted is None else wanted
            yield Explanation(
                str(path),
                layer=layer,
                target=(t, names[t], float(probs[t])),
                topk=ranked,
                heat=grad_cam(model, layer, batch, t)[0].cpu(),
                view=(x * std + mean).clamp(0, 1).permute(1, 2, 0),
            )

    return explain()


def plot_explanation(e: Explanation, path: str | os.PathLike) -> None:
    """The picture the model saw beside it under the heat map (with a colour bar), titled with
    the file name, the explained class and the top-k probabilities; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if e.heat is None or e.view is None:
        raise ValueError(f"no Grad-CAM to plot for {e.image}: {e.error}")
    view, heat = e.view.numpy(), e.heat.numpy()
    peak = float(heat.max())
    gray = dict(cmap="gray", vmin=0, vmax=1) if view.shape[2] == 1 else {}
    fig, (ax_img, ax_cam) = plt.subplots(1, 2, figsize=FIGSIZE, dpi=DPI, layout="constrained")
    height, width = heat.shape
    ax_img.imshow(view, **gray)
    ax_img.set_title(f"what the model sees ({width}x{height})", fontsize=10)
    ax_cam.imshow(view.mean(axis=2), cmap="gray", vmin=0, vmax=1)
    shown = ax_cam.imshow(heat / peak if peak > 0 else heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    _, cls, p = e.target
    nothing = "" if peak > 0 else "\n(no region raises this class)"
    ax_cam.set_title(f"Grad-CAM of {cls!r} at {e.layer}{nothing}", fontsize=10)
    fig.colorbar(shown, ax=ax_cam, fraction=0.046, pad=0.03, label="evidence for the class (max 1)")
    for ax in (ax_img, ax_cam):
        ax.set_axis_off()
    top = ", ".join(f"{n} {100 * q:.1f}%" for _, n, q in e.topk)
    fig.suptitle(
        f"{Path(e.image).name}: explaining {cls!r} ({100 * p:.1f}%)\ntop {len(e.topk)}: {top}",
        fontsize=11,
    )
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)
