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


class InvalidValue(ValueError, RuntimeError):
    """A refused value or shape. It is a ValueError, as NumPy and Python raise for a bad
    value, and a RuntimeError, as PyTorch raises for a bad shape, so code written for
    either catches it."""


class InvalidIndex(IndexError, RuntimeError):
    """A refused axis or index. It is an IndexError, as NumPy raises for both and PyTorch
    for an axis out of range, and a RuntimeError, as PyTorch raises for an index out of
    range (gather, scatter, embedding), so code written for either catches it."""


# op_error's kinds that become one of the classes both worlds catch
_BOTH_WORLDS = {ValueError: InvalidValue, IndexError: InvalidIndex}


def op_error(where: str, message: str, kind: type = ValueError, fix: str | None = None):
    """An exception reading 'where: message. fix', of type `kind`; a ValueError is raised
    as an `InvalidValue` and an IndexError as an `InvalidIndex` (each also a
    RuntimeError, as PyTorch raises)."""
    text = f"{where}: {message}"
    if fix:
        text = f"{text.rstrip('.')}. {fix[0].upper()}{fix[1:]}"
    error = _BOTH_WORLDS.get(kind, kind)(text)
    error.microtensor = True
    return error


def check_sizes(where: str, **sizes) -> None:
    """Refuse a size that is not a positive integer, naming the argument. Bools are
    refused too: Python counts True as 1, so `Linear(True, 4)` would silently build a
    one-input layer.

    >>> check_sizes("Linear", in_features=3, out_features=0)
    Traceback (most recent call last):
    microtensor.errors.InvalidValue: Linear: out_features must be a positive integer, got 0
    """
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise op_error(where, f"{name} must be a positive integer, got {value!r}")


def check_count(where: str, name: str, value, smallest: int = 1) -> None:
    """Refuse a count (of tokens, steps) that is not an integer >= `smallest`; bools too,
    which Python counts as integers (True would silently mean 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise op_error(where, f"{name} must be an integer, got {type(value).__name__} "
                       f"{value!r}", TypeError, fix=f"pass a whole number >= {smallest}")
    if value < smallest:
        raise op_error(where, f"{name} must be >= {smallest}, got {value}",
                       fix=f"pass a whole number >= {smallest}")
