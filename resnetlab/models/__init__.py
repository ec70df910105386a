"""Model zoo: importing this package registers every model."""

# Import order is registration order, which `resnetlab models` shows: keep it.
from resnetlab.models.cifar_resnet import (
    cifar_resnet18,
    cifar_resnet34,
    plain20,
    plain32,
    plain44,
    plain56,
    plain110,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
    resnet1202,
)
from resnetlab.models.mnist_cnn import mnist_cnn
from resnetlab.models.preact_resnet import preact_resnet110, preact_resnet164, preact_resnet1001
from resnetlab.models.registry import (
    create_model,
    get_model_entry,
    list_models,
    model_depth,
    register_model,
)  # noqa: I001
from resnetlab.models.resnet import (
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from resnetlab.models.wide_resnet import wrn28_10

__all__ = [
    "create_model",
    "get_model_entry",
    "list_models",
    "model_depth",
    "register_model",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
    "cifar_resnet18",
    "cifar_resnet34",
    "preact_resnet110",
    "preact_resnet164",
    "preact_resnet1001",
    "wrn28_10",
    "mnist_cnn",
]
