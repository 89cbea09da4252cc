"""Gathering, scattering and selecting: each backward sends the gradient back to the
elements the forward picked (added where one element was picked several times).

`gather` and `scatter_add` take their arguments in PyTorch's order,
`(x, axis, index[, src])`, since these are PyTorch's functions. `sort` and `topk` are
compositions: an `argsort` (integers, no gradient) and a `gather` of the values, so the
gradient reaches exactly the selected elements.
"""
import numpy as np

from ..autograd import primitive
from ..errors import describe, op_error
from ..tensor import Tensor
from .shape import _axis


def _index_grid(name, x_shape, index, axis):
    """The advanced index that picks x[..., index[...], ...] along `axis`, for an index
    of the same rank as x and no larger on the other axes (PyTorch's rule)."""
    index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise op_error(name, f"index must hold integers, got {describe(index)}", TypeError,
                       "convert it with .astype(np.int64)")
    if index.ndim != len(x_shape):
        raise op_error(name, f"index {index.shape} must have as many axes as the input "
                       f"{tuple(x_shape)}", fix="unsqueeze the index (e.g. idx[..., None]) so "
                       "the ranks match")
    axis = _axis(name, axis, len(x_shape), x_shape)
    too_big = [d for d in range(index.ndim) if d != axis and index.shape[d] > x_shape[d]]
    if too_big:
        raise op_error(name, f"index {index.shape} is larger than the input "
                       f"{tuple(x_shape)} along axis {too_big[0]} (only axis {axis} may "
                       f"differ)")
    if index.size and (index.min() < -x_shape[axis] or index.max() >= x_shape[axis]):
        bad = index.min() if index.min() < -x_shape[axis] else index.max()
        raise op_error(name, f"index {bad} is out of range for axis {axis} of size "
                       f"{x_shape[axis]}", IndexError,
                       f"indices must be in [0, {x_shape[axis] - 1}]")
    grid = list(np.ogrid[tuple(slice(0, n) for n in index.shape)])
    grid[axis] = index
    return tuple(grid), axis


@primitive("gather", rule="dx = zeros like x, with g added at the gathered positions")
def _gather(x, index, *, axis):
    where, axis = _index_grid("gather", x.shape, index, axis)
    def backward(g):
        grad = np.zeros(x.shape, dtype=g.dtype)
        np.add.at(grad, where, g)      # an element gathered twice gets both gradients
        return grad, None
    return x[where], backward


def gather(x, axis: int, index):
    """out[i][j] = x[i][index[i][j]] for axis=1 (and likewise for any axis), as
    torch.gather and np.take_along_axis. `index` has x's rank; on the other axes it may
    be smaller than x.

        >>> scores = mt.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
        >>> ids = mt.tensor([1, 0])
        >>> mt.gather(scores, -1, ids[..., None])     # one score per row
        tensor([[0.7],
                [0.5]])
    """
    return _gather(x, index, axis=axis)


def _used_part_of(name, x, index, src):
    """The part of `src` a scatter reads, src[:index.shape[0], :index.shape[1], ...], after
    checking src against index and x (PyTorch's rules: src at least as large as index on
    every axis, and of x's dtype, since the result is a copy of x)."""
    if np.ndim(src) != index.ndim or any(i > s for i, s in zip(index.shape, np.shape(src))):
        raise op_error(name, f"src {np.shape(src)} must have the rank of index "
                       f"{index.shape} and be at least as large on every axis")
    if np.asarray(src).dtype != x.dtype:
        raise op_error(name, f"src {describe(src)} must have the dtype of the tensor it "
                       f"is written into, {describe(x)}", TypeError,
                       f"cast it first, e.g. src.astype(np.{x.dtype})")
    return tuple(slice(0, n) for n in index.shape)


def _gathered_into(src, picked, values):
    """The gradient of src: `values` (one per index entry) where src was read, else 0."""
    grad_src = np.zeros(np.shape(src), dtype=values.dtype)
    grad_src[picked] = values
    return grad_src


@primitive("scatter_add", rule="dx = g ;  dsrc = g gathered at index")
def _scatter_add(x, index, src, *, axis):
    index = np.asarray(index)
    where, axis = _index_grid("scatter_add", x.shape, index, axis)
    picked = _used_part_of("scatter_add", x, index, src)
    out = np.array(x)
    np.add.at(out, where, np.asarray(src)[picked])
    def backward(g):
        return g, None, _gathered_into(src, picked, g[where])
    return out, backward


def scatter_add(x, axis: int, index, src):
    """A copy of x with src[i][j] added at x[i][index[i][j]] for axis=1 (any axis
    alike), as torch.scatter_add; repeated indices add up.

        >>> ids = mt.tensor([[0, 2, 2], [1, 1, 3]])
        >>> mt.scatter_add(mt.zeros(2, 4), 1, ids, mt.ones(2, 3))   # counts per row
        tensor([[1., 0., 2., 0.],
                [0., 2., 0., 1.]])
    """
    return _scatter_add(x, index, src, axis=axis)


@primitive("scatter", rule="dx = g, 0 where overwritten ;  dsrc = g gathered at index")
def _scatter(x, index, src, *, axis):
    index = np.asarray(index)
    where, axis = _index_grid("scatter", x.shape, index, axis)
    number = not isinstance(src, np.ndarray)       # a Python number: PyTorch's `value`
    picked = None if number else _used_part_of("scatter", x, index, src)
    out = np.array(x)
    out[where] = src if number else src[picked]
    overwritten = np.zeros(x.shape, dtype=bool)
    overwritten[where] = True
    def backward(g):
        grad_x = np.where(overwritten, np.zeros((), g.dtype), g)
        return grad_x, None, None if number else _gathered_into(src, picked, g[where])
    return out, backward


def scatter(x, axis: int, index, src):
    """A copy of x with src[i][j] written at x[i][index[i][j]] for axis=1 (any axis
    alike), as torch.scatter; `src` may be a number (PyTorch's `value=`). Where an index
    repeats, one of the writes wins (which one is not defined, as in PyTorch).

    >>> mt.scatter(mt.zeros(2, 3), 1, np.array([[2], [0]]), 1.0).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    return _scatter(x, index, src, axis=axis)


_SCATTER_REDUCTIONS = ("sum", "prod", "mean", "amax", "amin")


def _identity(reduce, dtype):
    """What a position starts from when x itself is not included: the reduction's
    neutral element (the lowest value for amax, the highest for amin)."""
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    limits = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    return (-np.inf if dtype.kind == "f" else limits.min) if reduce == "amax" else \
        (np.inf if dtype.kind == "f" else limits.max)


@primitive("scatter_reduce", rule="sum: dsrc = g[index] ; mean: g[index] / count ; "
                                  "prod: g * (product of the others) ; amax/amin: g shared "
                                  "by the values equal to the result")
def _scatter_reduce(x, index, src, *, axis, reduce, include_self=True):
    index = np.asarray(index)
    if reduce not in _SCATTER_REDUCTIONS:
        raise op_error("scatter_reduce", f"reduce must be one of {_SCATTER_REDUCTIONS}, got "
                       f"{reduce!r}", fix="'sum' is scatter_add")
    where, axis = _index_grid("scatter_reduce", x.shape, index, axis)
    picked = _used_part_of("scatter_reduce", x, index, src)
    values = src[picked]                                  # one per index entry
    written = np.zeros(x.shape, dtype=bool)
    written[where] = True
    # x takes part where nothing is written, and everywhere when include_self.
    with_self = np.ones(x.shape, bool) if include_self else ~written
    out = np.where(with_self, x, np.asarray(_identity(reduce, x.dtype), x.dtype))
    ufunc = {"sum": np.add, "mean": np.add, "prod": np.multiply, "amax": np.maximum,
             "amin": np.minimum}[reduce]
    ufunc.at(out, where, values)
    count = with_self.astype(np.int64)                    # how many values each position got
    np.add.at(count, where, 1)
    if reduce == "mean":
        out = out // count if x.dtype.kind in "iu" else out / count
    def backward(g):
        if reduce in ("sum", "mean"):
            share = g / count if reduce == "mean" else g
            grad_x, grad_values = share * with_self, share[where]
        elif reduce == "prod":
            # The product of the others, without dividing by a zero: with z zeros among a
            # position's values, a nonzero value's partner is product / value when z == 0
            # (else 0), and a zero's partner is the product of the nonzero ones when z == 1.
            nonzero_product = np.where(with_self & (x != 0), x, 1).astype(g.dtype)
            np.multiply.at(nonzero_product, where, np.where(values != 0, values, 1))
            zeros = (with_self & (x == 0)).astype(np.int64)
            np.add.at(zeros, where, values == 0)

            def partner(v, product, z):
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.where(v != 0, np.where(z == 0, product / np.where(v != 0, v, 1),
                                                     0), np.where(z == 1, product, 0))
            grad_x = g * with_self * partner(x, nonzero_product, zeros)
            grad_values = g[where] * partner(values, nonzero_product[where], zeros[where])
        else:
            # Like the max reduction: values equal to the result share its gradient.
            ties = (with_self & (x == out)).astype(np.int64)
            np.add.at(ties, where, values == out[where])
            share = g / np.maximum(ties, 1)
            grad_x = share * (with_self & (x == out))
            grad_values = share[where] * (values == out[where])
        return grad_x, None, _gathered_into(src, picked, np.asarray(grad_values, g.dtype))
    return out, backward


def scatter_reduce(x, axis: int, index, src, reduce: str, include_self: bool = True):
    """A copy of x where each src[i][j] is combined into x[i][index[i][j]] for axis=1
    (any axis alike) by `reduce`: "sum", "prod", "mean", "amax" or "amin", as
    torch.scatter_reduce. With include_self=False a position that receives values
    forgets x's own value there; positions that receive none keep x.

    >>> x = mt.zeros(3)
    >>> mt.scatter_reduce(x, 0, np.array([0, 0, 2]), mt.tensor([1.0, 3.0, 5.0]), "mean",
    ...                   include_self=False).tolist()
    [2.0, 0.0, 5.0]
    """
    return _scatter_reduce(x, index, src, axis=axis, reduce=reduce,
                           include_self=include_self)


@primitive("masked_select", rule="dx = zeros like x, with g written where mask is True")
def masked_select(x, mask):
    """The elements of x where `mask` (boolean, broadcast with x) is True, as a 1-D
    tensor in row-major order."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise op_error("masked_select", f"mask must be boolean, got {describe(mask)}",
                       TypeError, "build it with a comparison, e.g. x > 0")
    shape = np.broadcast_shapes(np.shape(x), mask.shape)
    full_mask = np.broadcast_to(mask, shape)
    def backward(g):
        grad = np.zeros(shape, dtype=g.dtype)
        grad[full_mask] = g             # summed back to x's shape by the decorator
        return grad, None
    return np.broadcast_to(x, shape)[full_mask], backward


@primitive("one_hot", rule="no gradient (integer output)")
def one_hot(ids, *, num_classes=-1):
    """(..., num_classes) int64 with a 1 at each id (num_classes=-1: max id + 1), as
    torch.nn.functional.one_hot."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise op_error("one_hot", f"ids must be integers, got {describe(ids)}", TypeError,
                       "convert them with .astype(np.int64)")
    if num_classes == -1:
        if not ids.size:
            raise op_error("one_hot", "cannot infer num_classes from no ids",
                           fix="pass num_classes")
        num_classes = int(ids.max()) + 1
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise op_error("one_hot", f"num_classes must be a positive integer or -1, got "
                       f"{num_classes!r}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise op_error("one_hot", f"id {bad} is out of range for {num_classes} classes",
                       IndexError, f"ids must be in [0, {num_classes - 1}]")
    return (ids[..., None] == np.arange(num_classes)).astype(np.int64), lambda g: (None,)


def _check_sortable(name, x):
    if np.ndim(x) == 0:
        raise op_error(name, "got a 0-d tensor: there is no axis to sort along",
                       fix="give it at least one axis, e.g. x.reshape(1)")


@primitive("argsort", rule="no gradient (integer output)")
def argsort(x, *, axis=-1, descending=False):
    """Indices that sort x along `axis` (stable: equal values keep their order, also
    when descending)."""
    _check_sortable("argsort", x)
    axis = _axis("argsort", axis, np.ndim(x), np.shape(x))
    keys = np.asarray(x)
    if descending:
        # Negating would wrap unsigned ints and booleans: sort those as int64.
        keys = -(keys.astype(np.int64) if keys.dtype.kind in "ub" else keys)
    return np.argsort(keys, axis=axis, kind="stable").astype(np.int64), lambda g: (None,)


def sort(x, axis: int = -1, descending: bool = False):
    """(values, indices) of x sorted along `axis`. The values are a `gather`, so the
    gradient goes back to the element each value came from.

        >>> values, order = mt.sort(mt.tensor([0.2, 0.9, 0.5]), descending=True)
        >>> values, order
        (tensor([0.9, 0.5, 0.2]), tensor([1, 2, 0], dtype=int64))
    """
    _check_sortable("sort", x)
    indices = argsort(x, axis=axis, descending=descending)
    return _gather(x, indices.data, axis=axis), indices


def topk(x, k: int, axis: int = -1, largest: bool = True):
    """(values, indices) of the k largest (or smallest) elements along `axis`, sorted:
    largest first (smallest first when largest=False). The gradient reaches only those k.

        >>> logits = mt.tensor([1.0, 4.0, 2.0, 5.0, 3.0, 0.0])
        >>> values, ids = mt.topk(logits, 3)
        >>> values, ids
        (tensor([5., 4., 3.]), tensor([3, 1, 4], dtype=int64))
    """
    _check_sortable("topk", x)
    shape = tuple(np.shape(getattr(x, "data", x)))
    axis = _axis("topk", axis, len(shape), shape)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not \
            0 <= k <= shape[axis]:
        raise op_error("topk", f"k must be an integer in [0, {shape[axis]}] (the size of "
                       f"axis {axis} in shape {shape}), got {k!r}")
    order = argsort(x, axis=axis, descending=largest).data
    chosen = np.take(order, np.arange(int(k)), axis=axis)
    return _gather(x, chosen, axis=axis), Tensor._wrap(chosen)
