"""Tiny datasets written in the official on-disk formats, for tests and demos.

Tests must not need the real datasets, yet must exercise the real readers, so
these writers produce byte-level faithful files: idx with its magic numbers, and
CIFAR pickles the way Python 2's cPickle wrote them (protocol 2, keys as Py2
``str``, the array under ``numpy.core.multiarray._reconstruct``). torchvision's
own dataset classes read them too.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from resnetlab.data.info import DATASETS


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (magic ``0x0000080N``, big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(header + array.tobytes())


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
    dtype = (
        (
            b"cnumpy\ndtype\n" + _str("u1") + _int(0) + _int(1) + b"\x87R"  # TUPLE3 REDUCE
            b"(" + _int(3) + _str("|") + b"NNN" + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + _int(0)
        )
        + b"tb"
    )  # TUPLE BUILD
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + _int(0)
        + b"\x85"  # TUPLE1
        + _str("b")
        + b"\x87R"  # TUPLE3 REDUCE
        + b"("
        + _int(1)
        + shape
        + dtype
        + b"\x89"  # NEWFALSE (C order)
        + _str(a.tobytes())
        + b"tb"
    )


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


def write_fake_dataset(
    name: str, root: str | Path, num_train: int = 50, num_test: int = 20, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Random images in ``name``'s official layout under ``root``.

    Returns ((train images, labels), (test images, labels)), images ``[N, C, H, W]``.
    Labels cycle through the classes, so every class is present when N allows.
    """
    info = DATASETS[name]
    rng = np.random.default_rng(seed)
    h, w = info.image_size
    root = Path(root)
    out = []
    for n in (num_train, num_test):
        x = rng.integers(0, 256, (n, info.in_channels, h, w), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % info.num_classes).astype(np.int64)
        out.append((x, y))
    (xtr, ytr), (xte, yte) = out
    if name in ("mnist", "fashion-mnist"):
        raw = root / {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name] / "raw"
        for prefix, x, y in (("train", xtr, ytr), ("t10k", xte, yte)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))
    elif name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        parts = np.array_split(np.arange(num_train), 5)
        for i, part in enumerate(parts, 1):
            _write_cifar(
                folder / f"data_batch_{i}", f"training batch {i} of 5", xtr[part], ytr[part]
            )
        _write_cifar(folder / "test_batch", "testing batch 1 of 1", xte, yte)
        meta = {"num_cases_per_batch": 10000, "label_names": list(info.classes), "num_vis": 3072}
        (folder / "batches.meta").write_bytes(dumps_py2(meta))
    elif name == "cifar100":
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for fname, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            entry = {
                "filenames": [f"fake_{i:05d}.png" for i in range(len(y))],
                "batch_label": f"{fname}ing batch 1 of 1",
                "fine_labels": [int(v) for v in y],
                "coarse_labels": [int(v) // 5 for v in y],
                "data": x.reshape(len(x), -1),
            }
            (folder / fname).write_bytes(dumps_py2(entry))
        meta = {"fine_label_names": list(info.classes), "coarse_label_names": []}
        (folder / "meta").write_bytes(dumps_py2(meta))
    else:
        raise KeyError(name)
    return (xtr, ytr), (xte, yte)


def _write_cifar(path: Path, label: str, x: np.ndarray, y: np.ndarray) -> None:
    entry = {
        "batch_label": label,
        "labels": [int(v) for v in y],
        "data": x.reshape(len(x), -1),
        "filenames": [f"fake_{i:05d}.png" for i in range(len(y))],
    }
    path.write_bytes(dumps_py2(entry))
