"""Model zoo: importing this package registers every model, and each registered builder is an
attribute, as in torchvision (``resnetlab.models.resnet20(num_classes=100)``)."""

from typing import Any

# Import order is registration order, which `resnetlab models` shows: keep it.
from resnetlab.models import cifar_resnet, mnist, preact_resnet, resnet, wide_resnet  # noqa: F401
from resnetlab.models.registry import (
    create_model,
    get_model_entry,
    list_models,
    model_depth,
    register_model,
)

__all__ = ["create_model", "get_model_entry", "list_models", "model_depth", "register_model"]
__all__ += list_models()


def __getattr__(name: str) -> Any:
    """The builders, looked up in the registry rather than imported one by one."""
    if name in list_models():
        return get_model_entry(name).builder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
