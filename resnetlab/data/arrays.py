"""The uint8 tensors and class names of the built-in datasets, from the files torchvision
downloads, each checked so that a truncated, foreign or hostile file is one clear line: MNIST's
idx files, and CIFAR's python pickles through an unpickler that resolves only the globals a
numpy array needs (`pickle.load` on a tampered file runs arbitrary code). An MD5 other than
torchvision's only warns: re-encoded CIFAR copies differ in ``filenames``."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import math
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd

from resnetlab.data.info import DATASETS, DataWarning, get_info
from resnetlab.data.root import ENV_VAR, resolve_root
from resnetlab.errors import UserError, first_line

TV_CLASSES = {
    "mnist": tvd.MNIST,
    "fashion-mnist": tvd.FashionMNIST,
    "cifar10": tvd.CIFAR10,
    "cifar100": tvd.CIFAR100,
}

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
    """Refuses every global outside the numpy-array allow-list (find_class is the only door to
    globals in a pickle)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


class ChecksumWarning(DataWarning):
    """A file differs from the official release; its structure was checked instead."""


def read_dict(path: Path) -> tuple[bytes, dict]:
    """A pickle file's bytes and the dict it holds (Py2 ``str`` read as latin-1, as torchvision
    does); any failure, refused or malformed, is one line naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        entry = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # anything a malformed stream can raise is a data error
        reason = " ".join(str(e).split())  # some unpickling messages span lines
        if isinstance(e, pickle.UnpicklingError):
            raise UserError(f"{path}: refused or corrupt pickle ({reason})") from None
        reason = "truncated" if isinstance(e, EOFError) else f"{type(e).__name__}: {reason}"
        raise UserError(f"{path}: not a valid pickle ({reason})") from None
    if not isinstance(entry, dict):
        raise UserError(f"{path}: expected a dict, found {type(entry).__name__}")
    return raw, entry


def check_labels(source: object, labels: np.ndarray, num_images: int, num_classes: int) -> None:
    """One line naming ``source`` unless ``labels`` hold one class index per image."""
    if len(labels) != num_images:
        raise UserError(f"{source}: {len(labels)} labels for {num_images} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise UserError(f"{source}: label {bad} out of range 0..{num_classes - 1}")


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
    check_labels(path, labels, len(data), info.num_classes)
    return data.reshape(-1, 3, *info.image_size), labels.astype(np.int64), md5_ok


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a uint8 idx file (or its ``.gz``) with ``ndim`` dimensions."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    magic = 0x00000800 + ndim
    header = 4 * (ndim + 1)
    if len(raw) < header:
        raise UserError(f"{path}: truncated idx header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise UserError(f"{path}: not a uint8 idx file with {ndim} dims (magic {found:#010x})")
    shape = tuple(int.from_bytes(raw[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: a hostile header cannot overflow
    if len(raw) - header != expected:
        raise UserError(
            f"{path}: holds {len(raw) - header} bytes of data, header {shape} says {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def locate(
    name: str, root: Path, files: Sequence[Path], download: bool, *suffixes: str
) -> list[Path]:
    """Each of ``files``, or the first of its variants ending in ``suffixes`` that exists;
    ``download`` fetches missing ones first, else one line names them and the three remedies."""

    def found() -> list[Path | None]:
        variants = [[f.with_name(f.name + s) for s in ("", *suffixes)] for f in files]
        return [next((p for p in v if p.is_file()), None) for v in variants]

    paths = found()
    if None in paths and download:
        # torchvision's download step (mirrors, MD5 checks) without its constructor's unpickling
        ds = TV_CLASSES[name].__new__(TV_CLASSES[name])
        ds.root = str(root)
        try:
            ds.download()
        except Exception as e:  # URLError, checksum RuntimeError, OSError, tarfile errors
            raise UserError(f"{name}: download into {root} failed: {first_line(e)}") from None
        paths = found()
    if None in paths:
        shown = ", ".join(str(p) for p in files[:3])
        if len(files) > 3:
            shown += f" (+{len(files) - 3} more)"
        raise UserError(
            f"{name} not found: expected {shown}; point --data-path or ${ENV_VAR} at a root "
            f"that holds it, or pass --download"
        )
    return [p for p in paths if p]


def load_arrays(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, C, H, W]`` and labels int64 ``[N]`` of a DATASETS entry."""
    info = get_info(name)
    base = resolve_root(root)
    cls = TV_CLASSES[info.name]
    if info.name.startswith("cifar"):
        source = base / cls.base_folder
        files = cls.train_list if train else cls.test_list  # (filename, md5) of the release
        found = locate(info.name, base, [source / f for f, _ in files], download)
        parts = [read_batch(p, info.name, md5) for p, (_, md5) in zip(found, files, strict=True)]
        images_parts, labels_parts, md5_ok = zip(*parts, strict=True)
        differ = [p.name for p, ok in zip(found, md5_ok, strict=True) if not ok]
        if differ:
            warnings.warn(
                f"{source}: {', '.join(differ)}: MD5 differs from the official release "
                "(a re-encoded copy?); contents validated instead",
                ChecksumWarning,
                stacklevel=1,
            )
        images, labels = np.concatenate(images_parts), np.concatenate(labels_parts)
    else:
        raw = base / cls.__name__ / "raw"  # where torchvision puts them
        prefix = "train" if train else "t10k"
        files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
        source, labels_path = locate(info.name, base, files, download, ".gz")
        images, labels = read_idx(source, 3), read_idx(labels_path, 1)
        if images.shape[1:] != info.image_size:
            raise UserError(f"{source}: images are {images.shape[1:]}, expected {info.image_size}")
        check_labels(labels_path, labels, len(images), info.num_classes)
        images, labels = images[:, None].copy(), labels.astype(np.int64)
    expected = info.num_train if train else info.num_test
    if len(images) != expected:
        message = f"{source}: {len(images)} images, the official release has {expected}"
        warnings.warn(message, DataWarning, stacklevel=1)  # shown here, like the MD5 warning
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_classes(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Class names of a DATASETS entry: torchvision's for MNIST, the meta file's for CIFAR."""
    info = get_info(name)
    cls = TV_CLASSES[info.name]
    if not info.name.startswith("cifar"):
        return list(cls.classes)  # torchvision's, so predictions read the same
    base = resolve_root(root)
    (path,) = locate(info.name, base, [base / cls.base_folder / cls.meta["filename"]], False)
    names = read_dict(path)[1].get(cls.meta["key"])
    n = info.num_classes
    if not isinstance(names, list) or len(names) != n or not all(isinstance(c, str) for c in names):
        raise UserError(f"{path}: {cls.meta['key']!r} is not a list of {n} class names")
    return names
