"""Using a trained model: `predict` (top-k classes of images) and `export` (ONNX, safetensors).

The functions are not re-exported here: a package attribute named ``predict`` would
shadow the ``resnetlab.inference.predict`` module. `resnetlab.predict` is the short name.
"""


def first_line(e: BaseException) -> str:
    """An exception's first line for a one-line UserError (its type when it has no message)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
