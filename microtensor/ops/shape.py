"""Shape primitives: they move elements around without changing them, so each backward
moves the gradient back the opposite way (reshape back, transpose back, scatter back).
"""
import builtins

import numpy as np

from ..autograd import primitive
from ..errors import op_error


@primitive("reshape", rule="dx = reshape(g, x.shape)")
def reshape(x, *, shape):
    try:
        out = np.asarray(x).reshape(shape)   # the method: np.reshape costs a microsecond more
    except ValueError:
        raise op_error("reshape", f"cannot reshape a tensor of shape {x.shape} "
                       f"({x.size} elements) into {tuple(shape)}",
                       fix="the product of the new sizes must equal the number of elements "
                       "(use -1 for one size to be inferred)") from None
    if min(shape, default=0) < -1:  # (every size is an integer once NumPy accepted them)
        # NumPy quietly reads any negative size as -1; PyTorch refuses it.
        raise op_error("reshape", f"invalid size in shape {tuple(shape)} for a tensor of shape "
                       f"{x.shape}", fix="sizes must be >= 0, or -1 for the one size to infer")
    def backward(g):
        return (g.reshape(x.shape),)
    return out, backward


def _axis(name, axis, ndim, shape):
    """`axis` as a non-negative int, or an IndexError naming the op and the shape."""
    if isinstance(axis, (int, np.integer)) and -ndim <= axis < ndim:
        return int(axis) % ndim
    raise op_error(name, f"axis {axis} is out of range for a tensor with shape "
                   f"{tuple(shape)}", IndexError,
                   f"use an axis in [{-ndim}, {ndim - 1}]" if ndim else None)


@primitive("permute", rule="dx = permute(g, inverse(axes))")
def permute(x, *, axes=None):
    """Reorder the axes (None reverses them, like NumPy's transpose)."""
    if axes is not None:
        if len(axes) != x.ndim:
            raise op_error("permute", f"axes {tuple(axes)} are not a permutation of the "
                           f"{x.ndim} axes of a tensor with shape {x.shape}")
        axes = tuple(_axis("permute", a, x.ndim, x.shape) for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise op_error("permute", f"axes {axes} are not a permutation of the "
                           f"{x.ndim} axes of a tensor with shape {x.shape}")
    inverse = None if axes is None else tuple(int(i) for i in np.argsort(axes))
    def backward(g):
        return (np.transpose(g, inverse),)
    return np.transpose(x, axes), backward


@primitive("swapaxes", rule="dx = swapaxes(g, axis1, axis2)")
def swapaxes(x, *, axis1, axis2):
    axis1 = _axis("swapaxes", axis1, x.ndim, x.shape)
    axis2 = _axis("swapaxes", axis2, x.ndim, x.shape)
    def backward(g):
        return (g.swapaxes(axis1, axis2),)
    return x.swapaxes(axis1, axis2), backward


def flatten(x, start_axis=0, end_axis=-1):
    """Merge axes start_axis..end_axis into one (a reshape). A 0-d tensor becomes (1,),
    as in PyTorch."""
    shape = x.shape
    if not shape:
        _axis("flatten", start_axis, 1, shape), _axis("flatten", end_axis, 1, shape)
        return reshape(x, shape=(1,))
    start = _axis("flatten", start_axis, len(shape), shape)
    end = _axis("flatten", end_axis, len(shape), shape)
    if start > end:
        raise op_error("flatten", f"start_axis {start_axis} comes after end_axis "
                       f"{end_axis} in shape {shape}")
    merged = int(np.prod(shape[start:end + 1]))
    return reshape(x, shape=shape[:start] + (merged,) + shape[end + 1:])


def unsqueeze(x, axis):
    """Insert an axis of size 1 at `axis` (a reshape); negative axes count from the end
    of the result, so unsqueeze(x, -1) appends one."""
    shape = tuple(x.shape)
    axis = _axis("unsqueeze", axis, len(shape) + 1, shape + (1,))
    return reshape(x, shape=shape[:axis] + (1,) + shape[axis:])


def squeeze(x, axis=None):
    """Remove axes of size 1 (all of them, or the ones named) (a reshape). On a 0-d
    tensor axis 0 / -1 is accepted and changes nothing, as in PyTorch."""
    shape = tuple(x.shape)
    if axis is None:
        axes = {i for i, n in enumerate(shape) if n == 1}
    else:
        named = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        axes = {_axis("squeeze", a, builtins.max(len(shape), 1), shape) for a in named}
        if not shape:
            axes = set()
        elif any(shape[a] != 1 for a in axes):
            raise op_error("squeeze", f"axis {axis} has size != 1 in shape {shape}",
                           fix="squeeze only removes axes of size 1 (use reshape otherwise)")
    return reshape(x, shape=tuple(n for i, n in enumerate(shape) if i not in axes))


@primitive("expand", rule="dx = sum of g over the expanded axes")
def expand(x, *, shape):
    """Broadcast to `shape` (-1 keeps a size). The backward is the decorator's reduction."""
    lead = len(shape) - x.ndim  # new axes go in front

    def fits(i, n):
        if i < lead:
            return n >= 0
        old = x.shape[i - lead]
        return n == -1 or n == old or old == 1  # only size-1 axes can grow

    if lead < 0 or not all(fits(i, n) for i, n in enumerate(shape)):
        raise op_error("expand", f"cannot expand a tensor of shape {x.shape} to {shape}",
                       fix="only axes of size 1 can grow; new axes go in front "
                       "(-1 keeps a size)")
    shape = tuple(n if n != -1 else x.shape[i - lead] for i, n in enumerate(shape))
    def backward(g):
        return (g,)  # summed back to x.shape by the decorator
    return np.broadcast_to(x, shape), backward


def _needs_scatter_add(index):
    """True when the index may pick one element twice (an integer array, however it was
    spelled: array, list, tuple inside a tuple, nested lists): then the backward must add
    with np.add.at. Integers, slices, None, Ellipsis and boolean masks pick each element
    at most once, so a plain assignment scatters their gradient (and is much faster)."""
    parts = index if isinstance(index, tuple) else (index,)
    for part in parts:
        if part is None or part is Ellipsis or isinstance(part, (slice, int, np.integer,
                                                                 bool, np.bool_)):
            continue
        if np.asarray(part).dtype != bool:
            return True
    return False


@primitive("getitem", rule="dx = zeros like x, with g scattered (added) into x[index]")
def getitem(x, *, index):
    """Basic slicing and integer/boolean array indexing. Repeated indices accumulate."""
    out = x[index]
    scatter_add = _needs_scatter_add(index)
    def backward(g):
        grad = np.zeros(x.shape, dtype=g.dtype)
        if scatter_add:
            np.add.at(grad, index, g)  # x[[0, 0]] uses x[0] twice: both gradients count
        else:
            grad[index] = g
        return (grad,)
    # Basic slicing returns a view; copy so later writes to x cannot change this result.
    return (out.copy() if np.may_share_memory(out, x) else out), backward


@primitive("concat", rule="dx_i = the slice of g where x_i sits")
def concat(*tensors, axis=0):
    if not tensors:
        raise op_error("concat", "needs at least one tensor")
    ndim = np.ndim(tensors[0])
    axis = _axis("concat", axis, ndim, np.shape(tensors[0]))
    if any(np.ndim(t) != ndim or np.shape(t)[:axis] + np.shape(t)[axis + 1:]
           != np.shape(tensors[0])[:axis] + np.shape(tensors[0])[axis + 1:] for t in tensors):
        raise op_error("concat", f"shapes {[np.shape(t) for t in tensors]} must match "
                       f"except along axis {axis}")
    out = np.concatenate(tensors, axis=axis)
    ends = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    def backward(g):
        return tuple(np.split(g, ends, axis=axis))
    return out, backward


@primitive("stack", rule="dx_i = g indexed at i along the new axis")
def stack(*tensors, axis=0):
    if not tensors:
        raise op_error("stack", "needs at least one tensor")
    shapes = [np.shape(t) for t in tensors]
    if any(shape != shapes[0] for shape in shapes):
        raise op_error("stack", f"all tensors must have the same shape, got {shapes}")
    axis = _axis("stack", axis, len(shapes[0]) + 1, shapes[0] + (len(tensors),))
    out = np.stack(tensors, axis=axis)
    def backward(g):
        return tuple(np.moveaxis(g, axis, 0))
    return out, backward


def split(x, sections, axis=0):
    """Split into pieces along `axis`: `sections` is a piece size (int) or a list of sizes.
    Each piece is a slice of x (PyTorch's `split`).

    >>> [p.shape for p in mt.randn(5, 2).split(2)]
    [(2, 2), (2, 2), (1, 2)]
    """
    axis = _axis("split", axis, x.ndim, x.shape)
    length = x.shape[axis]
    if isinstance(sections, (int, np.integer)):
        if sections <= 0:
            raise op_error("split", f"the piece size must be positive, got {sections}")
        sizes = [int(sections)] * (length // sections)
        if length % sections:
            sizes.append(length % sections)
    else:
        sizes = [int(n) for n in sections]
    if sum(sizes) != length or any(n < 0 for n in sizes):
        raise op_error("split", f"sizes {sizes} do not add up to {length}, the size of "
                       f"axis {axis} in shape {x.shape}")
    pieces, start = [], 0
    prefix = (slice(None),) * axis
    for size in sizes:
        pieces.append(getitem(x, index=prefix + (slice(start, start + size),)))
        start += size
    return pieces
