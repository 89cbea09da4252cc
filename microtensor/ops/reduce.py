"""Reductions over an axis (None = all axes, an int, or a tuple; negative axes count from
the end). Their backward spreads the output gradient back over the reduced axes.
"""
import builtins

import numpy as np

from ..autograd import primitive
from ..errors import op_error
from .elementwise import sqrt


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


def std(x, axis=None, keepdims=False, correction=1):
    """Standard deviation: sqrt(var(x)), the honest composition (so its graph shows var
    then sqrt; at a constant input the gradient is NaN, as in PyTorch)."""
    return sqrt(var(x, axis=axis, keepdims=keepdims, correction=correction))


@primitive("logsumexp", rule="dx = g * exp(x - logsumexp(x))  (= g * softmax(x))")
def logsumexp(x, *, axis=None, keepdims=False):
    """log(sum(exp(x))) over `axis`, computed with the max subtracted (never overflows)."""
    axes = _axes("logsumexp", axis, np.ndim(x))
    if x.size == 0 or builtins.any(x.shape[a] == 0 for a in axes):
        raise op_error("logsumexp", f"logsumexp over an empty axis of a tensor with shape "
                       f"{x.shape}", fix="check for an empty sequence upstream")
    top = np.max(x, axis=axes, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)     # all -inf: log(0) = -inf, not NaN
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True)) + top
    def backward(g):
        # d log(sum exp x) / dx_i = exp(x_i) / sum exp x = softmax(x)_i
        return (_spread(g, x.shape, axes, keepdims) * np.exp(x - out),)
    return (out if keepdims else np.squeeze(out, axis=axes)), backward


@primitive("prod", rule="dx_i = g * (product of the other elements)")
def prod(x, *, axis=None, keepdims=False):
    axes = _axes("prod", axis, np.ndim(x))
    out = np.prod(x, axis=axes, keepdims=keepdims)
    def backward(g):
        # prod / x_i fails where x_i == 0, so build "product of all the others" from an
        # exclusive running product from the left times one from the right.
        if x.size == 0:
            return (np.zeros(x.shape, g.dtype),)
        kept = [a for a in range(x.ndim) if a not in axes]
        rows = np.transpose(x, kept + list(axes)).reshape(
            [x.shape[a] for a in kept] + [-1])                       # (..., n)
        ones = np.ones(rows.shape[:-1] + (1,), rows.dtype)
        left = np.cumprod(np.concatenate([ones, rows[..., :-1]], axis=-1), axis=-1)
        right = np.cumprod(np.concatenate([ones, rows[..., :0:-1]], axis=-1),
                           axis=-1)[..., ::-1]
        others = (left * right).reshape([x.shape[a] for a in kept + list(axes)])
        others = np.transpose(others, np.argsort(kept + list(axes)))
        return (_spread(g, x.shape, axes, keepdims) * others,)
    return out, backward


@primitive("cumsum", rule="dx = reverse cumsum of g along the axis")
def cumsum(x, *, axis=None):
    """Running sum along `axis` (None: over the flattened tensor, as NumPy)."""
    if axis is None:
        flat = np.reshape(x, -1)
        def backward_flat(g):
            return (np.cumsum(g[::-1])[::-1].reshape(np.shape(x)),)
        return np.cumsum(flat), backward_flat
    (axis,) = _axes("cumsum", axis, np.ndim(x)) or (0,)
    if np.ndim(x) == 0:
        return np.array(x), lambda g: (g,)
    def backward(g):
        # out_j = sum_{i <= j} x_i, so dx_i = sum_{j >= i} g_j: a cumsum from the end.
        return (np.flip(np.cumsum(np.flip(g, axis), axis=axis), axis),)
    return np.cumsum(x, axis=axis), backward


def _index_reduction(name, reduce):
    @primitive(name, rule="no gradient (integer output)")
    def op(x, *, axis=None, keepdims=False):
        if axis is not None and not isinstance(axis, (int, np.integer)):
            raise op_error(name, f"axis must be None or one int, got {axis!r}", TypeError,
                           f"{name} of several axes: reshape them into one first")
        axes = _axes(name, axis, np.ndim(x))
        if x.size == 0 or builtins.any(x.shape[a] == 0 for a in axes):
            raise op_error(name, f"{name} of an empty tensor or axis (shape {x.shape})")
        if axis is None or np.ndim(x) == 0:
            out = reduce(np.reshape(x, -1))
            out = np.reshape(out, (1,) * np.ndim(x)) if keepdims else np.asarray(out)
        else:
            out = reduce(x, axis=axes[0], keepdims=keepdims)
        return out.astype(np.int64), lambda g: (None,)
    op.__name__ = name
    op.__doc__ = (f"Index of the {name[3:]}imum along `axis` (None: into the flattened "
                  f"tensor); the first one at a tie. int64, no gradient.")
    return op


argmax = _index_reduction("argmax", np.argmax)
argmin = _index_reduction("argmin", np.argmin)


def _logical_reduction(name, reduce):
    @primitive(name, rule="no gradient (boolean output)")
    def op(x, *, axis=None, keepdims=False):
        axes = _axes(name, axis, np.ndim(x))
        return reduce(np.asarray(x) != 0, axis=axes, keepdims=keepdims), lambda g: (None,)
    op.__name__ = name
    op.__doc__ = f"True where {'any' if name == 'any' else 'every'} element over `axis` " \
                 f"is non-zero (boolean, no gradient)."
    return op


any = _logical_reduction("any", np.any)
all = _logical_reduction("all", np.all)
