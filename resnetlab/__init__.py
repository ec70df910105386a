"""resnetlab: residual networks, their training, and reproduction of He et al. 2015."""

from resnetlab.inference.predict import predict
from resnetlab.models import create_model, list_models
from resnetlab.models.weights import load_checkpoint
from resnetlab.version import __version__

__all__ = ["__version__", "create_model", "list_models", "load_checkpoint", "predict"]
