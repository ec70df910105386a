"""Export a trained model to ONNX (checked against onnxruntime) or to a safetensors bundle."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from resnetlab.errors import UserError, first_line
from resnetlab.io import atomic_write

TOLERANCE = 1e-4  # max |onnxruntime - PyTorch|, relative to the logits' scale when above 1
FORMATS = ("onnx", "safetensors")


def export_onnx(
    model: nn.Module,
    meta: dict,
    path: str | os.PathLike,
    *,
    check_inputs: Sequence[Tensor] = (),
    opset: int | None = None,
) -> float:
    """Export ``model`` to ONNX at ``path``, verified with onnxruntime; returns the max error.

    The file is written only after onnxruntime reproduced PyTorch on random batches of two
    sizes (the dynamic batch dimension) and on ``check_inputs`` (preprocessed images).
    """
    try:
        import onnx  # noqa: F401  (torch.onnx needs it, and onnxscript)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(f"ONNX export needs {e.name}: pip install 'resnetlab[onnx]'") from None
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, *map(int, meta["input_size"]), generator=gen)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                opset_version=opset,
                verbose=False,
            )
        except Exception as e:  # the exporter raises many kinds; a bad --opset is one
            raise UserError(f"torch.onnx could not export {meta['model']}: {first_line(e)}") from e
    program.model.metadata_props["resnetlab"] = json.dumps(meta)
    checks = [torch.randn(3, *example.shape[1:], generator=gen), example[:1]]
    checks += [torch.stack(list(check_inputs))] if check_inputs else []
    errors: list[float] = []

    def write_and_check(tmp: Path) -> None:
        program.save(str(tmp), external_data=False)
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        for x in checks:
            (got,) = session.run(["logits"], {"input": x.numpy()})
            with torch.inference_mode():
                want = model(x).numpy()
            error = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
            errors.append(error)
            if got.shape != want.shape or not error <= TOLERANCE:
                raise UserError(
                    f"the ONNX export of {meta['model']} disagrees with PyTorch "
                    f"(error {error:.2e} > {TOLERANCE:.0e} on a batch of {len(x)}); nothing written"
                )

    atomic_write(path, write_and_check)
    return max(errors)


def export_safetensors(model: nn.Module, meta: dict, path: str | os.PathLike) -> Path:
    """Write a bundle folder (or one .safetensors file) and check that it loads back exactly."""
    from resnetlab.models.weights import load_checkpoint, save_weights, write_bundle

    path = Path(path)
    model = model.cpu().eval()
    write = save_weights if path.suffix == ".safetensors" else write_bundle  # file or folder
    write(path, model, meta)
    loaded, _ = load_checkpoint(path)
    x = torch.randn(2, *map(int, meta["input_size"]), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        if not torch.equal(loaded(x), model(x)):
            raise RuntimeError(f"{path} does not reproduce the model it was written from")
    return path


def default_output(checkpoint: Path, meta: dict, fmt: str) -> Path:
    """Next to the checkpoint: RUN/MODEL.onnx or RUN/MODEL-safetensors/."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder / (f"{meta['model']}.onnx" if fmt == "onnx" else f"{meta['model']}-safetensors")
