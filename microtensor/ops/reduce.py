"""Reductions over an axis (None = all axes, an int, or a tuple; negative axes count from
the end). Their backward spreads the output gradient back over the reduced axes.
"""
import builtins

import numpy as np

from ..autograd import document_op, primitive
from ..errors import op_error
from .elementwise import mul, sqrt
from .indexing import gather


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
def sum(x, *, axis=None, keepdims=False, dtype=None):
    """Sum over `axis`; `dtype` sets the accumulator and the result's dtype, as in NumPy
    and PyTorch (e.g. float64 for a float32 tensor, to lose less)."""
    axes = _axes("sum", axis, np.ndim(x))
    def backward(g):
        return (_spread(g, x.shape, axes, keepdims),)
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=dtype), backward


@primitive("mean", rule="dx = broadcast(g) / n  (n = elements averaged)")
def mean(x, *, axis=None, keepdims=False):
    """The average over `axis` (None: over every element). `keepdims=True` keeps each
    reduced axis as size 1 (PyTorch's `keepdim`), so the result broadcasts against x.

        >>> mt.tensor([[1.0, 2.0], [3.0, 5.0]]).mean(axis=0)
        tensor([2. , 3.5])
    """
    axes = _axes("mean", axis, np.ndim(x))
    count = int(np.prod([x.shape[a] for a in axes]))
    if count == 0:
        raise op_error("mean", f"mean over an empty axis of a tensor with shape {x.shape}",
                       fix="check for an empty batch or a wrong axis (PyTorch returns NaN "
                       "here, which surfaces steps later)")
    def backward(g):
        return (_spread(g / count, x.shape, axes, keepdims),)
    return np.mean(x, axis=axes, keepdims=keepdims), backward


def _extreme(name, reduce, word):
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
    document_op(op, (f"The {word} value over `axis` (None: over every element): values only, "
                  f"as np.{name} and torch.a{name} (PyTorch's {name} with a dim also gives "
                  f"indices: here that is arg{name}). Tied {word} values share the gradient "
                  f"equally."))
    return op


max = _extreme("max", np.max, "largest")
min = _extreme("min", np.min, "smallest")


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
def prod(x, *, axis=None, keepdims=False, dtype=None):
    """Product over `axis`; `dtype` sets the accumulator and the result's dtype."""
    axes = _axes("prod", axis, np.ndim(x))
    out = np.prod(x, axis=axes, keepdims=keepdims, dtype=dtype)
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
    document_op(op, (f"Index of the {name[3:]}imum along `axis` (None: into the flattened "
                  f"tensor); the first one at a tie. int64, no gradient."))
    return op


argmax = _index_reduction("argmax", np.argmax)
argmin = _index_reduction("argmin", np.argmin)


def _logical_reduction(name, reduce):
    @primitive(name, rule="no gradient (boolean output)")
    def op(x, *, axis=None, keepdims=False):
        axes = _axes(name, axis, np.ndim(x))
        return reduce(np.asarray(x) != 0, axis=axes, keepdims=keepdims), lambda g: (None,)
    op.__name__ = name
    document_op(op, f"True where {'any' if name == 'any' else 'every'} element over `axis` "
                 f"is non-zero (boolean, no gradient).")
    return op


any = _logical_reduction("any", np.any)
all = _logical_reduction("all", np.all)


# ----------------------------------------------------------------- running products, maxima

def _running_axis(name, x, axis, required=False):
    """The one axis a running op walks along, as a non-negative int; None walks the
    flattened tensor (NumPy's rule, and `cumsum`'s) unless the op needs an axis (as
    PyTorch's logcumsumexp, cummax and cummin do)."""
    if axis is None:
        if required:
            raise op_error(name, "needs an axis (an int)", TypeError,
                           "pass axis=-1 for the last one")
        return None
    if not isinstance(axis, (int, np.integer)):
        raise op_error(name, f"axis must be None or one int, got {axis!r}", TypeError)
    (axis,) = _axes(name, axis, np.ndim(x)) or (0,)
    return axis


def _reverse_cumsum(array, axis):
    """sum_{j >= i} array_j along `axis`: how a running op's gradient flows back."""
    return np.flip(np.cumsum(np.flip(array, axis), axis=axis), axis)


@primitive("cumprod", rule="dx_i = sum_{j >= i} g_j * prod_{k <= j, k != i} x_k")
def cumprod(x, *, axis=None):
    """Running product along `axis` (None: over the flattened tensor), as torch.cumprod.
    Exact gradients where x holds zeros too.

    >>> mt.tensor([1.0, 2.0, 3.0, 4.0]).cumprod().tolist()
    [1.0, 2.0, 6.0, 24.0]
    """
    axis = _running_axis("cumprod", x, axis)
    rows = np.reshape(x, -1) if axis is None or np.ndim(x) == 0 else x
    along = 0 if axis is None or np.ndim(x) == 0 else axis
    out = np.cumprod(rows, axis=along)
    def backward(g):
        g = np.reshape(g, out.shape)
        if out.size == 0:
            return (np.zeros(np.shape(x), g.dtype),)
        # Before the first zero of a row, out_j / x_i is the product of the others: the
        # reverse running sum of g * out, over x_i. Past it every product holds that
        # zero twice over, so 0. At it, x_z's partner is prod_{k<z} x_k * prod_{z<k<=j} x_k.
        shape = [1] * rows.ndim
        shape[along] = rows.shape[along]
        positions = np.arange(rows.shape[along]).reshape(shape)
        zero = rows == 0
        first_zero = np.where(zero.any(along, keepdims=True),
                              np.argmax(zero, axis=along, keepdims=True), rows.shape[along])
        before = positions < first_zero
        safe = np.where(before, rows, 1)
        grad = _reverse_cumsum(np.where(before, g * out, 0), along) / safe
        after = np.cumprod(np.where(positions > first_zero, rows, 1), axis=along)
        at_zero = np.prod(safe, axis=along, keepdims=True) * np.sum(
            np.where(positions >= first_zero, g * after, 0), axis=along, keepdims=True)
        grad = np.where(before, grad, np.where(positions == first_zero, at_zero, 0))
        return (grad.reshape(np.shape(x)),)
    return out, backward


@primitive("logcumsumexp", rule="dx_i = sum_{j >= i} g_j * exp(x_i - out_j)")
def logcumsumexp(x, *, axis):
    """log(cumsum(exp(x))) along `axis`, computed without overflow (logaddexp), as
    torch.logcumsumexp.

    >>> mt.logcumsumexp(mt.tensor([0.0, 0.0]), axis=0).exp().tolist()
    [1.0, 2.0]
    """
    axis = _running_axis("logcumsumexp", x, axis, required=True)
    rows = np.reshape(x, (1,)) if np.ndim(x) == 0 else x
    out = np.logaddexp.accumulate(rows, axis=axis)
    def backward(g):
        # out_j = log sum_{i <= j} exp(x_i), so d out_j / d x_i = exp(x_i - out_j). The
        # sum over j of g_j exp(-out_j) can overflow, so each sign of g is summed in log
        # space (a reverse logcumsumexp) before exp(x_i + ...) brings it back.
        g = np.reshape(g, out.shape)
        def part(weights):
            with np.errstate(divide="ignore"):
                logs = np.log(weights) - out
            return np.exp(rows + np.flip(np.logaddexp.accumulate(np.flip(logs, axis), axis),
                                         axis))
        grad = part(np.maximum(g, 0)) - part(np.maximum(-g, 0))
        return (grad.reshape(np.shape(x)),)
    return out.reshape(np.shape(x)), backward


def _running_extreme_index(name, better):
    @primitive(name, rule="no gradient (integer output)")
    def op(x, *, axis):
        axis = _running_axis(name, x, axis, required=True)
        rows = np.reshape(x, (1,)) if np.ndim(x) == 0 else np.asarray(x)
        best = better.accumulate(rows, axis=axis)
        # A position takes over when it equals the best so far (PyTorch: the later one
        # at a tie) or is NaN (a NaN stays the best once seen, and a later one takes over).
        shape = [1] * rows.ndim
        shape[axis] = rows.shape[axis]
        positions = np.arange(rows.shape[axis]).reshape(shape)
        taking_over = (rows == best) | (np.isnan(rows) if rows.dtype.kind == "f" else False)
        index = np.maximum.accumulate(np.where(taking_over, positions, 0), axis=axis)
        return index.reshape(np.shape(x)).astype(np.int64), lambda g: (None,)
    op.__name__ = name
    return op


_cumargmax = _running_extreme_index("cumargmax", np.maximum)
_cumargmin = _running_extreme_index("cumargmin", np.minimum)


def cummax(x, axis: int):
    """(values, indices): the running maximum along `axis` and where each was found (the
    later position at a tie), as torch.cummax. The values are a `gather`, so each sends
    its gradient to the element it came from.

    >>> values, indices = mt.cummax(mt.tensor([1.0, 3.0, 2.0, 5.0]), axis=0)
    >>> values.tolist(), indices.tolist()
    ([1.0, 3.0, 3.0, 5.0], [0, 1, 1, 3])
    """
    _running_axis("cummax", getattr(x, "data", x), axis, required=True)   # errors say cummax
    indices = _cumargmax(x, axis=axis)
    return _picked(x, axis, indices), indices


def cummin(x, axis: int):
    """(values, indices): the running minimum along `axis`, as torch.cummin (see cummax)."""
    _running_axis("cummin", getattr(x, "data", x), axis, required=True)
    indices = _cumargmin(x, axis=axis)
    return _picked(x, axis, indices), indices


def _picked(x, axis, indices):
    """The running extreme's values: x gathered at `indices`. (A 0-d tensor is its own
    running extreme; times 1 it is still a node of the graph, as a gather would be.)"""
    return gather(x, axis, indices.data) if np.ndim(x) else mul(x, 1)
