"""How errors are worded: name the function, show the shapes/dtypes/values, say the fix.

Errors built here carry `microtensor = True`, so the `primitive` decorator passes them
through unchanged instead of wrapping them a second time.
"""
from __future__ import annotations

import numpy as np


def describe(x) -> str:
    """A short description of a value for error messages: 'float32 (3, 4)', 'int 5'."""
    # A Tensor shows its array; an ndarray's own `.data` is a raw buffer, not an array.
    data = x if isinstance(x, np.ndarray) else getattr(x, "data", x)
    if isinstance(data, np.ndarray):
        return f"{data.dtype} {tuple(data.shape)}"
    if x is None:
        return "None"
    return f"{type(x).__name__} {x!r}"


def op_error(where: str, message: str, kind: type = ValueError, fix: str | None = None):
    """An exception of type `kind` reading 'where: message. fix'."""
    text = f"{where}: {message}"
    if fix:
        text = f"{text.rstrip('.')}. {fix[0].upper()}{fix[1:]}"
    error = kind(text)
    error.microtensor = True
    return error
