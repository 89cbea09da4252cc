"""Hypothesis strategies shared by the tests: shapes, broadcastable shape pairs/triples,
axis arguments, and seeds for well-conditioned float64 data.

Shapes include size-1 axes and 0-d operands; axes include negative ones. Data is drawn
from a seeded NumPy generator (fast) and is kept away from kinks by construction where
an op has one (relu/abs at 0, clip at its bounds, ties in max/min/maximum).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import microtensor as mt

MAX_DIMS = 4
MAX_SIDE = 3


def shapes(min_dims: int = 0, max_dims: int = MAX_DIMS, min_side: int = 1,
           max_side: int = MAX_SIDE) -> st.SearchStrategy[tuple]:
    """Array shapes, 0-d included by default: (), (3,), (1, 2), (2, 1, 3) ..."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_pair(min_dims: int = 0, max_dims: int = MAX_DIMS) -> st.SearchStrategy:
    """Two shapes that broadcast together, e.g. ((2, 1, 3), (4, 1)) or ((), (2,))."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=min_dims, max_dims=max_dims, max_side=MAX_SIDE,
    ).map(lambda shapes: shapes.input_shapes)


def broadcastable_triple(min_dims: int = 0, max_dims: int = MAX_DIMS) -> st.SearchStrategy:
    """Three shapes that broadcast together (condition, a, b for `where`)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=3, min_dims=min_dims, max_dims=max_dims, max_side=MAX_SIDE,
    ).map(lambda shapes: shapes.input_shapes)


seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def axis_args(draw, ndim: int, allow_none: bool = True):
    """An `axis` argument valid for `ndim` dims: None, an int (maybe negative), or a
    tuple of distinct axes with mixed signs."""
    choices = ["int", "tuple"] + (["none"] if allow_none else [])
    if ndim == 0:
        return None if allow_none else draw(st.sampled_from([0, -1]))
    kind = draw(st.sampled_from(choices))
    if kind == "none":
        return None
    signed = st.integers(min_value=0, max_value=ndim - 1).flatmap(
        lambda a: st.sampled_from([a, a - ndim]))
    if kind == "int":
        return draw(signed)
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(draw(st.sampled_from([a, a - ndim])) for a in axes)


@st.composite
def reduction_cases(draw, min_dims: int = 0):
    """(shape, axis, keepdims) for sum/mean/max/min/var."""
    shape = draw(shapes(min_dims=min_dims))
    return shape, draw(axis_args(len(shape))), draw(st.booleans())


def normal(seed: int, shape: tuple) -> np.ndarray:
    """Standard normal float64 data."""
    return np.random.default_rng(seed).standard_normal(shape)


def positive(seed: int, shape: tuple, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    """Data in [low, high): for log, sqrt, the base of pow, denominators."""
    return np.random.default_rng(seed).uniform(low, high, shape)


def away_from(seed: int, shape: tuple, points=(0.0,), gap: float = 0.1) -> np.ndarray:
    """Normal data moved at least `gap` away from each of `points` (kinks)."""
    x = normal(seed, shape)
    for p in points:
        close = np.abs(x - p) < gap
        x = np.where(close, p + np.where(x >= p, gap, -gap) * 2, x)
    return x


def distinct(seed: int, shape: tuple) -> np.ndarray:
    """Data with no two equal elements (no ties for max/min), spaced 0.37 apart."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.37 - size * 0.18).reshape(shape)


def leaf(array) -> mt.Tensor:
    """A float64 tensor that requires grad, for gradcheck."""
    return mt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def check(fn, *arrays, **tolerances):
    """gradcheck `fn` at float64 leaves made from `arrays`."""
    assert mt.gradcheck(fn, [leaf(a) for a in arrays], **tolerances)
