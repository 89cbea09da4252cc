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

        >>> mt.gather(scores, -1, ids[..., None])     # one score per row
    """
    return _gather(x, index, axis=axis)


@primitive("scatter_add", rule="dx = g ;  dsrc = g gathered at index")
def _scatter_add(x, index, src, *, axis):
    index = np.asarray(index)
    where, axis = _index_grid("scatter_add", x.shape, index, axis)
    if np.ndim(src) != index.ndim or any(i > s for i, s in zip(index.shape, np.shape(src))):
        raise op_error("scatter_add", f"src {np.shape(src)} must have the rank of index "
                       f"{index.shape} and be at least as large on every axis")
    if np.asarray(src).dtype != x.dtype:
        # PyTorch refuses too: the sum is written into a copy of x, whose dtype is kept.
        raise op_error("scatter_add", f"src {describe(src)} must have the dtype of the "
                       f"tensor it is added into, {describe(x)}", TypeError,
                       f"cast it first, e.g. src.astype(np.{x.dtype})")
    picked = tuple(slice(0, n) for n in index.shape)   # the part of src that is used
    out = np.array(x)
    np.add.at(out, where, np.asarray(src)[picked])
    def backward(g):
        grad_src = np.zeros(np.shape(src), dtype=g.dtype)
        grad_src[picked] = g[where]
        return g, None, grad_src
    return out, backward


def scatter_add(x, axis: int, index, src):
    """A copy of x with src[i][j] added at x[i][index[i][j]] for axis=1 (any axis
    alike), as torch.scatter_add; repeated indices add up.

        >>> mt.scatter_add(mt.zeros(2, 4), 1, ids, ones)   # counts per row
    """
    return _scatter_add(x, index, src, axis=axis)


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

        >>> values, order = mt.sort(scores, descending=True)
    """
    _check_sortable("sort", x)
    indices = argsort(x, axis=axis, descending=descending)
    return _gather(x, indices.data, axis=axis), indices


def topk(x, k: int, axis: int = -1, largest: bool = True):
    """(values, indices) of the k largest (or smallest) elements along `axis`, sorted:
    largest first (smallest first when largest=False). The gradient reaches only those k.

        >>> values, ids = mt.topk(logits, 5)
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
