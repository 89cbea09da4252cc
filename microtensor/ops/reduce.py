"""Reductions over an axis (None = all axes, an int, or a tuple; negative axes count from
the end). Their backward spreads the output gradient back over the reduced axes.
"""
import builtins

import numpy as np

from ..autograd import primitive
from ..errors import op_error


def _axes(name, axis, ndim):
    """Normalise `axis` to a sorted tuple of non-negative ints, or raise naming the op.
    (`builtins.max`: this module defines its own `max` and `min` ops.)"""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    limit = builtins.max(ndim, 1)  # a 0-d tensor accepts axis 0 and -1, as in PyTorch
    for a in axes:
        if not -limit <= a < limit:
            raise op_error(name, f"axis {a} is out of range for a tensor with {ndim} "
                           f"dimension(s)", IndexError,
                           f"use an axis in [{-ndim}, {ndim - 1}]" if ndim else None)
    return tuple(sorted({int(a) % ndim for a in axes})) if ndim else ()


def _spread(g, x_shape, axes, keepdims):
    """The output gradient, re-expanded over the reduced axes (a broadcast view)."""
    if not keepdims:  # put back the reduced axes, as size 1
        g = np.reshape(g, tuple(1 if i in axes else n for i, n in enumerate(x_shape)))
    return np.broadcast_to(g, x_shape)


@primitive("sum", rule="dx = broadcast(g) over the summed axes")
def sum(x, *, axis=None, keepdims=False):
    axes = _axes("sum", axis, np.ndim(x))
    def backward(g):
        return (_spread(g, x.shape, axes, keepdims),)
    return np.sum(x, axis=axes, keepdims=keepdims), backward


@primitive("mean", rule="dx = broadcast(g) / n  (n = elements averaged)")
def mean(x, *, axis=None, keepdims=False):
    axes = _axes("mean", axis, np.ndim(x))
    count = int(np.prod([x.shape[a] for a in axes]))
    if count == 0:
        raise op_error("mean", f"mean over an empty axis of a tensor with shape {x.shape}")
    def backward(g):
        return (_spread(g / count, x.shape, axes, keepdims),)
    return np.mean(x, axis=axes, keepdims=keepdims), backward


def _extreme(name, reduce):
    @primitive(name, rule="dx = g at the position(s) of the " + name +
               " (ties share it equally), 0 elsewhere")
    def op(x, *, axis=None, keepdims=False):
        if x.size == 0:
            raise op_error(name, f"{name} of an empty tensor (shape {x.shape})")
        axes = _axes(name, axis, np.ndim(x))
        out = reduce(x, axis=axes, keepdims=True)
        def backward(g):
            # Like torch.amax: the gradient is split evenly between tied maxima, so
            # it still sums to g (finite differences agree wherever there is no tie).
            winners = (x == out).astype(g.dtype)
            share = winners / winners.sum(axis=axes, keepdims=True)
            return (share * _spread(g, x.shape, axes, keepdims),)
        return (out if keepdims else np.squeeze(out, axis=axes)), backward
    op.__name__ = name
    return op


max = _extreme("max", np.max)
min = _extreme("min", np.min)


@primitive("var", rule="dx = g * 2 (x - mean(x)) / (n - correction)")
def var(x, *, axis=None, keepdims=False, correction=1):
    """Variance with PyTorch's default `correction=1` (the unbiased estimate);
    pass `correction=0` for the population variance that LayerNorm uses."""
    axes = _axes("var", axis, np.ndim(x))
    count = int(np.prod([x.shape[a] for a in axes]))
    if count - correction <= 0:
        raise op_error("var", f"needs more than {correction} element(s) along the reduced "
                       f"axes, got {count} (shape {x.shape})", fix="pass correction=0")
    centered = x - np.mean(x, axis=axes, keepdims=True)
    out = np.sum(centered * centered, axis=axes, keepdims=keepdims) / (count - correction)
    def backward(g):
        return (_spread(g, x.shape, axes, keepdims) * centered * (2 / (count - correction)),)
    return out, backward
