"""Tiny datasets in the official on-disk formats, for tests that must not need the real ones.

Byte-faithful, so the real readers are exercised: idx files with their magic numbers, and
CIFAR pickles as Python 2's cPickle wrote them (protocol 2, keys as Py2 ``str``, arrays
under ``numpy.core.multiarray._reconstruct``). The images are learnable on purpose: class
``k`` lights up its own horizontal band over noise, so a few SGD steps lower the loss.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR10_NAMES += ["dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = [f"class_{i:02d}" for i in range(100)]
# name -> (channels, size, number of classes)
SHAPES = {"mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10)}
SHAPES["cifar100"] = (3, 32, 100)


def _images(
    n: int, channels: int, size: int, seed: int, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    x = rng.integers(0, 96, size=(n, channels, size, size), dtype=np.uint8)
    band = size // num_classes
    for i, k in enumerate(labels):
        x[i, :, k * band : (k + 1) * band, :] = 255
    return x, labels.astype(np.uint8)


# ------------------------------------------------------------------------- idx ---


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """A uint8 array as an idx file (magic ``0x0000080N``, then big-endian int32 dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(header + array.tobytes())


def read_idx(path: Path) -> np.ndarray:
    """A plain idx reader for reference computations, independent of resnetlab.data."""
    raw = Path(path).read_bytes()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# --------------------------------------------------------- Python 2 pickles ---


def _str(s: str | bytes) -> bytes:
    raw = s.encode("latin1") if isinstance(s, str) else s
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
    return b"T" + struct.pack("<I", len(raw)) + raw  # BINSTRING


def _int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])  # BININT1
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)  # BININT2
    return b"J" + struct.pack("<i", i)  # BININT


def _uint8_array(a: np.ndarray) -> bytes:
    """numpy's ndarray.__reduce__ as Python 2 pickled it."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    shape = b"(" + b"".join(_int(d) for d in a.shape) + b"t"  # MARK ... TUPLE
    dtype = b"cnumpy\ndtype\n" + _str("u1") + _int(0) + _int(1) + b"\x87R"  # TUPLE3 REDUCE
    dtype += b"(" + _int(3) + _str("|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _int(0) + b"tb"
    head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    head += _int(0) + b"\x85" + _str("b") + b"\x87R"  # TUPLE1, TUPLE3 REDUCE
    # state: (version, shape, dtype, is_fortran=NEWFALSE, raw bytes) then BUILD
    return head + b"(" + _int(1) + shape + dtype + b"\x89" + _str(a.tobytes()) + b"tb"


def _value(v: Any) -> bytes:
    if isinstance(v, (str, bytes)):
        return _str(v)
    if isinstance(v, bool):
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, np.ndarray):
        return _uint8_array(v)
    if isinstance(v, list):
        return b"](" + b"".join(_value(x) for x in v) + b"e"  # EMPTY_LIST MARK ... APPENDS
    if isinstance(v, dict):
        items = b"".join(_value(k) + _value(x) for k, x in v.items())
        return b"}(" + items + b"u"  # EMPTY_DICT MARK ... SETITEMS
    raise TypeError(f"cannot write {type(v).__name__} in a CIFAR pickle")


def dumps_py2(obj: dict[str, Any]) -> bytes:
    """Protocol-2 pickle of str/int/list/dict/uint8-array data, as Python 2's cPickle."""
    return b"\x80\x02" + _value(obj) + b"."


# ---------------------------------------------------------------- datasets ---


def _write_mnist_like(folder: Path, train: tuple, test: tuple) -> None:
    for prefix, (x, y) in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x[:, 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y)


def _write_cifar10(folder: Path, batches: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y in batches:
        entry = {"batch_label": name, "labels": [int(v) for v in y], "data": x.reshape(len(x), -1)}
        entry["filenames"] = [f"img_{j}.png" for j in range(len(y))]
        (folder / name).write_bytes(dumps_py2(entry))
    meta = {"num_cases_per_batch": len(batches[0][2]), "label_names": CIFAR10_NAMES}
    (folder / "batches.meta").write_bytes(dumps_py2({**meta, "num_vis": 3072}))


def write_fake_dataset(
    name: str, root: str | Path, num_train: int = 50, num_test: int = 20, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``name``'s official layout under ``root``; returns ((train x, y), (test x, y)).

    Images are ``[N, C, H, W]`` uint8, labels int64 cycling through the classes.
    """
    channels, size, k = SHAPES[name]
    xtr, ytr = _images(num_train, channels, size, seed, k)
    xte, yte = _images(num_test, channels, size, seed + 1, k)
    root = Path(root)
    if name == "mnist":
        _write_mnist_like(root / "MNIST" / "raw", (xtr, ytr), (xte, yte))
    elif name == "fashion-mnist":
        _write_mnist_like(root / "FashionMNIST" / "raw", (xtr, ytr), (xte, yte))
    elif name == "cifar10":
        parts = np.array_split(np.arange(num_train), 5)
        batches = [(f"data_batch_{i}", xtr[p], ytr[p]) for i, p in enumerate(parts, 1)]
        _write_cifar10(root / "cifar-10-batches-py", [*batches, ("test_batch", xte, yte)])
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            entry = {"filenames": [f"img_{i}.png" for i in range(len(y))], "batch_label": split}
            entry |= {"fine_labels": [int(v) for v in y], "coarse_labels": [int(v) // 5 for v in y]}
            (folder / split).write_bytes(dumps_py2({**entry, "data": x.reshape(len(x), -1)}))
        meta = {"fine_label_names": CIFAR100_NAMES, "coarse_label_names": []}
        (folder / "meta").write_bytes(dumps_py2(meta))
    return (xtr, ytr.astype(np.int64)), (xte, yte.astype(np.int64))


def write_mnist(root: Path, n_train: int = 512, n_test: int = 128, seed: int = 0) -> Path:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, torchvision's layout."""
    write_fake_dataset("mnist", root, n_train, n_test, seed)
    return Path(root)


def write_cifar10(root: Path, per_batch: int = 64, n_test: int = 64, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with five small data batches, a test batch and the meta."""
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    batches = [(name, *_images(n, 3, 32, seed + i)) for i, (name, n) in enumerate(files)]
    _write_cifar10(Path(root) / "cifar-10-batches-py", batches)
    return Path(root)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Train on one thread: two threads on a busy two-core machine can be ten times slower,
    and runs compared bit for bit must use the same number of threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
