"""Weights as `.safetensors`: the format Hugging Face and PyTorch users exchange models in.

A safetensors file is an 8-byte header length, a JSON header (each tensor's dtype, shape
and byte range, plus optional string metadata) and the raw bytes of the tensors. Reading
one never runs code (unlike a pickle), which is why the ecosystem moved to it. Only flat
name -> array mappings fit: that is a `state_dict`, not a training checkpoint with nested
optimizer state (those stay in `mt.save`'s `.npz`; see `microtensor.checkpoint`).

    >>> from microtensor.safetensors_io import load_safetensors, save_safetensors
    >>> model = mt.nn.Linear(2, 3)
    >>> save_safetensors(model.state_dict(), "model.safetensors")
    >>> state = load_safetensors("model.safetensors")        # {name: np.ndarray}

`Module.save(path)` / `Module.load(path)` use these when the path ends in `.safetensors`.
Reading and writing go through the `safetensors` package's NumPy API.
"""
from __future__ import annotations

import os

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from .errors import op_error
from .files import write_atomically
from .tensor import Tensor

EXTENSION = ".safetensors"


class SafetensorsFileError(ValueError):
    """A .safetensors file that cannot be read: damaged, truncated or not safetensors."""


def save_safetensors(tensors, path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> array or Tensor) to `path` atomically: the bytes go to a
    temporary file beside it, which is renamed over `path` only once complete.

        >>> save_safetensors({"weight": np.ones((2, 3), np.float32)}, "w.safetensors")
    """
    path = os.fspath(path)
    arrays = {}
    for name, value in dict(tensors).items():
        array = np.ascontiguousarray(value.data if isinstance(value, Tensor) else value)
        if not isinstance(name, str) or array.dtype.hasobject or array.dtype.kind not in "biuf":
            raise op_error("save_safetensors", f"'{name}' ({array.dtype}) cannot be stored: "
                           "safetensors holds numeric arrays under string names", TypeError,
                           "store only a state_dict (name -> numeric array)")
        arrays[name] = array

    def write(temporary: str) -> None:
        try:   # straight to the file: no second copy of the weights in memory
            safetensors.numpy.save_file(arrays, temporary, metadata=metadata)
        except (SafetensorError, ValueError, TypeError) as error:
            raise op_error("save_safetensors", f"cannot write '{path}': {error}",
                           ValueError) from None
    write_atomically(path, write, where="save_safetensors", example="model.safetensors")


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file as a NumPy array, by name. A missing,
    damaged or truncated file is refused with an error naming it.

        >>> save_safetensors({"weight": np.ones((2, 3), np.float32)}, "w.safetensors")
        >>> load_safetensors("w.safetensors")["weight"].shape
        (2, 3)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise op_error("load_safetensors", f"no file at '{path}'", FileNotFoundError,
                       "check the path")
    try:
        # A copy of each array: safetensors may hand out views of the file mapped into
        # memory, which must not outlive a later rewrite of the file.
        return {name: np.array(array)
                for name, array in safetensors.numpy.load_file(path).items()}
    except (SafetensorError, ValueError, TypeError, OverflowError) as error:
        raise op_error("load_safetensors", f"'{path}' is damaged, truncated or not a "
                       f"safetensors file ({os.path.getsize(path):,} bytes; {error})",
                       SafetensorsFileError, "download or save it again") from None
