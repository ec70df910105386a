"""One registry of models, as timm has: builders register themselves by name, and
`create_model("resnet20", num_classes=100)` is the one way the CLI, configs and tests build one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from resnetlab.errors import UserError
from resnetlab.models import weights as weights_format


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # "imagenet", "cifar", "plain", "preact", "wide", "mnist"
    input_size: tuple[int, int, int]  # default (channels, height, width)
    num_classes: int  # default number of classes
    paper: str  # short citation, shown by `resnetlab models`


_REGISTRY: dict[str, ModelEntry] = {}
M = TypeVar("M", bound=nn.Module)


def register_model(
    family: str, input_size: tuple[int, int, int], num_classes: int, paper: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder under its function name."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, family, input_size, num_classes, paper)
        return builder

    return decorate


def register_builder(
    name: str,
    build: Callable[..., M],
    doc: str,
    family: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    paper: str,
) -> Callable[..., M]:
    """Register ``build(num_classes, in_channels, **kwargs)`` as the builder ``name``, with the
    entry's defaults: a family declares its models as a table, one line each."""

    def builder(
        num_classes: int = num_classes, in_channels: int = input_size[0], **kwargs: Any
    ) -> M:
        return build(num_classes, in_channels, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    register_model(family, input_size, num_classes, paper)(builder)
    return builder


def model_depth(model: str) -> int:
    """The depth in a model's name (resnet110 -> 110); 0 for names without one."""
    found = re.search(r"(\d+)$", model)
    return int(found.group(1)) if found else 0


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, in registration order (families stay together)."""
    return [n for n, e in _REGISTRY.items() if family is None or e.family == family]


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name is a UserError naming close ones."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `resnetlab models`"
        raise UserError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    weights: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model by name; ``num_classes`` and ``in_channels`` default to the
    builder's own. ``weights`` (a resnetlab run, bundle or .safetensors file, or a plain
    state_dict such as torchvision's) is loaded strictly; our own file also gives the defaults.
    """
    entry = get_model_entry(name)
    state_dict = None
    if weights is not None:
        state_dict, meta = weights_format.read_weights(weights)
        if meta.get("model") == name:  # our own file: its architecture, unless told otherwise
            num_classes = meta.get("num_classes") if num_classes is None else num_classes
            in_channels = meta.get("in_channels") if in_channels is None else in_channels
            kwargs = {**(meta.get("model_kwargs") or {}), **kwargs}
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None and value < 1:
            raise UserError(f"{key} must be at least 1, got {value}")
        if value is not None:
            kwargs[key] = value
    try:
        model = entry.builder(**kwargs)
    except TypeError as e:  # a misspelt option from a flag or config file
        if "keyword argument" not in str(e):
            raise
        raise UserError(f"{name}: {e}".replace("__init__()", "")) from None
    if state_dict is not None:
        state_dict = weights_format.adapt_keys(state_dict, model)
        weights_format.load_into(model, state_dict, source=f"weights in {weights}")
    return model
