"""The weights format: safetensors with our metadata as JSON inside, and foreign state_dicts.

We write safetensors only (it cannot run code when read), so one file rebuilds a model. We
read plain PyTorch state_dicts (torchvision, DDP, torch.compile, akamaster's CIFAR files)
with ``torch.load(weights_only=True)``: a file that needs more than tensors is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from resnetlab.errors import UserError, first_line
from resnetlab.io import atomic_write, atomic_write_json

META_KEY = "resnetlab"  # the safetensors metadata key that holds our meta as JSON
WEIGHTS_FILE = "model.safetensors"  # the weights inside an exported bundle folder
CONFIG_FILE = "config.json"  # the meta inside an exported bundle folder, for humans and tools
RUN_FILES = ("best.safetensors", "last.safetensors", WEIGHTS_FILE)

# Where other code bases keep a state_dict inside a checkpoint dict.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "net")


def save_weights(path: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write ``model``'s state_dict and ``meta`` as one safetensors file, atomically; a DDP or
    compiled model saves the keys of the bare one."""
    # Own contiguous copies: safetensors refuses shared or strided tensors.
    tensors = {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in strip_prefixes(model.state_dict()).items()
    }
    blob = canonical(save(tensors, metadata={"format": "pt", META_KEY: json.dumps(dict(meta))}))
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))


def canonical(blob: bytes) -> bytes:
    """The file with its header's keys sorted, so that equal weights give equal bytes.

    safetensors writes the metadata in a per-process hash order; the header keeps its length
    (padded with spaces, as the format allows), so the offsets stay valid.
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return blob if len(text) > n else blob[:8] + text.ljust(n) + blob[8 + n :]


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove the prefixes DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``) add,
    in either nesting order, and ``_orig_mod.`` where a compiled submodule put it mid-key."""
    state = dict(state_dict)
    for prefix in ("module.", "_orig_mod.") * 2:
        consume_prefix_in_state_dict_if_present(state, prefix)
    return {k.replace("._orig_mod.", "."): v for k, v in state.items()}


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """The weights file behind ``path``: the file itself, or the one in a run or bundle folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in RUN_FILES:
            if (p / name).is_file():
                return p / name
        raise UserError(f"no weights in {p}: expected one of {', '.join(RUN_FILES)}")
    if not p.exists():
        raise UserError(f"no such weights file: {p}")
    if not p.is_file():
        raise UserError(f"not a weights file: {p}")
    return p


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """A state_dict and our meta ({} for foreign files) from a .safetensors file, a PyTorch
    state_dict (maybe wrapped as {"state_dict": ...} or {"model": ...}), a run or bundle folder."""
    p = resolve_weights_path(path)
    state, meta = _read_safetensors(p) if _is_safetensors(p) else (_read_torch(p), {})
    if not meta and p.name == WEIGHTS_FILE and (p.parent / CONFIG_FILE).is_file():
        meta = _read_config(p.parent / CONFIG_FILE)
    return strip_prefixes(state), meta


def _is_safetensors(path: Path) -> bool:
    """Sniff the format: a safetensors file is an 8-byte header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"cannot read {path}: not a valid safetensors file ({first_line(e)})"
        ) from e
    raw = metadata.get(META_KEY)
    what = f"cannot read {path}: its {META_KEY!r} metadata"
    return state, {} if raw is None else _json_object(raw, what)


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: not a JSON file ({first_line(e)})") from e
    return _json_object(text, f"cannot read {path}: it")


def _json_object(text: str, what: str) -> dict:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} is not JSON ({first_line(e)})") from e
    if not isinstance(meta, dict):
        raise UserError(f"{what} is not a JSON object")
    return meta


def _read_torch(path: Path) -> dict[str, Tensor]:
    """torch.load with weights_only=True: a payload that needs any other global is refused."""
    try:
        # torchvision's reference scripts save their argparse namespace next to the weights: a
        # plain attribute bag, safe to rebuild. torch warns about pickle protocols it may not
        # support; the outcome is what counts.
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise UserError(
                f"refusing to load {path}: not a plain state_dict (unsafe pickle: it needs "
                f"{found.group(1).rstrip('.')}); save model.state_dict() instead"
            ) from None
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80"  # the PROTO opcode every pickle since protocol 2 has
        if pickled:
            raise UserError(
                f"refusing to load {path}: not a plain state_dict (unsafe pickle: it uses "
                "operations a state_dict never needs)"
            ) from None
        raise UserError(f"cannot read {path}: not a PyTorch or safetensors weights file") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        # Only torch's own messages say something useful ("failed reading zip archive").
        detail = str(e).split(". ")[0].strip() if isinstance(e, RuntimeError) else ""
        raise UserError(
            f"cannot read {path}: not a PyTorch or safetensors weights file, or a truncated one"
            + (f" ({detail.splitlines()[0]})" if detail else "")
        ) from None
    return _extract_state_dict(obj, path)


def _extract_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        obj = next((obj[k] for k in _WRAPPER_KEYS if _is_state_dict(obj.get(k))), obj)
    if not _is_state_dict(obj):
        kind = (
            f"a dict with keys {', '.join(map(str, list(obj)[:5]))}"
            if isinstance(obj, Mapping)
            else type(obj).__name__
        )
        raise UserError(f"cannot use {path}: expected a state_dict of tensors, found {kind}")
    return dict(obj)


def _is_state_dict(obj: object) -> bool:
    items = obj.items() if isinstance(obj, Mapping) else ()
    return bool(items) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in items)


def adapt_keys(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """akamaster's CIFAR checkpoints call our ``fc`` ``linear``: renamed if only the file has it."""
    state = dict(state_dict)
    has = lambda keys, prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has(state, "linear.") and not has(state, "fc.") and not has(model.state_dict(), "linear."):
        state = {("fc." + k[7:] if k.startswith("linear.") else k): v for k, v in state.items()}
    return state


def load_into(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "the weights"
) -> None:
    """Load ``state_dict`` strictly; any mismatch is one UserError line that names the keys
    (``load_state_dict``'s own error spans lines and loads part first). BatchNorm fills a
    missing ``num_batches_tracked`` itself (files from before PyTorch 0.4)."""
    expected = model.state_dict()
    state = dict(state_dict)
    old_bn = {k for k in expected if k.endswith("num_batches_tracked")}
    old_bn = {k for k in old_bn if k.replace("num_batches_tracked", "running_mean") in state}
    missing = [k for k in expected if k not in state and k not in old_bn]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        _count(missing, "missing key"),
        _count(unexpected, "unexpected key"),
        _count(shapes, "shape mismatch", "es"),
    ]
    if missing or unexpected or shapes:
        hint = ""
        if any(s.startswith("fc.weight:") for s in shapes) and not (missing or unexpected):
            hint = f"; pass num_classes={state['fc.weight'].shape[0]}"
        details = "; ".join(p for p in problems if p)
        raise UserError(f"{source} do not match {type(model).__name__}: {details}{hint}")
    model.load_state_dict(state, strict=True)


def _count(items: list[str], what: str, plural: str = "s") -> str:
    """``2 missing keys (a, b)``, at most four named; empty for no items."""
    if not items:
        return ""
    more = f", ... {len(items) - 4} more" if len(items) > 4 else ""
    return f"{len(items)} {what}{plural if len(items) > 1 else ''} ({', '.join(items[:4])}{more})"


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from a run folder (best.safetensors if training kept one, else
    last.safetensors), an exported bundle or a .safetensors file. The model comes back in eval
    mode on ``map_location``, with the meta that says how to preprocess its inputs."""
    file = resolve_weights_path(path)
    state, meta = read_weights(file)
    return rebuild(state, meta, file).to(map_location).eval(), meta


def rebuild(state: Mapping[str, Tensor], meta: Mapping[str, Any], source: os.PathLike) -> nn.Module:
    """The model ``meta`` names, holding ``state``: what every resnetlab checkpoint is."""
    # Lazy: the package imports this module, and importing it registers every model.
    from resnetlab.models import create_model

    if not meta.get("model"):
        raise UserError(
            f"{source} holds weights without resnetlab metadata; "
            "load it with create_model(NAME, weights=PATH) instead"
        )
    missing = [k for k in ("num_classes", "in_channels") if k not in meta]
    if missing:
        raise UserError(f"{source}: its metadata lacks {', '.join(missing)}")
    kwargs = {"num_classes": meta["num_classes"], "in_channels": meta["in_channels"]}
    try:
        model = create_model(meta["model"], **kwargs, **(meta.get("model_kwargs") or {}))
    except UserError as e:  # model_kwargs the builder does not take: a foreign or edited file
        raise UserError(f"{source}: cannot build {meta['model']} from its metadata ({e})") from None
    load_into(model, state, source=f"weights in {source}")
    return model


def write_bundle(folder: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Write a self-contained folder: model.safetensors (meta inside) and config.json, which
    ``create_model(name, weights=folder)`` and ``load_checkpoint(folder)`` read."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write a bundle to {folder}: it is a file")
    # Never write over a run folder's own config.json: only a new, empty or bundle folder.
    if folder.is_dir() and any(folder.iterdir()) and not (folder / WEIGHTS_FILE).is_file():
        raise UserError(f"cannot write a bundle to {folder}: it holds other files")
    save_weights(folder / WEIGHTS_FILE, model, meta)
    atomic_write_json(folder / CONFIG_FILE, dict(meta))
    return folder
