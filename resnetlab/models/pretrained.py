"""Starting a model from pretrained weights: a torchvision weights name or a local file.

A torchvision name goes through torch.hub's cache (``<hub dir>/checkpoints``), so a file put
there by hand works offline. The head and the stem are adapted when the task differs: another
class count re-initialises the last linear layer; another channel count adapts the first conv
(grayscale: the sum of the RGB filters; N channels: the RGB filters repeated, scaled by 3/N, so
that the activations keep their scale). Each source also says how its images were prepared
(torchvision's ``transforms()``, our checkpoints' metadata), for the data to follow.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import Tensor, nn

from resnetlab.errors import UserError, first_line
from resnetlab.models.weights import load_into, read_weights


def is_weights_name(spec: str) -> bool:
    """``ResNet18_Weights.IMAGENET1K_V1``: an enum name, not a path."""
    return "_Weights." in spec and os.sep not in spec and not Path(spec).exists()


def hub_file(url: str) -> Path:
    """Where torch.hub caches (and looks for) the file of ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


@dataclass
class Pretrained:
    """A weights source read: its state_dict, what its images were prepared with
    (``image_size``, ``resize_size``, ``mean``, ``std``; a key left out is not known) and the
    names of the classes its head predicts (None: not known)."""

    spec: str
    state: dict[str, Tensor]
    preprocessing: dict[str, Any]
    classes: list[str] | None = None


def _torchvision_weights(spec: str, model_name: str) -> Pretrained:
    from torchvision.models import get_model_weights, get_weight, list_models

    try:
        weights = get_weight(spec)
    except (ValueError, KeyError, AttributeError):
        raise UserError(
            f"unknown weights {spec!r}: give a torchvision name such as "
            "ResNet18_Weights.IMAGENET1K_V1, a weights file or a run folder"
        ) from None
    try:
        ours = get_model_weights(model_name)
    except (ValueError, KeyError):
        ours = None
    if type(weights) is not ours:
        owner = next((m for m in list_models() if _weights_of(m) is type(weights)), "another model")
        raise UserError(f"{spec} are weights of {owner}, not of {model_name}")
    file = hub_file(weights.url)
    cached = file.is_file()
    try:  # torch.hub reads its cached file as it is; it downloads (and checks the hash) if none
        state = torch.hub.load_state_dict_from_url(
            weights.url, check_hash=True, map_location="cpu", weights_only=True
        )
    except (URLError, OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        if cached:  # not a state_dict, truncated...
            raise UserError(
                f"cannot read {file} ({first_line(e)}): replace it with {weights.url}"
            ) from None
        raise UserError(  # no network, or a failed hash check
            f"cannot download {spec} ({first_line(e)}): put {file.name} in {file.parent}"
        ) from None
    # Their categories ("tench") are not an ImageNet folder's names ("n01440764"): not compared.
    return Pretrained(spec, state, torchvision_preprocessing(weights))


def torchvision_preprocessing(weights: Any) -> dict[str, Any]:
    """The eval preset torchvision's ``weights`` were measured with (their ``transforms()``,
    an ImageClassification): crop and resize sides, mean and std."""
    t = weights.transforms()
    sizes = {"image_size": t.crop_size[0], "resize_size": t.resize_size[0]}
    return {**sizes, "mean": tuple(t.mean), "std": tuple(t.std)}


def _weights_of(name: str) -> type | None:
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(name)
    except (ValueError, KeyError):
        return None


def read_pretrained(spec: str, model_name: str) -> Pretrained:
    """The weights ``spec`` names, refused if they are another architecture's."""
    if is_weights_name(spec):
        return _torchvision_weights(spec, model_name)
    state, meta = read_weights(spec)
    if meta.get("model") and meta["model"] != model_name:
        raise UserError(f"{spec} holds weights of {meta['model']}, not of {model_name}")
    classes = meta.get("classes")
    return Pretrained(spec, state, meta_preprocessing(meta), list(classes) if classes else None)


def meta_preprocessing(meta: dict[str, Any]) -> dict[str, Any]:
    """Our checkpoints' preprocessing; one trained in memory (no resize) saw whole images, so
    a folder is resized to its crop side; a foreign file tells nothing."""
    out: dict[str, Any] = {}
    if meta.get("input_size"):
        out["image_size"] = int(meta["input_size"][-1])
        out["resize_size"] = int(meta.get("resize_size") or out["image_size"])
    if meta.get("mean") and meta.get("std"):
        out["mean"], out["std"] = tuple(meta["mean"]), tuple(meta["std"])
    return out


def head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier: the model's last linear layer (``fc`` in every model here)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise UserError(f"{type(model).__name__} has no linear layer to use as the head")
    return found[-1]


def stem(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first convolution, the one that sees the image channels."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def adapt_stem_weight(weight: Tensor, in_channels: int) -> Tensor:
    """RGB filters for ``in_channels`` inputs: summed for 1, else repeated and scaled by 3/N."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / weight.shape[1])
    out = weight.repeat(1, repeats, 1, 1)[:, :in_channels]
    return out * (weight.shape[1] / in_channels)


def _names(names: Sequence[str] | None) -> str:
    shown = ", ".join(list(names or [])[:3])
    return shown + (", ..." if len(names or []) > 3 else "")


def _shape(t: Tensor) -> str:
    return " x ".join(map(str, t.shape))


def adapt(
    model: nn.Module,
    state: dict[str, Tensor],
    log: Callable[[str], None] = print,
    classes: Sequence[str] | None = None,
    source_classes: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """``state`` fitted to ``model``'s head and stem, each change announced in one line. The
    head is re-initialised for another class count, and for as many classes of other names
    (``classes``, the data's, against ``source_classes``, the weights'): a head trained on
    airplane..deer means nothing for dog..truck."""
    state = dict(state)
    name, fc = head(model)
    key = f"{name}.weight"
    renamed = bool(classes and source_classes) and list(classes) != list(source_classes or [])
    if key in state and (state[key].shape != fc.weight.shape or renamed):
        why = (
            f"weights: {_shape(state[key])}, now {_shape(fc.weight)}"
            if state[key].shape != fc.weight.shape
            else f"weights' classes {_names(source_classes)}, now {_names(classes)}"
        )
        log(f"notice: {name} re-initialised for {fc.out_features} classes ({why})")
        for k, v in fc.state_dict().items():
            state[f"{name}.{k}"] = v.detach().clone()
    first = stem(model)
    if first is not None:
        name, conv = first
        key = f"{name}.weight"
        w = state.get(key)
        if w is not None and w.ndim == 4 and w.shape[1] != conv.in_channels:
            state[key] = adapt_stem_weight(w, conv.in_channels)
            log(
                f"notice: {name} adapted to {conv.in_channels} input channel"
                f"{'s' if conv.in_channels > 1 else ''} "
                f"(weights: {_shape(w)}, now {_shape(state[key])})"
            )
    return state


def load_pretrained(
    model: nn.Module,
    source: Pretrained,
    log: Callable[[str], None] = print,
    classes: Sequence[str] | None = None,
) -> None:
    """Load ``source`` into ``model`` for data of ``classes``, adapting the head and the stem;
    a mismatch elsewhere is one UserError line."""
    state = adapt(model, source.state, log, classes, source.classes)
    load_into(model, state, source=f"weights {source.spec}")
