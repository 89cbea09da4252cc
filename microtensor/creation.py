"""Creating tensors: from data (`tensor`, `from_numpy`), filled (`zeros ones full empty
full_like zeros_like ones_like`), ranges (`arange linspace eye`) and random (`randn rand`,
from the global generator that `manual_seed` seeds).

    >>> mt.zeros(2, 3).shape, mt.full((2,), 4).dtype, mt.linspace(0, 1, 5).dtype
    ((2, 3), dtype('int64'), dtype('float32'))
"""
from __future__ import annotations

import numpy as np

from .errors import op_error
from .tensor import DEFAULT_FLOAT, Tensor, _shape_arg, generator


def tensor(data, requires_grad: bool = False, dtype=None, name: str | None = None) -> Tensor:
    """A new tensor holding a copy of `data`. Python floats become float32; NumPy arrays
    keep their dtype (float64 stays float64).

    >>> mt.tensor([[1.0, 2.0]], requires_grad=True, name="x")
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, name=name)


def from_numpy(array: np.ndarray, requires_grad: bool = False) -> Tensor:
    """A tensor sharing memory with `array` (no copy), keeping its dtype."""
    result = Tensor._wrap(np.asarray(array))
    result.requires_grad = requires_grad
    return result


def _new(array, requires_grad, name):
    result = Tensor._wrap(array)
    result.requires_grad = requires_grad
    result.name = name
    return result


def _shape(shape, where: str = "shape"):
    shape = _shape_arg(shape)
    if any(not isinstance(n, (int, np.integer)) or n < 0 for n in shape):
        raise op_error(where, f"sizes must be non-negative integers, got {shape}")
    return shape


def zeros(*shape, dtype=DEFAULT_FLOAT, requires_grad=False, name=None) -> Tensor:
    """A tensor of zeros, float32 unless `dtype` says otherwise; the shape comes as
    sizes or as one tuple: `mt.zeros(2, 3)` or `mt.zeros((2, 3))`."""
    return _new(np.zeros(_shape(shape, "zeros"), dtype=dtype), requires_grad, name)


def ones(*shape, dtype=DEFAULT_FLOAT, requires_grad=False, name=None) -> Tensor:
    """A tensor of ones, float32 unless `dtype` says otherwise; the shape comes as sizes
    or as one tuple: `mt.ones(2, 3)` or `mt.ones((2, 3))`."""
    return _new(np.ones(_shape(shape, "ones"), dtype=dtype), requires_grad, name)


def _fill_dtype(fill_value, dtype):
    """The dtype of `full`/`full_like` when none is given: that of the fill value, as
    NumPy and PyTorch infer it (int -> int64, bool -> bool), with floats float32."""
    if dtype is not None:
        return dtype
    kind = np.asarray(fill_value).dtype.kind
    return DEFAULT_FLOAT if kind == "f" and not isinstance(fill_value, np.floating) \
        else np.asarray(fill_value).dtype


def full(shape, fill_value, dtype=None, requires_grad=False, name=None) -> Tensor:
    """A tensor of `shape` filled with `fill_value`; the dtype follows the value unless
    given: mt.full((2, 2), 4) is int64, mt.full((2, 2), 0.5) is float32."""
    shape = _shape((shape,), "full")
    try:
        array = np.full(shape, fill_value, dtype=_fill_dtype(fill_value, dtype))
    except (ValueError, TypeError):
        raise _bad_fill("full", fill_value, dtype) from None
    if array.dtype.kind not in "biufc":   # a string or object: not a tensor's data
        raise _bad_fill("full", fill_value, dtype)
    return _new(array, requires_grad, name)


def full_like(t, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """Like `t` in shape, filled with `fill_value`; the dtype is t's unless given."""
    try:
        array = np.full_like(np.asarray(t), fill_value, dtype=dtype)
    except (ValueError, TypeError):
        raise _bad_fill("full_like", fill_value, dtype or np.asarray(t).dtype) from None
    return _new(array, requires_grad, None)


def _bad_fill(where, fill_value, dtype):
    return op_error(where, f"cannot fill a {np.dtype(dtype) if dtype else 'tensor'} "
                    f"with {fill_value!r}", TypeError, "give a number (or pass a dtype "
                    "that holds the value)")


def empty(*shape, dtype=DEFAULT_FLOAT, requires_grad=False, name=None) -> Tensor:
    """A tensor of `shape` whose values are not set (whatever the memory held): fill it
    before reading it. Use zeros unless the allocation itself matters."""
    return _new(np.empty(_shape(shape, "empty"), dtype=dtype), requires_grad, name)


def linspace(start, stop, num: int, dtype=DEFAULT_FLOAT, requires_grad=False) -> Tensor:
    """`num` evenly spaced values from start to stop, both included (np.linspace,
    torch.linspace); float32 unless a dtype is given. An integer dtype gets each exact
    value truncated toward zero, as PyTorch (NumPy rounds down), from start and stop
    themselves truncated first:

    >>> mt.linspace(5, -5, 6, dtype=np.int64).tolist()
    [5, 3, 1, -1, -3, -5]
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise op_error("linspace", f"num must be a non-negative integer, got {num!r}",
                       fix="num counts the values, both ends included")
    kind = np.dtype(dtype).kind
    if kind == "b":   # PyTorch refuses it too: booleans have no values in between
        raise op_error("linspace", "dtype bool has no evenly spaced values", TypeError,
                       "use a float or integer dtype, then compare (e.g. > 0.5)")
    if kind not in "iu":
        return _new(np.linspace(start, stop, int(num), dtype=dtype), requires_grad, None)
    # Integer arithmetic: value i is start + (stop - start) i / (num - 1), exactly, then
    # truncated. Floats would land a hair below an exact integer and truncate to the one
    # below it.
    first, last, steps = int(np.trunc(start)), int(np.trunc(stop)), max(int(num) - 1, 1)
    numerator = first * steps + (last - first) * np.arange(int(num), dtype=np.int64)
    toward_zero = np.sign(numerator) * (np.abs(numerator) // steps)
    return _new(toward_zero.astype(dtype), requires_grad, None)


def zeros_like(t, dtype=None, requires_grad=False) -> Tensor:
    """Zeros in the shape of `t` (a Tensor or array), of t's dtype unless `dtype` is given."""
    return _new(np.zeros_like(np.asarray(t), dtype=dtype), requires_grad, None)


def ones_like(t, dtype=None, requires_grad=False) -> Tensor:
    """Ones in the shape of `t` (a Tensor or array), of t's dtype unless `dtype` is given."""
    return _new(np.ones_like(np.asarray(t), dtype=dtype), requires_grad, None)


def randn(*shape, dtype=DEFAULT_FLOAT, requires_grad=False, name=None) -> Tensor:
    """Standard normal samples from the global generator (see `manual_seed`)."""
    return _new(generator().standard_normal(_shape(shape, "randn")).astype(dtype), requires_grad, name)


def rand(*shape, dtype=DEFAULT_FLOAT, requires_grad=False, name=None) -> Tensor:
    """Uniform samples in [0, 1) from the global generator."""
    return _new(generator().random(_shape(shape, "rand")).astype(dtype), requires_grad, name)


def arange(start, stop=None, step=1, dtype=None, requires_grad=False) -> Tensor:
    """Like np.arange; integer arguments give int64, float arguments float32."""
    if step == 0:
        raise op_error("arange", "step must not be 0", fix="use a positive step to count up, "
                       "a negative one to count down")
    array = np.arange(start, stop, step) if stop is not None else np.arange(start)
    if dtype is None and array.dtype.kind == "f":
        dtype = DEFAULT_FLOAT
    return _new(array.astype(dtype) if dtype else array, requires_grad, None)


def eye(n, m=None, dtype=DEFAULT_FLOAT, requires_grad=False) -> Tensor:
    """The identity matrix: ones on the diagonal of an (n, m) matrix (m defaults to n).

    >>> mt.eye(2)
    tensor([[1., 0.],
            [0., 1.]])
    """
    _shape((n,) if m is None else (n, m), "eye")
    return _new(np.eye(n, m, dtype=dtype), requires_grad, None)
