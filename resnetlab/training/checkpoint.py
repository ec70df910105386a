"""Training state: what `--resume` needs to continue a run bit for bit.

``last.state.pt`` holds the weights and everything else (optimizer, scheduler, scaler, RNG
states, metrics so far), read with ``weights_only=True`` so that a pickle cannot run code.
"""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnetlab.errors import UserError, first_line
from resnetlab.io import atomic_write
from resnetlab.models.weights import load_checkpoint, rebuild, resolve_weights_path

STATE_FILE = "last.state.pt"
LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"
FORMAT = "resnetlab-train-state"
VERSION = 1


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the training state atomically (a reader sees the old file or the new one)."""
    # Serialised in memory first: torch.save onto a full disk fails with an opaque
    # RuntimeError, a plain write with the OSError that names the cause.
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getbuffer()))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state file with ``weights_only=True``; an unsafe or broken file is a UserError."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"refusing to load {p}: it holds objects other than tensors and plain data "
            "(an unsafe pickle); only files written by `resnetlab train` are accepted"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, OSError) as e:
        raise UserError(
            f"cannot read training state {p}: corrupt or truncated ({first_line(e)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{p} is not a resnetlab training state")
    if state.get("version") != VERSION:
        raise UserError(f"{p}: training state version {state.get('version')} is not supported")
    return state


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generators, as weights_only-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved (CUDA states only where CUDA is present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_trained(path: Path, device: torch.device) -> tuple[nn.Module, dict, str]:
    """Any checkpoint `train` writes (a run folder, a .safetensors file or a training state):
    the model in eval mode on ``device``, its meta and the file it came from."""
    if path.is_file() and path.name.endswith(".state.pt"):
        state = load_state(path)
        model = rebuild(state["model"], state["meta"], path).to(device).eval()
        return model, state["meta"], str(path)
    file = resolve_weights_path(path)
    model, meta = load_checkpoint(file, map_location=device)
    return model, meta, str(file)
