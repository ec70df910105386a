"""A pickle reader that can only build numpy arrays and plain containers.

The CIFAR releases are pickles, and `pickle.load` on a tampered file runs arbitrary code; this
unpickler resolves only the globals a pickled numpy array needs, so any other payload is refused.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from resnetlab.errors import UserError

# numpy < 2 pickles name `numpy.core.*`, numpy >= 2 `numpy._core.*`; Python 3 protocol-2
# pickles of bytes use `_codecs.encode`, protocol 5 arrays `numeric._frombuffer`.
_ALLOWED: dict[tuple[str, str], Any] = {("_codecs", "encode"): __import__("codecs").encode}
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
    except pickle.UnpicklingError as e:
        raise UserError(f"{source}: refused or corrupt pickle ({_flat(e)})") from None
    except Exception as e:  # anything a malformed stream can raise is a data error
        reason = "truncated" if isinstance(e, EOFError) else f"{type(e).__name__}: {_flat(e)}"
        raise UserError(f"{source}: not a valid pickle ({reason})") from None


def _flat(e: BaseException) -> str:
    """Some unpickling messages span lines; the CLI prints one."""
    return " ".join(str(e).split())
