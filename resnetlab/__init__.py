"""resnetlab: residual networks, their training, and reproduction of He et al. 2015."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resnetlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from resnetlab.inference.predict import predict  # noqa: E402
from resnetlab.models import create_model, list_models  # noqa: E402
from resnetlab.models.weights import load_checkpoint  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "load_checkpoint", "predict"]
