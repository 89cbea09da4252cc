"""The gradients of the reductions, shape ops, indexing, selection, activations and losses
added beside the core set, against central differences (mt.gradcheck, float64), over
hypothesis-drawn shapes (broadcasting where the op broadcasts). Their values are checked
against NumPy here and against PyTorch in test_torch_oracle.py.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    away_from,
    broadcastable_pair,
    check,
    distinct,
    leaf,
    normal,
    positive,
    reduction_cases,
    seeds,
    shapes,
)

import microtensor as mt
import microtensor.functional as F


def an_axis(data, ndim):
    return data.draw(st.integers(-ndim, ndim - 1)) if ndim else None


# ----------------------------------------------------------------- reductions

@pytest.mark.parametrize("name", ["std", "logsumexp", "prod"])
@given(case=reduction_cases(), seed=seeds)
def test_reduction_gradient(name, case, seed):
    shape, axis, keepdims = case
    x = normal(seed, shape)
    if name == "std":
        axes = range(len(shape)) if axis is None else np.atleast_1d(axis) % max(len(shape), 1)
        shape = tuple(n + 1 if i in set(axes) else n for i, n in enumerate(shape))
        x = distinct(seed, shape)          # never constant, so sqrt stays smooth
    if name == "std" and not shape:
        return                     # one element has no sample std (var refuses it)
    check(lambda x: getattr(x, name)(axis=axis, keepdims=keepdims), x)


def test_reduction_values_match_numpy():
    x = normal(0, (3, 4, 2))
    np.testing.assert_allclose(mt.tensor(x).std(axis=1).data, x.std(axis=1, ddof=1))
    np.testing.assert_allclose(mt.tensor(x).prod(axis=(0, 2)).data, x.prod(axis=(0, 2)))
    big = x * 300                  # exp would overflow without the max subtracted
    top = big.max(-1, keepdims=True)
    np.testing.assert_allclose(mt.logsumexp(mt.tensor(big), axis=-1).data,
                               (np.log(np.exp(big - top).sum(-1, keepdims=True)) + top)[..., 0],
                               rtol=1e-12)
    np.testing.assert_allclose(mt.tensor(x).cumsum(axis=1).data, np.cumsum(x, axis=1))
    np.testing.assert_array_equal(mt.tensor(x).argmax(axis=1).data, x.argmax(axis=1))
    np.testing.assert_array_equal(mt.tensor(x).argmin().data, x.argmin())
    assert mt.tensor(x).argmax(axis=0, keepdims=True).shape == (1, 4, 2)
    np.testing.assert_array_equal(mt.any(mt.tensor(x) > 1, axis=0).data, (x > 1).any(0))
    np.testing.assert_array_equal(mt.all(mt.tensor(x) > -9, axis=(0, 1)).data, [True, True])
    nonfinite = mt.tensor([1.0, np.nan, np.inf, -np.inf])
    np.testing.assert_array_equal(nonfinite.isnan().data, [0, 1, 0, 0])
    np.testing.assert_array_equal(nonfinite.isinf().data, [0, 0, 1, 1])
    np.testing.assert_array_equal(mt.isfinite(nonfinite).data, [1, 0, 0, 0])


def test_prod_gradient_with_zeros_is_the_product_of_the_others():
    x = leaf([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0]])
    x.prod(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 6, 0], [0, 0, 0]])
    check(lambda x: x.prod(axis=1), [[2.0, 0.0, 3.0], [0.0, 1.5, 5.0]])


def test_logsumexp_of_all_minus_inf_is_minus_inf():
    x = mt.tensor([[-np.inf, -np.inf], [0.0, -np.inf]])
    np.testing.assert_array_equal(mt.logsumexp(x, axis=1).data, [-np.inf, 0.0])


@given(shape=shapes(), seed=seeds, data=st.data())
def test_cumsum_gradient(shape, seed, data):
    axis = data.draw(st.sampled_from([None] + list(range(-len(shape), len(shape)))))
    check(lambda x: x.cumsum(axis=axis), normal(seed, shape))


def test_integer_and_boolean_results_carry_no_gradient():
    x = leaf(normal(0, (3, 4)))
    for result in (x.argmax(axis=1), x.argmin(), mt.any(x > 0), mt.all(x > 0), x.isnan(),
                   mt.argsort(x), mt.one_hot(np.array([0, 2]), 3)):
        assert not result.requires_grad and result.dtype.kind in "bi"


# ----------------------------------------------------------------- shape

@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_pad_gradient(shape, seed, data):
    pairs = data.draw(st.integers(1, len(shape)))
    pad = tuple(data.draw(st.lists(st.integers(0, 2), min_size=2 * pairs, max_size=2 * pairs)))
    check(lambda x: mt.pad(x, pad, value=1.5), normal(seed, shape))
    widths = [(0, 0)] * (len(shape) - pairs) + [(pad[2 * i], pad[2 * i + 1])
                                                 for i in reversed(range(pairs))]
    np.testing.assert_array_equal(mt.pad(mt.tensor(normal(seed, shape)), pad).data,
                                  np.pad(normal(seed, shape), widths))


@pytest.mark.parametrize("name", ["tril", "triu"])
@given(shape=shapes(min_dims=2), diagonal=st.integers(-2, 2), seed=seeds)
def test_triangle_gradient(name, shape, diagonal, seed):
    x = normal(seed, shape)
    check(lambda x: getattr(x, name)(diagonal), x)
    np.testing.assert_array_equal(getattr(mt, name)(mt.tensor(x), diagonal=diagonal).data,
                                  getattr(np, name)(x, diagonal))


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_flip_and_roll_gradient(shape, seed, data):
    axes = tuple(data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True)))
    x = normal(seed, shape)
    check(lambda x: x.flip(axes), x)
    shifts = tuple(data.draw(st.integers(-4, 4)) for _ in axes)
    check(lambda x: x.roll(shifts, axis=axes), x)
    check(lambda x: mt.roll(x, shifts[0]), x)                 # over the flattened tensor
    np.testing.assert_array_equal(mt.tensor(x).roll(shifts, axes).data, np.roll(x, shifts, axes))


@given(shape=shapes(max_dims=3), seed=seeds, data=st.data())
def test_tile_repeat_gradient(shape, seed, data):
    reps = tuple(data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4)))
    x = normal(seed, shape)
    check(lambda x: mt.tile(x, reps), x)
    np.testing.assert_array_equal(mt.tile(mt.tensor(x), reps).data, np.tile(x, reps))
    if len(reps) >= len(shape):      # PyTorch's x.repeat needs a size for every axis
        check(lambda x: x.repeat(*reps), x)


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_repeat_interleave_gradient(shape, seed, data):
    axis = data.draw(st.sampled_from([None] + list(range(-len(shape), len(shape)))))
    n = int(np.prod(shape)) if axis is None else shape[axis]
    repeats = data.draw(st.one_of(st.integers(0, 3),
                                  st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    x = normal(seed, shape)
    check(lambda x: x.repeat_interleave(np.array(repeats), axis=axis), x)
    np.testing.assert_array_equal(mt.repeat_interleave(mt.tensor(x), repeats, axis).data,
                                  np.repeat(x, repeats, axis))


@given(shape=shapes(min_dims=1), chunks=st.integers(1, 4), seed=seeds, data=st.data())
def test_chunk_and_unflatten_gradient(shape, chunks, seed, data):
    axis = an_axis(data, len(shape))
    x = normal(seed, shape)
    pieces = mt.chunk(mt.tensor(x), chunks, axis=axis)
    size = -(-shape[axis] // chunks)
    assert [p.shape[axis] for p in pieces] == [len(r) for r in np.array_split(
        np.arange(shape[axis]), range(size, shape[axis], size))]
    check(lambda x: mt.concat([p * (i + 1) for i, p in enumerate(x.chunk(chunks, axis))],
                              axis=axis), x)
    check(lambda x: x.unflatten(axis, (1, shape[axis], 1)).unflatten(0, (1, -1)), x)


EINSUMS = [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 2, 4)]),
    ("i,i->", [(3,), (3,)]), ("i,j->ij", [(2,), (3,)]), ("ij->ji", [(2, 3)]),
    ("ij->i", [(2, 3)]), ("ij,jk", [(2, 3), (3, 2)]), ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)]), ("bi,bj->b", [(3, 2), (3, 4)]),
    ("ij,kj->ik", [(2, 1), (3, 4)]),      # a size-1 axis broadcast inside einsum
]


@pytest.mark.parametrize("subscripts, operand_shapes", EINSUMS)
@given(seed=seeds)
def test_einsum_gradient_and_value(subscripts, operand_shapes, seed):
    arrays = [normal(seed + i, s) for i, s in enumerate(operand_shapes)]
    check(lambda *xs: mt.einsum(subscripts, *xs), *arrays)
    np.testing.assert_allclose(mt.einsum(subscripts, *map(mt.tensor, arrays)).data,
                               np.einsum(subscripts, *arrays), rtol=1e-12)


# ----------------------------------------------------------------- indexing, selection

@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, data=st.data())
def test_gather_and_scatter_add_gradient(shape, seed, data):
    axis = an_axis(data, len(shape))
    rng = np.random.default_rng(seed)
    index_shape = tuple(data.draw(st.integers(1, n)) if i != axis % len(shape)
                        else data.draw(st.integers(1, 4)) for i, n in enumerate(shape))
    index = rng.integers(0, shape[axis], index_shape)       # repeats must accumulate
    x = normal(seed, shape)
    check(lambda x: mt.gather(x, axis, index), x)
    # torch.gather's rule: on the other axes the index may be smaller than x.
    cropped = x[tuple(slice(0, n) if i != axis % len(shape) else slice(None)
                      for i, n in enumerate(index_shape))]
    np.testing.assert_array_equal(mt.gather(mt.tensor(x), axis, index).data,
                                  np.take_along_axis(cropped, index, axis))
    src = normal(seed + 1, tuple(n + 1 for n in index_shape))
    check(lambda x, src: x.scatter_add(axis, index, src), x, src)


def test_scatter_add_counts_repeats():
    out = mt.scatter_add(mt.zeros(2, 3, dtype=np.float64), 1, np.array([[0, 0, 2], [1, 1, 1]]),
                         mt.ones(2, 3, dtype=np.float64))
    np.testing.assert_array_equal(out.data, [[2, 0, 1], [0, 3, 0]])


@given(shapes=broadcastable_pair(), seed=seeds)
def test_masked_select_gradient(shapes, seed):
    mask = np.random.default_rng(seed).random(shapes[1]) < 0.5
    x = normal(seed, shapes[0])
    check(lambda x: mt.masked_select(x, mask), x)
    np.testing.assert_array_equal(mt.masked_select(mt.tensor(x), mask).data,
                                  np.broadcast_to(x, np.broadcast_shapes(*shapes))[
                                      np.broadcast_to(mask, np.broadcast_shapes(*shapes))])


def test_one_hot():
    np.testing.assert_array_equal(F.one_hot(np.array([[0, 2]]), 4).data, [[[1, 0, 0, 0],
                                                                          [0, 0, 1, 0]]])
    assert F.one_hot(np.array([1, 3])).shape == (2, 4)
    assert F.one_hot(np.array([1])).dtype == np.int64


@given(shape=shapes(min_dims=1), seed=seeds, descending=st.booleans(), data=st.data())
def test_sort_and_topk_send_the_gradient_to_the_selected(shape, seed, descending, data):
    axis = an_axis(data, len(shape))
    x = distinct(seed, shape)
    values, order = mt.sort(mt.tensor(x), axis=axis, descending=descending)
    expected = np.sort(x, axis=axis)
    np.testing.assert_array_equal(values.data, np.flip(expected, axis) if descending else expected)
    np.testing.assert_array_equal(np.take_along_axis(x, order.data, axis), values.data)
    check(lambda x: x.sort(axis, descending)[0], x)
    k = data.draw(st.integers(0, shape[axis]))
    largest = data.draw(st.booleans())
    check(lambda x: x.topk(k, axis=axis, largest=largest)[0], x)


def test_topk_gradient_reaches_only_the_k():
    x = leaf([[1.0, 5.0, 3.0, 4.0]])
    values, ids = x.topk(2)
    np.testing.assert_array_equal(values.data, [[5.0, 4.0]])
    np.testing.assert_array_equal(ids.data, [[1, 3]])
    (values * mt.tensor([[1.0, 10.0]])).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0, 10]])


# ----------------------------------------------------------------- activations, math

def bounded(seed, shape):
    return normal(seed, shape) * 2


ACTIVATIONS = {
    "silu": (mt.silu, bounded),
    "leaky_relu": (lambda x: F.leaky_relu(x, negative_slope=0.2),
                   lambda s, shape: away_from(s, shape)),
    "elu": (lambda x: F.elu(x, alpha=0.7), lambda s, shape: away_from(s, shape)),
    "softplus": (F.softplus, bounded),
    "softplus_beta": (lambda x: F.softplus(x, beta=2.0, threshold=1.0),
                      lambda s, shape: away_from(s, shape, points=(0.5,))),
    "gelu_exact": (lambda x: F.gelu(x, approximate="none"), bounded),
    "erf": (mt.erf, bounded),
    "rsqrt": (mt.rsqrt, positive),
    "sign": (mt.sign, lambda s, shape: away_from(s, shape)),
    "sin": (mt.sin, bounded),
    "cos": (mt.cos, bounded),
    "square": (mt.square, normal),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(shape=shapes(), seed=seeds)
def test_activation_gradient(name, shape, seed):
    fn, make = ACTIVATIONS[name]
    check(fn, make(seed, shape))


def test_activation_values():
    x = np.linspace(-4, 4, 17)
    erf = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(mt.erf(mt.tensor(x)).data, erf, rtol=1e-15)
    np.testing.assert_allclose(mt.gelu(mt.tensor(x), approximate="none").data,
                               x * 0.5 * (1 + np.array([math.erf(v / 2 ** 0.5) for v in x])))
    np.testing.assert_allclose(mt.silu(mt.tensor(x)).data, x / (1 + np.exp(-x)))
    np.testing.assert_allclose(F.elu(mt.tensor(x)).data, np.where(x > 0, x, np.expm1(x)))
    np.testing.assert_allclose(F.softplus(mt.tensor(x)).data, np.log1p(np.exp(x)))
    assert np.isfinite(F.softplus(mt.tensor([800.0, -800.0])).data).all()
    np.testing.assert_array_equal(mt.sign(mt.tensor([-2.0, 0.0, 3.0])).data, [-1, 0, 1])
    assert mt.erf(mt.tensor([0.5])).dtype == np.float32


# ----------------------------------------------------------------- losses

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(shape=shapes(), seed=seeds)
def test_binary_cross_entropy_gradients(reduction, shape, seed):
    rng = np.random.default_rng(seed)
    probs, target = rng.uniform(0.1, 0.9, shape), rng.uniform(0, 1, shape)
    check(lambda p, t: F.binary_cross_entropy(p, t, reduction=reduction), probs, target)
    logits = normal(seed, shape) * 3
    check(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
          logits, target)
    np.testing.assert_allclose(
        F.binary_cross_entropy_with_logits(mt.tensor(logits), target, reduction=reduction).data,
        F.binary_cross_entropy(mt.sigmoid(mt.tensor(logits)), target, reduction=reduction).data,
        rtol=1e-9)


def test_binary_cross_entropy_with_logits_is_stable_and_clamped_form_is_finite():
    big = mt.tensor([1000.0, -1000.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(big, np.array([1.0, 0.0]))
    loss.backward()
    assert loss.item() == 0.0 and np.isfinite(big.grad).all()
    p = mt.tensor([0.0, 1.0], requires_grad=True)
    loss = F.binary_cross_entropy(p, np.array([1.0, 0.0]))
    loss.backward()
    assert loss.item() == 100.0 and np.isfinite(p.grad).all()   # log clamped at -100


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(lead=shapes(max_dims=2), classes=st.integers(1, 4), seed=seeds)
def test_nll_loss_gradient_and_cross_entropy_identity(reduction, lead, classes, seed):
    rng = np.random.default_rng(seed)
    target = np.where(rng.random(lead) < 0.2, -100, rng.integers(0, classes, lead))
    if reduction == "mean" and not (target != -100).any():
        target = np.zeros(lead, np.int64)
    logits = normal(seed, lead + (classes,))
    check(lambda x: F.nll_loss(x, target, reduction=reduction), logits)
    via_nll = F.nll_loss(F.log_softmax(mt.tensor(logits)), target, reduction=reduction)
    np.testing.assert_allclose(via_nll.data, F.cross_entropy(mt.tensor(logits), target,
                                                             reduction=reduction).data,
                               rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(rows=st.integers(1, 4), classes=st.integers(1, 5), smoothing=st.sampled_from([0.0, 0.1, 0.5]),
       seed=seeds)
def test_cross_entropy_label_smoothing_and_probability_targets(reduction, rows, classes,
                                                               smoothing, seed):
    rng = np.random.default_rng(seed)
    logits = normal(seed, (rows, classes)) * 2
    target = rng.integers(0, classes, rows)
    target[0] = -100 if rows > 1 else target[0]
    check(lambda x: F.cross_entropy(x, target, label_smoothing=smoothing, reduction=reduction),
          logits)
    probs = rng.dirichlet(np.ones(classes), rows)
    check(lambda x, q: F.cross_entropy(x, q, label_smoothing=smoothing, reduction=reduction),
          logits, probs)
    # A one-hot probability target is the same loss as the class id.
    ids = rng.integers(0, classes, rows)
    np.testing.assert_allclose(
        F.cross_entropy(mt.tensor(logits), np.eye(classes)[ids], label_smoothing=smoothing,
                        reduction=reduction).data,
        F.cross_entropy(mt.tensor(logits), ids, label_smoothing=smoothing,
                        reduction=reduction).data, rtol=1e-12)


# ----------------------------------------------------------------- creation

def test_creation():
    assert mt.linspace(0, 1, 5).dtype == np.float32
    np.testing.assert_allclose(mt.linspace(0, 1, 5).data, [0, 0.25, 0.5, 0.75, 1])
    assert mt.full((2, 2), 4).dtype == np.int64           # the fill value's kind, as PyTorch
    assert mt.full((2, 2), 0.5).dtype == np.float32
    assert mt.full((2,), True).dtype == bool
    assert mt.full((2,), np.float64(1.0)).dtype == np.float64
    like = mt.full_like(mt.zeros(2, 3, dtype=np.float64), 7)
    assert like.shape == (2, 3) and like.dtype == np.float64 and (like.data == 7).all()
    assert mt.empty(2, 3).shape == (2, 3) and mt.empty(2, 3).dtype == np.float32
    assert mt.empty((4,), requires_grad=True).requires_grad
