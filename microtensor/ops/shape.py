"""Shape primitives: they move elements around without changing them, so each backward
moves the gradient back the opposite way (reshape back, transpose back, scatter back).
"""
import builtins
import itertools

import numpy as np

from ..autograd import document_op, primitive
from ..errors import op_error


@primitive("reshape", rule="dx = reshape(g, x.shape)")
def reshape(x, *, shape):
    """The same elements in a new shape, one size may be -1 (the size that fits); PyTorch's
    `reshape` and `view`.

        >>> mt.reshape(mt.arange(6), (2, -1)).shape
        (2, 3)
    """
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
    """Exchange two axes (np.swapaxes; PyTorch's `transpose(x, axis1, axis2)`)."""
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
                           fix="squeeze only removes axes of size 1 (use reshape otherwise; "
                           "PyTorch silently keeps such an axis, which hides a wrong shape)")
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
    """Join tensors along an existing `axis`; they must match on every other axis. The
    tensors come as separate arguments (`mt.concat` takes a list, as torch.cat does).

        >>> mt.ops.concat(mt.ones(2, 1), mt.zeros(2, 2), axis=1).shape
        (2, 3)
    """
    if not tensors:
        raise op_error("concat", "needs at least one tensor")
    shapes = [np.shape(t) for t in tensors]
    axis = _axis("concat", axis, len(shapes[0]), shapes[0])
    across = [shape[:axis] + shape[axis + 1:] for shape in shapes]   # all but the axis
    if any(len(shape) != len(shapes[0]) or other != across[0]
           for shape, other in zip(shapes, across)):
        raise op_error("concat", f"shapes {shapes} must match except along axis {axis}")
    out = np.concatenate(tensors, axis=axis)
    before = (slice(None),) * axis
    bounds = itertools.accumulate((shape[axis] for shape in shapes), initial=0)
    parts = [before + (slice(start, end),) for start, end in itertools.pairwise(bounds)]
    def backward(g):
        return tuple(g[part] for part in parts)
    return out, backward


@primitive("stack", rule="dx_i = g indexed at i along the new axis")
def stack(*tensors, axis=0):
    """Join tensors of one shape along a new `axis`. The tensors come as separate arguments
    (`mt.stack` takes a list, as torch.stack does).

        >>> mt.ops.stack(mt.ones(3), mt.zeros(3)).shape
        (2, 3)
    """
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


def _axes_arg(name, axis, shape):
    """One axis or a tuple of distinct axes, as a tuple of non-negative ints."""
    named = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(_axis(name, a, len(shape), shape) for a in named)
    if len(set(axes)) != len(axes):
        raise op_error(name, f"axes {tuple(named)} name an axis twice (shape {tuple(shape)})")
    return axes


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}   # PyTorch's names -> np.pad's


def _pad_plan(x, pad, mode) -> tuple:
    """What `pad` does to each axis of x: the slices that crop it, the (before, after)
    sizes that grow it, and each axis's size kept between them; checked against x."""
    sizes = tuple(pad)
    if len(sizes) % 2 or len(sizes) // 2 > np.ndim(x) or not builtins.all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sizes):
        raise op_error("pad", f"pad {sizes} must be integers in (before, after) pairs, at "
                       f"most one pair per axis of shape {np.shape(x)}",
                       fix="e.g. (1, 1) pads the last axis by one on each side")
    if mode not in _PAD_MODES:
        raise op_error("pad", f"mode must be one of {tuple(_PAD_MODES)}, got {mode!r}")
    widths = [(0, 0)] * np.ndim(x)
    for pair in range(len(sizes) // 2):            # pair 0 is the last axis
        widths[np.ndim(x) - 1 - pair] = (int(sizes[2 * pair]), int(sizes[2 * pair + 1]))
    crop = tuple(slice(builtins.max(-before, 0), n - builtins.max(-after, 0))
                 for (before, after), n in zip(widths, np.shape(x)))
    kept = [builtins.max(part.stop - part.start, 0) for part in crop]
    if any(part.stop - part.start < 0 for part in crop):
        raise op_error("pad", f"pad {sizes} crops more than the shape {np.shape(x)} holds",
                       fix="negative sizes crop; together they must leave >= 0 elements")
    grow = [(builtins.max(before, 0), builtins.max(after, 0)) for before, after in widths]
    for axis, ((before, after), n) in enumerate(zip(grow, kept)):
        widest = builtins.max(before, after)
        # Reflection cannot reach past the far edge, wrapping cannot go round twice, and
        # an empty axis has no edge to copy (PyTorch's limits).
        if mode != "constant" and widest and (
                n == 0 or (mode == "reflect" and widest >= n) or widest > n):
            raise op_error("pad", f"{mode} padding ({before}, {after}) is too wide for "
                           f"axis {axis} of size {n} (shape {np.shape(x)})",
                           fix={"reflect": "reflect pads must be smaller than the axis",
                                "circular": "circular pads can be at most the axis size",
                                "replicate": "replicate needs a non-empty axis"}[mode])
    return crop, grow, kept


@primitive("pad", rule="dx = g folded back: each output element's gradient goes to the "
                       "element of x it copies (none for a constant)")
def pad(x, *, pad, mode="constant", value=0.0):
    """Padding in PyTorch's `F.pad` form: `pad` lists (before, after) pairs starting from
    the LAST axis, (left, right, top, bottom, ...); axes it does not reach are not padded.
    `mode`: "constant" (`value`), "reflect" (mirrored, the edge not repeated),
    "replicate" (the edge repeated) or "circular" (wrapped around). A negative size
    crops instead, before the rest pads, as in PyTorch.

        >>> mt.pad(mt.tensor([[1.0, 2.0]]), (1, 2))    # one zero before, two after
        tensor([[0., 1., 2., 0., 0.]])
        >>> mt.pad(mt.arange(4.0), (2, -1), mode="reflect").tolist()
        [2.0, 1.0, 0.0, 1.0, 2.0]
    """
    crop, grow, kept = _pad_plan(x, pad, mode)
    cropped = np.asarray(x)[crop]
    if np.ndim(x) == 0:
        out = cropped.copy()        # nothing to pad (np.pad refuses a 0-d array)
    elif mode == "constant":
        out = np.pad(cropped, grow, mode="constant", constant_values=value)
    else:
        out = np.pad(cropped, grow, mode=_PAD_MODES[mode])
    def backward(g):
        # Per axis, np.pad of the positions 0..n-1 says which element each output
        # position copies; np.add.at adds the gradient of every copy into its source.
        for axis, ((before, after), n) in enumerate(zip(grow, kept)):
            if not (before or after):
                continue
            if mode == "constant":
                g = np.take(g, np.arange(before, before + n), axis=axis)
                continue
            source = np.pad(np.arange(n), (before, after), mode=_PAD_MODES[mode])
            folded = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:], g.dtype)
            np.add.at(np.moveaxis(folded, axis, 0), source, np.moveaxis(g, axis, 0))
            g = folded
        grad = np.zeros(np.shape(x), dtype=g.dtype)
        grad[crop] = g
        return (grad,)
    return out, backward


def _triangle(name, keep):
    @primitive(name, rule="dx = g * mask  (mask: the kept triangle)")
    def op(x, *, diagonal=0):
        if np.ndim(x) < 2:
            raise op_error(name, f"needs at least 2 axes (a matrix or a batch of them), got "
                           f"shape {np.shape(x)}")
        rows, cols = x.shape[-2:]
        mask = keep(np.ones((rows, cols), dtype=bool), diagonal)
        def backward(g):
            return (g * mask,)
        return np.where(mask, x, np.zeros((), x.dtype)), backward
    op.__name__ = name
    document_op(op, (f"The {'lower' if name == 'tril' else 'upper'} triangle of the last two "
                  f"axes (diagonal=k shifts it: k > 0 above the main diagonal); zeros "
                  f"elsewhere."))
    return op


tril = _triangle("tril", np.tril)
triu = _triangle("triu", np.triu)


@primitive("flip", rule="dx = flip(g, axis)")
def flip(x, *, axis):
    """Reverse the order of elements along `axis` (an int or a tuple)."""
    axes = _axes_arg("flip", axis, np.shape(x))
    def backward(g):
        return (np.flip(g, axes),)
    return np.flip(x, axes).copy(), backward


@primitive("roll", rule="dx = roll(g, -shift, axis)")
def roll(x, *, shifts, axis=None):
    """Shift elements along `axis` cyclically (None: over the flattened tensor), as
    np.roll and torch.roll; `shifts` and `axis` may be tuples of the same length."""
    if axis is not None:
        axes = _axes_arg("roll", axis, np.shape(x)) if np.ndim(x) else ()
        many = isinstance(shifts, (tuple, list))
        if many and len(shifts) != len(axes) or not many and len(axes) != 1:
            raise op_error("roll", f"shifts {shifts} and axis {axis} must have the same "
                           f"length")
    elif isinstance(shifts, (tuple, list)):
        if len(shifts) != 1:
            raise op_error("roll", f"several shifts {shifts} need an axis for each",
                           fix="pass axis=(...) of the same length")
        (shifts,) = shifts     # one shift of the flattened tensor, as NumPy and PyTorch
    back = tuple(-s for s in shifts) if isinstance(shifts, (tuple, list)) else -shifts
    def backward(g):
        return (np.roll(g, back, axis),)
    return np.roll(x, shifts, axis), backward


@primitive("tile", rule="dx = sum of g over the copies")
def tile(x, *, reps):
    """Copies of x laid side by side: np.tile(x, reps), also PyTorch's `x.repeat(*reps)`.
    A shorter `reps` applies to the last axes; a longer one adds leading axes."""
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps)
    if not builtins.all(isinstance(r, (int, np.integer)) and r >= 0 for r in reps):
        raise op_error("tile", f"reps must be non-negative integers, got {reps}")
    ndim = builtins.max(len(reps), np.ndim(x))
    reps = (1,) * (ndim - len(reps)) + reps
    x_shape = (1,) * (ndim - np.ndim(x)) + np.shape(x)
    def backward(g):
        # View g as (reps_0, size_0, reps_1, size_1, ...): the copies sit on even axes.
        split = [n for pair in zip(reps, x_shape) for n in pair]
        return (g.reshape(split).sum(axis=tuple(range(0, 2 * ndim, 2))).reshape(np.shape(x)),)
    return np.tile(x, reps), backward


@primitive("repeat_interleave", rule="dx_i = sum of g over the copies of x_i")
def repeat_interleave(x, *, repeats, axis=None):
    """Each element repeated `repeats` times in place (an int, or one count per element
    along the axis): np.repeat and torch.repeat_interleave; axis=None flattens first."""
    counts = np.asarray(repeats)
    if counts.dtype.kind not in "iu" or counts.ndim > 1 or (counts.size and counts.min() < 0):
        raise op_error("repeat_interleave", f"repeats must be a non-negative int or a 1-D "
                       f"array of them, got {repeats!r}")
    source = np.reshape(x, -1) if axis is None else x
    axis = 0 if axis is None else _axis("repeat_interleave", axis, np.ndim(x), np.shape(x))
    n = np.shape(source)[axis]
    if counts.ndim == 1 and counts.size != n:
        raise op_error("repeat_interleave", f"{counts.size} repeat counts for an axis of "
                       f"size {n} (shape {np.shape(x)})", fix="give one count per element, "
                       "or one int for all")
    origin = np.repeat(np.arange(n), counts)       # which element each output came from
    def backward(g):
        grad = np.zeros(np.shape(source), dtype=g.dtype)
        np.add.at(np.moveaxis(grad, axis, 0), origin, np.moveaxis(g, axis, 0))
        return (grad.reshape(np.shape(x)),)
    return np.repeat(source, counts, axis=axis), backward


def chunk(x, chunks: int, axis: int = 0):
    """Split into `chunks` pieces of equal size (the last may be smaller, and there may
    be fewer pieces when the axis is short), as torch.chunk: `split` of ceil(n / chunks).

        >>> [p.shape for p in mt.chunk(mt.randn(5, 2), 3)]
        [(2, 2), (2, 2), (1, 2)]
    """
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise op_error("chunk", f"chunks must be a positive integer, got {chunks!r}")
    length = x.shape[_axis("chunk", axis, x.ndim, x.shape)]
    return split(x, builtins.max(-(-length // int(chunks)), 1), axis=axis)


def unflatten(x, axis: int, sizes):
    """Split one axis into several (a reshape): unflatten(x, 1, (2, 3)) turns (B, 6, d)
    into (B, 2, 3, d); one size may be -1."""
    shape = tuple(x.shape)
    axis = _axis("unflatten", axis, len(shape), shape)
    sizes = tuple(sizes)
    known = int(np.prod([n for n in sizes if n != -1]))
    if sizes.count(-1) > 1 or (-1 not in sizes and known != shape[axis]) or (
            -1 in sizes and (known == 0 or shape[axis] % known)):
        raise op_error("unflatten", f"sizes {sizes} do not split axis {axis} of size "
                       f"{shape[axis]} (shape {shape})", fix="their product must equal the "
                       "axis size (one of them may be -1)")
    return reshape(x, shape=shape[:axis] + sizes + shape[axis + 1:])
