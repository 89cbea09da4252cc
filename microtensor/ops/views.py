"""Shape ops that read a structured part of a tensor (a diagonal, the sliding windows
of an axis) or lay vectors out on a grid. Each backward puts the gradient back where the
part was read, adding where windows overlap.
"""
import numpy as np

from ..autograd import primitive
from ..errors import op_error
from .shape import _axis, expand, reshape


def _on_diagonal(shape, values, offset, axis1, axis2):
    """Zeros of `shape` with `values` written on the diagonal that np.diagonal(offset,
    axis1, axis2) reads (its last axis runs along the diagonal)."""
    out = np.zeros(shape, dtype=values.dtype)
    plane = np.moveaxis(out, (axis1, axis2), (-2, -1))       # a view: writes reach `out`
    steps = np.arange(values.shape[-1])
    plane[..., steps + max(-offset, 0), steps + max(offset, 0)] = values
    return out


def _check_offset(name, offset):
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise op_error(name, f"the diagonal offset must be an integer, got {offset!r}",
                       TypeError, "0 is the main diagonal, k > 0 above it, k < 0 below")


@primitive("diagonal", rule="dx = zeros like x, with g written on the diagonal")
def diagonal(x, *, offset=0, axis1=0, axis2=1):
    """The diagonal of the (axis1, axis2) planes, as a new last axis (torch.diagonal,
    np.diagonal); offset k > 0 reads above the main diagonal, k < 0 below.

    >>> mt.diagonal(mt.arange(9).reshape(3, 3), offset=1).tolist()
    [1, 5]
    """
    _check_offset("diagonal", offset)
    if np.ndim(x) < 2:
        raise op_error("diagonal", f"needs at least 2 axes, got shape {np.shape(x)}",
                       fix="for a vector, diag builds the matrix with it on its diagonal")
    axis1 = _axis("diagonal", axis1, x.ndim, x.shape)
    axis2 = _axis("diagonal", axis2, x.ndim, x.shape)
    if axis1 == axis2:
        raise op_error("diagonal", f"axis1 and axis2 are both axis {axis1} (shape "
                       f"{x.shape})", fix="name two different axes")
    def backward(g):
        return (_on_diagonal(x.shape, g, int(offset), axis1, axis2),)
    return np.diagonal(x, int(offset), axis1, axis2).copy(), backward


@primitive("diag", rule="vector in: dx = diagonal of g ;  matrix in: dx = g on the diagonal")
def diag(x, *, diagonal=0):
    """A vector becomes the square matrix with it on diagonal k; a matrix gives its
    diagonal k as a vector (torch.diag, np.diag).

    >>> mt.diag(mt.tensor([1.0, 2.0])).tolist()
    [[1.0, 0.0], [0.0, 2.0]]
    """
    _check_offset("diag", diagonal)
    if np.ndim(x) not in (1, 2):
        raise op_error("diag", f"needs a vector or a matrix, got shape {np.shape(x)}",
                       fix="for a batch of matrices use diagonal(x, axis1=-2, axis2=-1)")
    offset = int(diagonal)
    def backward(g):
        if x.ndim == 1:
            return (np.diagonal(g, offset).copy(),)
        return (_on_diagonal(x.shape, g, offset, 0, 1),)
    return np.diag(x, offset), backward


@primitive("unfold", rule="dx_i = sum of g over the windows that hold x_i")
def unfold(x, *, axis, size, step):
    """The windows of `size` elements along `axis`, every `step`-th, as a new last axis:
    PyTorch's `Tensor.unfold(dimension, size, step)`. An axis of length n gives
    (n - size) // step + 1 windows; windows overlap when step < size.

    >>> mt.arange(5).unfold(0, 2, 2).tolist()
    [[0, 1], [2, 3]]
    """
    if np.ndim(x) == 0:
        raise op_error("unfold", "got a 0-d tensor: there is no axis to slide along",
                       fix="give it at least one axis, e.g. x.reshape(1)")
    axis = _axis("unfold", axis, x.ndim, x.shape)
    length = x.shape[axis]
    for label, value, low in (("size", size, 0), ("step", step, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise op_error("unfold", f"{label} must be an integer >= {low}, got {value!r}")
    if size > length:
        raise op_error("unfold", f"a window of {size} does not fit in axis {axis} of size "
                       f"{length} (shape {x.shape})", fix=f"use a size of at most {length}")
    windows = np.lib.stride_tricks.sliding_window_view(x, size, axis=axis)
    out = np.take(windows, np.arange(0, length - size + 1, step), axis=axis)  # (.., n, .., size)
    count = out.shape[axis]
    def backward(g):
        # Element j of every window sits at start + j, starts being 0, step, 2 step, ...:
        # one strided slice per j, and the slices of different j overlap when step < size.
        grad = np.zeros(x.shape, dtype=g.dtype)
        along = np.moveaxis(grad, axis, 0)                    # a view of grad
        pieces = np.moveaxis(g, axis, 0)                      # (count, ..., size)
        for j in range(size):
            along[j:j + step * (count - 1) + 1:step] += pieces[..., j]
        return (grad,)
    return out, backward


def meshgrid(*tensors, indexing: str = "ij"):
    """Coordinate grids from 1-D tensors (torch.meshgrid, np.meshgrid): with "ij" (the
    default, as PyTorch) output k varies along axis k; "xy" swaps the first two axes, as
    NumPy's default. Each grid is a reshape and an expand of its vector, so its gradient
    is summed back over the grid.

    >>> rows, cols = mt.meshgrid(mt.arange(2), mt.arange(3))
    >>> rows.shape, cols.tolist()
    ((2, 3), [[0, 1, 2], [0, 1, 2]])
    """
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise op_error("meshgrid", f"indexing must be 'ij' or 'xy', got {indexing!r}")
    shapes = [np.shape(getattr(t, "data", t)) for t in tensors]
    if not tensors or any(len(shape) > 1 for shape in shapes):
        raise op_error("meshgrid", f"needs one or more 0-d or 1-D tensors, got shapes "
                       f"{shapes}", fix="flatten each input first")
    sizes = [int(np.prod(shape)) for shape in shapes]
    axes = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) > 1:
        axes[0], axes[1] = 1, 0
    grid = [0] * len(tensors)
    for size, axis in zip(sizes, axes):
        grid[axis] = size
    grids = []
    for t, size, axis in zip(tensors, sizes, axes):
        column = [1] * len(grid)
        column[axis] = size
        grids.append(expand(reshape(t, shape=tuple(column)), shape=tuple(grid)))
    return grids
