"""Datasets and input pipelines, the first stage of data -> models -> training -> reports:
`build_loaders`, `load_arrays` (raw uint8 tensors) and `DATASETS` (known without a file read)."""

from resnetlab.data.arrays import load_arrays
from resnetlab.data.balance import balanced_class_weights
from resnetlab.data.build import DataBundle, Loader, build_loaders
from resnetlab.data.in_memory import InMemoryLoader
from resnetlab.data.info import DATASETS, DatasetInfo, DataWarning
from resnetlab.data.root import default_data_root

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataWarning",
    "DatasetInfo",
    "InMemoryLoader",
    "Loader",
    "balanced_class_weights",
    "build_loaders",
    "default_data_root",
    "load_arrays",
]
