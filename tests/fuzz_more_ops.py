"""Makers for the fuzz test's op table (tests/test_fuzz.py): the reductions, shape ops,
indexing, selection, activations and losses beyond the core set.

Each maker gets (draw, operands, guarded) and returns a function of the operand tensors
with every random choice baked in, or None when the op is not smooth at these values
(guarded programs only). Ops with integer or boolean results (argmax, any, isfinite,
argsort, one_hot) are used the way models use them, to pick or mask float values, so every
table entry returns a float tensor.
"""
import numpy as np
from hypothesis import strategies as st

import microtensor as mt
import microtensor.functional as F


def axis_of(draw, ndim, wild=True):
    options = list(range(-ndim, ndim)) or [0]
    if wild:
        options += [ndim, -ndim - 1]
    return draw(st.sampled_from(options))


def far_from(x, points=(0.0,), gap=0.02):
    return not x.size or all(np.abs(x - p).min() > gap for p in points)


def no_near_ties(x, axis, gap=0.02):
    """No two values that one sort/argmax along `axis` compares are within `gap`."""
    if x.size == 0 or x.ndim == 0 or not -x.ndim <= axis < x.ndim or x.shape[axis] < 2:
        return True
    ordered = np.sort(x, axis=axis)
    return np.diff(ordered, axis=axis).min() > gap


def unary(fn, domain=None):
    def make(draw, xs, guarded):
        if guarded and domain is not None and not domain(xs[0].data):
            return None
        return fn
    return 1, make


def make_axis_reduction(name):
    def make(draw, xs, guarded):
        (x,) = xs
        axis = draw(st.sampled_from([None, *range(-x.ndim, x.ndim + 1)]))
        keepdims = draw(st.booleans())
        if name == "std":
            if guarded and (not x.size or x.data.std() < 0.2 or x.size < 2):
                return None
            if guarded and axis is not None and -x.ndim <= axis < x.ndim and (
                    x.shape[axis] < 2 or np.std(x.data, axis=axis).min() < 0.2):
                return None
        if name == "cumsum":
            return lambda x: x.cumsum(axis=axis)
        return lambda x: getattr(x, name)(axis=axis, keepdims=keepdims)
    return 1, make


def make_pick_by(name):
    """argmax/argmin used to gather the extreme values (a float result)."""
    def make(draw, xs, guarded):
        (x,) = xs
        axis = axis_of(draw, x.ndim)
        if guarded and not no_near_ties(x.data, axis):
            return None
        return lambda x: mt.gather(x, axis, getattr(mt, name)(x, axis=axis, keepdims=True))
    return 1, make


def make_logical(name):
    """any/all over an axis, used as a mask that picks x or -x."""
    def make(draw, xs, guarded):
        (x,) = xs
        axis = draw(st.sampled_from([None, *range(-x.ndim, x.ndim + 1)]))
        if guarded and not far_from(x.data, (0.3,)):
            return None
        return lambda x: mt.where(getattr(mt, name)(x > 0.3, axis=axis, keepdims=True), x, -x)
    return 1, make


def make_nonfinite_test(draw, xs, guarded):
    name = draw(st.sampled_from(["isnan", "isinf", "isfinite"]))
    keep_when = name == "isfinite"
    return lambda x: mt.where(getattr(mt, name)(x) == keep_when, x, 0.0)


def make_pad(draw, xs, guarded):
    (x,) = xs
    n = draw(st.integers(0, x.ndim + 1)) * 2
    pad = tuple(draw(st.lists(st.integers(-1 if draw(st.integers(0, 9)) == 0 else 0, 2),
                              min_size=n, max_size=n + draw(st.integers(0, 1)))))
    value = draw(st.sampled_from([0.0, -1.5]))
    return lambda x: mt.pad(x, pad, value=value)


def make_triangle(name):
    def make(draw, xs, guarded):
        diagonal = draw(st.integers(-2, 2))
        return lambda x: getattr(mt, name)(x, diagonal=diagonal)
    return 1, make


def make_flip(draw, xs, guarded):
    axis = axis_of(draw, xs[0].ndim)
    return lambda x: x.flip(axis)


def make_roll(draw, xs, guarded):
    axis = draw(st.sampled_from([None, *range(-xs[0].ndim, xs[0].ndim + 1)]))
    shift = draw(st.integers(-4, 4))
    return lambda x: x.roll(shift, axis=axis)


def make_tile(draw, xs, guarded):
    reps = tuple(draw(st.lists(st.integers(-1 if draw(st.integers(0, 9)) == 0 else 0, 2),
                               min_size=1, max_size=3)))
    return lambda x: mt.tile(x, reps)


def make_repeat_interleave(draw, xs, guarded):
    (x,) = xs
    axis = draw(st.sampled_from([None, *range(-x.ndim, x.ndim)]))
    n = x.size if axis is None else x.shape[axis]
    counts = draw(st.one_of(st.integers(0, 2), st.lists(st.integers(0, 2), min_size=n,
                                                        max_size=n + (draw(st.integers(0, 9)) == 0))))
    return lambda x: x.repeat_interleave(np.array(counts), axis=axis)


def make_chunk(draw, xs, guarded):
    axis = axis_of(draw, xs[0].ndim)
    chunks, piece = draw(st.integers(0, 3)), draw(st.integers(0, 3))

    def fn(x):
        pieces = x.chunk(chunks, axis)
        return pieces[piece % len(pieces)] if pieces else x
    return fn


def make_unflatten(draw, xs, guarded):
    (x,) = xs
    axis = axis_of(draw, x.ndim)
    size = x.shape[axis] if x.ndim and -x.ndim <= axis < x.ndim else 1
    sizes = draw(st.sampled_from([(1, -1), (size, 1), (-1, -1), (size + 1, 1)]))
    return lambda x: x.unflatten(axis, sizes)


def make_einsum(draw, xs, guarded):
    """Contract the last axis of a with the last of b over shared leading axes (often a
    mismatch, which must be a worded error), or reorder and sum one operand."""
    a = xs[0]
    if draw(st.booleans()):
        letters = "abcd"[:a.ndim]
        kept = "".join(draw(st.permutations(letters)))[:draw(st.integers(0, a.ndim))]
        return lambda a, b: mt.einsum(f"{letters}->{kept}", a)
    return lambda a, b: mt.einsum("...i,...i->...", a, b)


def make_gather(draw, xs, guarded):
    (x,) = xs
    axis = axis_of(draw, x.ndim)
    seed = draw(st.integers(0, 2**16))
    size = x.shape[axis] if x.ndim and -x.ndim <= axis < x.ndim else 1
    high = size + (draw(st.integers(0, 9)) == 0)          # sometimes out of range
    index = np.random.default_rng(seed).integers(0, max(high, 1), tuple(
        draw(st.integers(1, 3)) if i == axis % max(x.ndim, 1) else n
        for i, n in enumerate(x.shape)))
    return lambda x: mt.gather(x, axis, index)


def make_scatter_add(draw, xs, guarded):
    x, src = xs
    axis = axis_of(draw, x.ndim)
    seed = draw(st.integers(0, 2**16))
    size = x.shape[axis] if x.ndim and -x.ndim <= axis < x.ndim else 1
    index = np.random.default_rng(seed).integers(0, max(size, 1), src.shape)
    return lambda x, src: mt.scatter_add(x, axis, index, src)


def make_masked_select(draw, xs, guarded):
    seed = draw(st.integers(0, 2**16))
    shape = draw(st.sampled_from([xs[0].shape, xs[0].shape[-1:], (2,) + xs[0].shape]))
    mask = np.random.default_rng(seed).random(shape) < 0.5
    return lambda x: mt.masked_select(x, mask)


def make_one_hot(draw, xs, guarded):
    """x * one_hot(ids): a float tensor with one kept entry per row."""
    (x,) = xs
    classes = x.shape[-1] if x.ndim else 1
    seed = draw(st.integers(0, 2**16))
    ids = np.random.default_rng(seed).integers(0, max(classes, 1) + (
        draw(st.integers(0, 9)) == 0), x.shape[:-1])
    return lambda x: x * F.one_hot(ids, num_classes=classes)


def make_sort(draw, xs, guarded):
    (x,) = xs
    axis, descending = axis_of(draw, x.ndim), draw(st.booleans())
    if guarded and not no_near_ties(x.data, axis):
        return None
    return lambda x: x.sort(axis, descending)[0]


def make_topk(draw, xs, guarded):
    (x,) = xs
    axis, largest = axis_of(draw, x.ndim), draw(st.booleans())
    if guarded and not no_near_ties(x.data, axis):
        return None
    k = draw(st.integers(0, 4))
    return lambda x: x.topk(k, axis=axis, largest=largest)[0]


def make_argsort(draw, xs, guarded):
    (x,) = xs
    axis = axis_of(draw, x.ndim)
    if guarded and not no_near_ties(x.data, axis):
        return None
    return lambda x: mt.gather(x, axis, mt.argsort(x, axis=axis))


def make_activation(name):
    def make(draw, xs, guarded):
        (x,) = xs
        if name == "leaky_relu":
            slope = draw(st.sampled_from([0.01, 0.2, -0.5]))
            return None if guarded and not far_from(x.data) else \
                (lambda x: F.leaky_relu(x, negative_slope=slope))
        if name == "elu":
            alpha = draw(st.sampled_from([1.0, 0.5]))
            return None if guarded and not far_from(x.data) else (lambda x: F.elu(x, alpha=alpha))
        beta, threshold = draw(st.sampled_from([1.0, 2.0])), draw(st.sampled_from([20.0, 1.0]))
        if guarded and not far_from(x.data * beta, (threshold,)):
            return None
        return lambda x: F.softplus(x, beta=beta, threshold=threshold)
    return 1, make


def make_bce(with_logits):
    def make(draw, xs, guarded):
        x = xs[0]
        reduction = draw(st.sampled_from(["mean", "sum", "none"]))
        if guarded and reduction == "mean" and not x.size:
            return None     # the mean of no losses is NaN, as in PyTorch: no clean program
        if with_logits:
            return lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction)
        raw = draw(st.booleans())   # raw values are often outside [0, 1]: a worded error
        if guarded and raw and x.size and not (0.05 < x.data.min() and x.data.max() < 0.95):
            return None
        if guarded and not raw and x.size and np.abs(x.data).max() > 15:
            return None     # sigmoid rounds to 1: the log is clamped, as PyTorch's, no gradient
        return lambda x, t: F.binary_cross_entropy(x if raw else mt.sigmoid(x), t,
                                                   reduction=reduction)
    return 2, make


def make_nll_loss(draw, xs, guarded):
    (x,) = xs
    classes = x.shape[-1] if x.ndim else 1
    seed = draw(st.integers(0, 2**16))
    target = np.random.default_rng(seed).integers(0, max(classes, 1) + (
        draw(st.integers(0, 9)) == 0), x.shape[:-1])
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    if guarded and reduction == "mean" and not x.size:
        return None     # the mean of no losses is NaN, as in PyTorch: no clean program
    return lambda x: F.nll_loss(x, target, reduction=reduction)


def make_cross_entropy_options(draw, xs, guarded):
    """cross_entropy with label smoothing, against class ids or probability targets."""
    (logits,) = xs
    seed = draw(st.integers(0, 2**16))
    smoothing = draw(st.sampled_from([0.0, 0.1, 1.5]))       # 1.5 is refused
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    if guarded and reduction == "mean" and not logits.size:
        return None     # the mean of no losses is NaN, as in PyTorch: no clean program
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        target = rng.dirichlet(np.ones(logits.shape[-1]), logits.shape[:-1]) \
            if logits.ndim and logits.shape[-1] else rng.random(logits.shape)
    else:
        classes = logits.shape[-1] if logits.ndim else 1
        target = rng.integers(0, max(classes, 1), logits.shape[:-1])
    return lambda x: F.cross_entropy(x, target, label_smoothing=smoothing, reduction=reduction)


def make_creation(draw, xs, guarded):
    """x scaled by a linspace along its last axis, plus a full_like (float64 like x)."""
    (x,) = xs
    n = x.shape[-1] if x.ndim else 1
    fill = draw(st.sampled_from([0.25, -1.0]))
    return lambda x: x * mt.linspace(0.5, 1.5, n, dtype=np.float64) + mt.full_like(x, fill)


MORE_OPS = {
    "linspace/full_like": (1, make_creation),
    "std": make_axis_reduction("std"),
    "logsumexp": make_axis_reduction("logsumexp"),
    "prod": make_axis_reduction("prod"),
    "cumsum": make_axis_reduction("cumsum"),
    "argmax": make_pick_by("argmax"),
    "argmin": make_pick_by("argmin"),
    "any": make_logical("any"),
    "all": make_logical("all"),
    "isnan/isinf/isfinite": (1, make_nonfinite_test),
    "pad": (1, make_pad),
    "tril": make_triangle("tril"),
    "triu": make_triangle("triu"),
    "flip": (1, make_flip),
    "roll": (1, make_roll),
    "tile/repeat": (1, make_tile),
    "repeat_interleave": (1, make_repeat_interleave),
    "chunk": (1, make_chunk),
    "unflatten": (1, make_unflatten),
    "einsum": (2, make_einsum),
    "gather": (1, make_gather),
    "scatter_add": (2, make_scatter_add),
    "one_hot": (1, make_one_hot),
    "masked_select": (1, make_masked_select),
    "sort": (1, make_sort),
    "argsort": (1, make_argsort),
    "topk": (1, make_topk),
    "silu": unary(mt.silu),
    "leaky_relu": make_activation("leaky_relu"),
    "elu": make_activation("elu"),
    "softplus": make_activation("softplus"),
    "erf": unary(mt.erf),
    "gelu_exact": unary(lambda x: mt.gelu(x, approximate="none")),
    "rsqrt": unary(mt.rsqrt, lambda x: not x.size or x.min() > 0.1),
    "sign": unary(mt.sign, far_from),
    "sin": unary(mt.sin),
    "cos": unary(mt.cos),
    "mt.square": unary(mt.square),
    "binary_cross_entropy": make_bce(False),
    "binary_cross_entropy_with_logits": make_bce(True),
    "nll_loss": (1, make_nll_loss),
    "cross_entropy_options": (1, make_cross_entropy_options),
}

# The primitives these entries are made of (what an anomaly may name).
MORE_PRIMITIVES = {
    "logsumexp", "prod", "cumsum", "sqrt", "var", "gather", "where", "pad", "tril", "triu",
    "flip", "roll", "tile", "repeat_interleave", "getitem", "reshape", "einsum", "scatter_add",
    "masked_select", "mul", "silu", "leaky_relu", "elu", "softplus", "erf", "gelu", "rsqrt",
    "sign", "sin", "cos", "square", "sigmoid", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "nll_loss", "cross_entropy",
}
