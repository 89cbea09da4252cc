"""The running ops, scatters, diagonals, windows, grids and padding modes of issue 30:
gradients against central differences (float64, hypothesis shapes and axes) and values
against NumPy or a loop that states the definition. PyTorch's answers are compared in
test_torch_oracle.py.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import check, distinct, leaf, normal, seeds, shapes

import microtensor as mt


def an_axis(data, ndim):
    return data.draw(st.integers(-ndim, ndim - 1))


# ----------------------------------------------------------------- running ops

def with_zeros(seed, shape):
    """Normal data with about a third of the elements exactly 0 (cumprod's hard case)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < 0.3, 0.0, rng.standard_normal(shape))


@given(shape=shapes(), seed=seeds, zeros=st.booleans(), data=st.data())
def test_cumprod_gradient_and_value(shape, seed, zeros, data):
    axis = data.draw(st.sampled_from([None] + list(range(-len(shape), len(shape)))))
    x = (with_zeros if zeros else normal)(seed, shape)
    check(lambda x: x.cumprod(axis=axis), x)
    expected = np.cumprod(x, axis=axis) if shape else np.cumprod(x)
    np.testing.assert_allclose(mt.cumprod(mt.tensor(x), axis=axis).data, expected, rtol=1e-12)


def test_cumprod_gradient_with_zeros_is_the_product_of_the_others():
    # out = (2, 0, 0, 0): d out_j / d x_i is the product of the x_k, k <= j, k != i.
    x = leaf([2.0, 0.0, 3.0, 0.0])
    x.cumprod().backward(np.array([1.0, 1.0, 1.0, 1.0]))
    # dx_0 = 1 (j = 0); dx_1 = 2 + 2*3 + 2*3*0 = 8; dx_2 = 0 (every j >= 2 holds x_1 = 0);
    # dx_3 = 2*0*3 = 0.
    np.testing.assert_array_equal(x.grad, [1, 8, 0, 0])


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_logcumsumexp_gradient_and_value(shape, seed, data):
    axis = an_axis(data, len(shape))
    x = normal(seed, shape) * 3
    check(lambda x: mt.logcumsumexp(x, axis=axis), x)
    np.testing.assert_allclose(mt.tensor(x).logcumsumexp(axis).data,
                               np.log(np.cumsum(np.exp(x), axis=axis)), rtol=1e-12)


def test_logcumsumexp_does_not_overflow():
    x = leaf([1000.0, 1000.0, -1000.0])
    out = mt.logcumsumexp(x, axis=0)
    np.testing.assert_allclose(out.data, [1000, 1000 + np.log(2), 1000 + np.log(2)], rtol=1e-6)
    out.backward(np.array([1.0, -2.0, 1.0]))
    assert np.isfinite(x.grad).all()
    # dx_0 = 1 - 2/2 + 1/2 = 0.5; dx_1 = -2/2 + 1/2 = -0.5; dx_2 = exp(-2000 - ...) = 0
    np.testing.assert_allclose(x.grad, [0.5, -0.5, 0.0], atol=1e-12)


@pytest.mark.parametrize("name, better", [("cummax", np.greater_equal),
                                          ("cummin", np.less_equal)])
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_cummax_and_cummin(name, better, shape, seed, data):
    axis = an_axis(data, len(shape))
    x = distinct(seed, shape)
    check(lambda x: getattr(x, name)(axis)[0], x)
    values, indices = getattr(mt, name)(mt.tensor(x), axis)
    # The definition, as a loop: the best so far, and where it was (the later at a tie).
    moved = np.moveaxis(x, axis, -1)
    best, where = np.empty_like(moved), np.zeros(moved.shape, np.int64)
    for i in range(moved.shape[-1]):
        take = better(moved[..., i], best[..., i - 1]) if i else np.ones(moved.shape[:-1], bool)
        best[..., i] = np.where(take, moved[..., i], best[..., i - 1] if i else 0)
        where[..., i] = np.where(take, i, where[..., i - 1] if i else 0)
    np.testing.assert_array_equal(values.data, np.moveaxis(best, -1, axis))
    np.testing.assert_array_equal(indices.data, np.moveaxis(where, -1, axis))


def test_cummax_ties_pick_the_later_and_nan_wins():
    values, indices = mt.cummax(mt.tensor([1.0, 3.0, 3.0, 2.0, np.nan, 5.0]), axis=0)
    assert indices.tolist() == [0, 1, 2, 2, 4, 4]
    np.testing.assert_array_equal(values.data, [1, 3, 3, 3, np.nan, np.nan])
    scalar = mt.tensor(2.0, requires_grad=True)
    values, indices = mt.cummin(scalar, axis=0)
    values.backward()
    assert values.item() == 2.0 and indices.item() == 0 and scalar.grad == 1.0


# ----------------------------------------------------------------- scatter

def index_for(rng, shape, axis, unique):
    """An index of x's rank for an `axis` of x, no larger than x on the other axes;
    `unique`: no position is written twice (a distinct slice of a permutation per line)."""
    index_shape = tuple(rng.integers(1, n + 1) if i != axis else rng.integers(1, n + 2)
                        for i, n in enumerate(shape))
    if not unique:
        return rng.integers(0, shape[axis], index_shape)
    count = min(index_shape[axis], shape[axis])
    index_shape = index_shape[:axis] + (count,) + index_shape[axis + 1:]
    lines = np.argsort(rng.random(index_shape[:axis] + (shape[axis],) + index_shape[axis + 1:]),
                       axis=axis)
    return np.take(lines, np.arange(count), axis=axis)


@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, data=st.data())
def test_scatter_gradient_and_value(shape, seed, data):
    axis = an_axis(data, len(shape)) % len(shape)
    rng = np.random.default_rng(seed)
    index = index_for(rng, shape, axis, unique=True)      # a repeated write has no gradient
    x, src = normal(seed, shape), normal(seed + 1, tuple(n + 1 for n in index.shape))
    check(lambda x, src: x.scatter(axis, index, src), x, src)
    check(lambda x: mt.scatter(x, axis, index, 2.5), x)
    expected = x.copy()
    for position in np.ndindex(index.shape):
        target = list(position)
        target[axis] = index[position]
        expected[tuple(target)] = src[position]
    np.testing.assert_array_equal(mt.scatter(mt.tensor(x), axis, index, mt.tensor(src)).data,
                                  expected)


def scatter_reduce_loop(x, axis, index, src, reduce, include_self):
    """scatter_reduce by its definition: gather each position's values, then reduce them."""
    received = {}
    for position in np.ndindex(index.shape):
        target = list(position)
        target[axis] = index[position]
        received.setdefault(tuple(target), []).append(src[position])
    combine = {"sum": np.sum, "prod": np.prod, "mean": np.mean, "amax": np.max,
               "amin": np.min}[reduce]
    out = x.copy()
    for target, values in received.items():
        out[target] = combine(values + ([x[target]] if include_self else []))
    return out


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, include_self=st.booleans(),
       data=st.data())
def test_scatter_reduce_gradient_and_value(reduce, shape, seed, include_self, data):
    axis = an_axis(data, len(shape)) % len(shape)
    rng = np.random.default_rng(seed)
    index = index_for(rng, shape, axis, unique=False)     # repeats must combine
    src_shape = index.shape
    if reduce in ("amax", "amin"):         # no ties between any two values: one winner
        both = distinct(seed, (int(np.prod(shape)) + int(np.prod(src_shape)),))
        x, src = both[:int(np.prod(shape))].reshape(shape), both[int(np.prod(shape)):].reshape(
            src_shape)
    else:
        x, src = normal(seed, shape), normal(seed + 1, src_shape)
    check(lambda x, src: x.scatter_reduce(axis, index, src, reduce, include_self), x, src)
    np.testing.assert_allclose(
        mt.scatter_reduce(mt.tensor(x), axis, index, mt.tensor(src), reduce,
                          include_self=include_self).data,
        scatter_reduce_loop(x, axis, index, src, reduce, include_self), rtol=1e-12)


def test_scatter_reduce_prod_gradient_with_zeros_and_max_ties():
    x = leaf([2.0, 5.0])
    src = leaf([0.0, 3.0, 0.0])
    # position 0 gets 2 * 0 * 3 (one zero), position 1 gets 5 * 0 (one zero)
    mt.scatter_reduce(x, 0, np.array([0, 0, 1]), src, "prod").sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0])
    np.testing.assert_array_equal(src.grad, [6, 0, 5])
    # Two values equal to the max share its gradient, as the max reduction does.
    x, src = leaf([1.0]), leaf([1.0, 0.5])
    mt.scatter_reduce(x, 0, np.array([0, 0]), src, "amax").backward(np.array([1.0]))
    assert x.grad.tolist() == [0.5] and src.grad.tolist() == [0.5, 0.0]


# ----------------------------------------------------------------- diagonals, windows, grids

@given(n=st.integers(1, 4), m=st.integers(1, 4), offset=st.integers(-4, 4), seed=seeds)
def test_diag_gradient_and_value(n, m, offset, seed):
    vector, matrix = normal(seed, (n,)), normal(seed, (n, m))
    check(lambda v: mt.diag(v, diagonal=offset), vector)
    check(lambda a: a.diag(offset), matrix)
    np.testing.assert_array_equal(mt.diag(mt.tensor(vector), diagonal=offset).data,
                                  np.diag(vector, offset))
    np.testing.assert_array_equal(mt.diag(mt.tensor(matrix), diagonal=offset).data,
                                  np.diag(matrix, offset))


@given(shape=shapes(min_dims=2), offset=st.integers(-3, 3), seed=seeds, data=st.data())
def test_diagonal_gradient_and_value(shape, offset, seed, data):
    axis1 = an_axis(data, len(shape))
    axis2 = data.draw(st.sampled_from([a for a in range(-len(shape), len(shape))
                                       if a % len(shape) != axis1 % len(shape)]))
    x = normal(seed, shape)
    check(lambda x: x.diagonal(offset, axis1, axis2), x)
    np.testing.assert_array_equal(mt.diagonal(mt.tensor(x), offset=offset, axis1=axis1,
                                              axis2=axis2).data,
                                  np.diagonal(x, offset, axis1, axis2))


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_unfold_gradient_and_value(shape, seed, data):
    axis = an_axis(data, len(shape))
    length = shape[axis]
    size, step = data.draw(st.integers(0, length)), data.draw(st.integers(1, 3))
    x = normal(seed, shape)
    check(lambda x: x.unfold(axis, size, step), x)
    out = mt.tensor(x).unfold(axis, size, step)
    starts = range(0, length - size + 1, step)
    windows = [np.moveaxis(np.take(x, np.arange(s, s + size), axis=axis), axis, -1)
               for s in starts]
    np.testing.assert_array_equal(out.data, np.stack(windows, axis=axis % len(shape)))


def test_unfold_overlapping_windows_add_their_gradients():
    x = leaf([1.0, 2.0, 3.0, 4.0])
    x.unfold(0, 3, 1).sum().backward()             # windows (1 2 3) (2 3 4)
    np.testing.assert_array_equal(x.grad, [1, 2, 2, 1])


@given(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       indexing=st.sampled_from(["ij", "xy"]), seed=seeds)
def test_meshgrid_gradient_and_value(sizes, indexing, seed):
    vectors = [normal(seed + i, (n,)) for i, n in enumerate(sizes)]
    check(lambda *vs: mt.concat([g.reshape(-1) * (i + 1) for i, g in enumerate(
        mt.meshgrid(*vs, indexing=indexing))]), *vectors)
    grids = mt.meshgrid([mt.tensor(v) for v in vectors], indexing=indexing)
    for ours, theirs in zip(grids, np.meshgrid(*vectors, indexing=indexing)):
        np.testing.assert_array_equal(ours.data, theirs)


# ----------------------------------------------------------------- padding

@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, data=st.data())
def test_pad_modes_gradient_and_sizes(mode, shape, seed, data):
    pairs = data.draw(st.integers(1, len(shape)))
    pad = tuple(data.draw(st.lists(st.integers(-1, 3), min_size=2 * pairs, max_size=2 * pairs)))
    x = normal(seed, shape)
    sizes = list(shape)
    fits = True
    for pair in range(pairs):
        axis, (before, after) = len(shape) - 1 - pair, pad[2 * pair:2 * pair + 2]
        kept = shape[axis] - max(-before, 0) - max(-after, 0)
        widest = max(before, after, 0)
        fits &= kept >= 0 and (mode == "constant" or not widest or (
            kept > 0 and widest < kept if mode == "reflect" else 0 < kept and widest <= kept))
        sizes[axis] = kept + max(before, 0) + max(after, 0)
    if not fits:
        with pytest.raises(ValueError, match=r"pad: "):
            mt.pad(mt.tensor(x), pad, mode=mode)
        return
    out = mt.pad(mt.tensor(x), pad, mode=mode, value=0.5)
    assert out.shape == tuple(sizes)
    check(lambda x: mt.pad(x, pad, mode=mode, value=0.5), x)
    if mode != "constant":
        # Every output element copies one input element: the gradients add up to g's sum.
        t = leaf(x)
        grad_out = normal(seed + 1, out.shape)
        mt.pad(t, pad, mode=mode).backward(grad_out)
        np.testing.assert_allclose(t.grad.sum(), grad_out.sum(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_of_a_0d_tensor_with_no_pairs_is_the_tensor(mode):
    # As torch.nn.functional.pad(torch.tensor(3.0), ()); np.pad itself refuses a 0-d array.
    x = leaf(3.0)
    out = mt.pad(x, (), mode=mode)
    assert out.shape == () and out.item() == 3.0
    out.backward()
    assert x.grad == 1.0


def test_pad_modes_by_example():
    row = mt.tensor([0.0, 1.0, 2.0, 3.0])
    assert mt.pad(row, (2, 1), mode="reflect").tolist() == [2, 1, 0, 1, 2, 3, 2]
    assert mt.pad(row, (2, 1), mode="replicate").tolist() == [0, 0, 0, 1, 2, 3, 3]
    assert mt.pad(row, (2, 1), mode="circular").tolist() == [2, 3, 0, 1, 2, 3, 0]
    assert mt.pad(row, (-1, 2), value=9.0).tolist() == [1, 2, 3, 9, 9]         # crop, then pad
    assert mt.pad(row, (-1, 2), mode="circular").tolist() == [1, 2, 3, 1, 2]
    assert mt.pad(row, (-2, -2)).tolist() == []
    grid = mt.tensor(np.arange(6.0).reshape(2, 3))
    assert mt.pad(grid, (1, 0, 0, 1), mode="replicate").tolist() == [[0, 0, 1, 2], [3, 3, 4, 5],
                                                                     [3, 3, 4, 5]]
    x = leaf([0.0, 1.0, 2.0, 3.0])
    mt.pad(x, (2, 1), mode="reflect").sum().backward()           # copies of 1 and 2 add up
    np.testing.assert_array_equal(x.grad, [1, 2, 3, 1])
