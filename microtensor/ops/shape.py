"""Shape primitives: they move elements around without changing them, so each backward
moves the gradient back the opposite way (reshape back, transpose back, scatter back).
"""
import numpy as np

from ..autograd import primitive
from ..errors import op_error


@primitive("reshape", rule="dx = reshape(g, x.shape)")
def reshape(x, *, shape):
    try:
        out = np.reshape(x, shape)
    except ValueError:
        raise op_error("reshape", f"cannot reshape a tensor of shape {x.shape} "
                       f"({x.size} elements) into {tuple(shape)}",
                       fix="the product of the new sizes must equal the number of elements "
                       "(use -1 for one size to be inferred)") from None
    def backward(g):
        return (g.reshape(x.shape),)
    return out, backward


@primitive("permute", rule="dx = permute(g, inverse(axes))")
def permute(x, *, axes=None):
    """Reorder the axes (None reverses them, like NumPy's transpose)."""
    if axes is not None and sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
        raise op_error("permute", f"axes {tuple(axes)} are not a permutation of the "
                       f"{x.ndim} axes of a tensor with shape {x.shape}")
    inverse = None if axes is None else tuple(np.argsort([a % x.ndim for a in axes]))
    def backward(g):
        return (np.transpose(g, inverse),)
    return np.transpose(x, axes), backward


@primitive("swapaxes", rule="dx = swapaxes(g, axis1, axis2)")
def swapaxes(x, *, axis1, axis2):
    def backward(g):
        return (np.swapaxes(g, axis1, axis2),)
    return np.swapaxes(x, axis1, axis2), backward


def flatten(x, start_axis=0, end_axis=-1):
    """Merge axes start_axis..end_axis into one (a reshape)."""
    shape = x.shape
    start, end = start_axis % max(len(shape), 1), end_axis % max(len(shape), 1)
    merged = int(np.prod(shape[start:end + 1]))
    return reshape(x, shape=shape[:start] + (merged,) + shape[end + 1:])


def unsqueeze(x, axis):
    """Insert an axis of size 1 at `axis` (a reshape)."""
    shape = list(x.shape)
    axis = axis if axis >= 0 else len(shape) + 1 + axis
    if not 0 <= axis <= len(shape):
        raise op_error("unsqueeze", f"axis {axis} is out of range for a tensor with shape "
                       f"{tuple(shape)}", IndexError)
    return reshape(x, shape=tuple(shape[:axis] + [1] + shape[axis:]))


def squeeze(x, axis=None):
    """Remove axes of size 1 (all of them, or the ones named) (a reshape)."""
    shape = x.shape
    if axis is None:
        axes = {i for i, n in enumerate(shape) if n == 1}
    else:
        axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
        if any(shape[a] != 1 for a in axes):
            raise op_error("squeeze", f"axis {axis} has size != 1 in shape {shape}")
    return reshape(x, shape=tuple(n for i, n in enumerate(shape) if i not in axes))


@primitive("expand", rule="dx = sum of g over the expanded axes")
def expand(x, *, shape):
    """Broadcast to `shape` (-1 keeps a size). The backward is the decorator's reduction."""
    shape = tuple(n if n != -1 else x.shape[i - (len(shape) - x.ndim)]
                  for i, n in enumerate(shape))
    def backward(g):
        return (g,)  # summed back to x.shape by the decorator
    return np.broadcast_to(x, shape), backward


def _is_advanced(index):
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (np.ndarray, list)) for p in parts)


@primitive("getitem", rule="dx = zeros like x, with g scattered (added) into x[index]")
def getitem(x, *, index):
    """Basic slicing and integer/boolean array indexing. Repeated indices accumulate."""
    out = x[index]
    advanced = _is_advanced(index)
    def backward(g):
        grad = np.zeros(x.shape, dtype=g.dtype)
        if advanced:
            np.add.at(grad, index, g)  # x[[0, 0]] uses x[0] twice: both gradients count
        else:
            grad[index] = g
        return (grad,)
    # Basic slicing returns a view; copy so later writes to x cannot change this result.
    return (np.array(out) if not advanced else out), backward


@primitive("concat", rule="dx_i = the slice of g where x_i sits")
def concat(*tensors, axis=0):
    if not tensors:
        raise op_error("concat", "needs at least one tensor")
    out = np.concatenate(tensors, axis=axis)
    ends = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    def backward(g):
        return tuple(np.split(g, ends, axis=axis))
    return out, backward


@primitive("stack", rule="dx_i = g indexed at i along the new axis")
def stack(*tensors, axis=0):
    if not tensors:
        raise op_error("stack", "needs at least one tensor")
    out = np.stack(tensors, axis=axis)
    def backward(g):
        return tuple(np.moveaxis(g, axis, 0))
    return out, backward


def split(x, sections, axis=0):
    """Split into pieces along `axis`: `sections` is a piece size (int) or a list of sizes.
    Each piece is a slice of x (PyTorch's `split`)."""
    length = x.shape[axis]
    sizes = [sections] * -(-length // sections) if isinstance(sections, int) else list(sections)
    if isinstance(sections, int):
        sizes[-1] = length - sections * (len(sizes) - 1)
    if sum(sizes) != length:
        raise op_error("split", f"sizes {sizes} do not add up to {length}, the size of "
                       f"axis {axis} in shape {x.shape}")
    pieces, start = [], 0
    prefix = (slice(None),) * (axis % x.ndim)
    for size in sizes:
        pieces.append(getitem(x, index=prefix + (slice(start, start + size),)))
        start += size
    return pieces
