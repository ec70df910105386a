"""Tiny datasets in the official on-disk formats, for tests that must not need the real ones.

The images are learnable on purpose: class ``k`` lights up its own horizontal band,
over uniform noise, so a few SGD steps measurably lower the loss.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _images(n: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    x = rng.integers(0, 96, size=(n, channels, size, size), dtype=np.uint8)
    band = size // 10
    for i, k in enumerate(labels):
        x[i, :, k * band : (k + 1) * band, :] = 255
    return x, labels.astype(np.uint8)


def _idx(data: np.ndarray) -> bytes:
    magic = 0x00000800 + data.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in data.shape)
    return header + data.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 512, n_test: int = 128, seed: int = 0) -> Path:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, torchvision's layout."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        x, y = _images(n, 1, 28, s)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(x[:, 0]))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(y))
    return Path(root)


def write_cifar10(root: Path, per_batch: int = 64, n_test: int = 64, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with five small data batches, a test batch and the meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for i, (name, n) in enumerate(files):
        x, y = _images(n, 3, 32, seed + i)
        entry = {"batch_label": name, "labels": y.astype(int).tolist(), "data": x.reshape(n, -1)}
        entry["filenames"] = [f"img_{j}.png" for j in range(n)]
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


def read_idx(path: Path) -> np.ndarray:
    """A plain idx reader for reference computations, independent of resnetlab.data."""
    raw = Path(path).read_bytes()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


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
