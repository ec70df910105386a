"""CIFAR-10 and CIFAR-100 from the official python pickles, every file's structure checked; an
MD5 other than torchvision's only warns (re-encoded copies differ in ``filenames``).

`pickle.load` on a tampered file runs arbitrary code, so the unpickler here resolves only the
globals a pickled numpy array needs, and any other payload is refused.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from resnetlab.data.info import DATASETS, DataWarning
from resnetlab.errors import UserError

# numpy < 2 pickles name `numpy.core.*`, numpy >= 2 `numpy._core.*`; Python 3 protocol-2
# pickles of bytes use `_codecs.encode`, protocol 5 arrays `numeric._frombuffer`.
_ALLOWED: dict[tuple[str, str], Any] = {("_codecs", "encode"): codecs.encode}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = np.ndarray.__reduce__(np.zeros(0))[0]
    _ALLOWED[(_mod, "scalar")] = np.int64(0).__reduce__()[0]
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = np.zeros(1).__reduce_ex__(5)[0]
for _mod in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "dtype")] = np.dtype
    _ALLOWED[(_mod, "ndarray")] = np.ndarray


class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global outside the numpy-array allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        """The only door to globals in a pickle: the allow-list or an error."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def safe_load(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (Py2 ``str`` read as latin-1, as torchvision does); any failure,
    refused or malformed, is one line naming ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # anything a malformed stream can raise is a data error
        reason = " ".join(str(e).split())  # some unpickling messages span lines
        if isinstance(e, pickle.UnpicklingError):
            raise UserError(f"{source}: refused or corrupt pickle ({reason})") from None
        reason = "truncated" if isinstance(e, EOFError) else f"{type(e).__name__}: {reason}"
        raise UserError(f"{source}: not a valid pickle ({reason})") from None


class ChecksumWarning(DataWarning):
    """A file differs from the official release; its structure was checked instead."""


def read_dict(path: Path) -> tuple[bytes, dict]:
    """A pickle file's bytes and the dict it holds."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    entry = safe_load(raw, str(path))
    if not isinstance(entry, dict):
        raise UserError(f"{path}: expected a dict, found {type(entry).__name__}")
    return raw, entry


def read_batch(
    path: Path, name: str, md5: str | None = None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One pickle file -> (uint8 ``[n, 3, 32, 32]``, int64 ``[n]``, MD5 matched), validated."""
    info = DATASETS[name]
    raw, entry = read_dict(path)
    md5_ok = md5 is None or hashlib.md5(raw, usedforsecurity=False).hexdigest() == md5
    label_key = "labels" if name == "cifar10" else "fine_labels"
    for key in ("data", label_key):
        if key not in entry:
            keys = ", ".join(repr(k) for k in entry)  # repr: keys may hold any character
            raise UserError(f"{path}: no {key!r} entry (keys: {keys[:200]})")
    data = entry["data"]
    size = 3 * info.image_size[0] * info.image_size[1]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        kind = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise UserError(f"{path}: 'data' must be a uint8 [N, {size}] array, found {kind}")
    if data.shape[1] != size:
        raise UserError(f"{path}: 'data' rows hold {data.shape[1]} values, expected {size}")
    try:
        labels = np.asarray(entry[label_key])
    except Exception:
        raise UserError(f"{path}: {label_key!r} is not a list of integers") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserError(f"{path}: {label_key!r} is not a list of integers")
    info.check_labels(path, labels, len(data))
    return data.reshape(-1, 3, *info.image_size), labels.astype(np.int64), md5_ok
