"""MNIST and Fashion-MNIST from their idx files (``<root>/MNIST/raw/*-ubyte``), every header
field checked, so a truncated or foreign file is one clear line."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from resnetlab.errors import UserError


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
