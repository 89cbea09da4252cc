"""Every primitive's backward against central finite differences (mt.gradcheck, float64),
over hypothesis-drawn shapes with broadcasting, 0-d operands and negative axes.

Data avoids each op's kinks by construction (see tests/strategies.py), so a failure is a
wrong derivative, not a finite-difference artefact.
"""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    away_from,
    broadcastable_pair,
    broadcastable_triple,
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
from microtensor.ops import neural as nn_ops

# ----------------------------------------------------------------- elementwise, binary

BINARY = {
    "add": (lambda a, b: a + b, normal, normal),
    "sub": (lambda a, b: a - b, normal, normal),
    "mul": (lambda a, b: a * b, normal, normal),
    "div": (lambda a, b: a / b, normal, lambda s, shape: away_from(s, shape, gap=0.5)),
    "pow": (lambda a, b: a ** b, positive, normal),  # positive base: d/db = a^b log a
}


@pytest.mark.parametrize("name", BINARY)
@given(shapes=broadcastable_pair(), seed=seeds)
def test_binary_gradient(name, shapes, seed):
    fn, make_a, make_b = BINARY[name]
    check(fn, make_a(seed, shapes[0]), make_b(seed + 1, shapes[1]))


@pytest.mark.parametrize("op", [mt.maximum, mt.minimum])
@given(shapes=broadcastable_pair(), seed=seeds)
def test_maximum_minimum_gradient(op, shapes, seed):
    # a on the integers, b on the half-integers: never equal, so no tie (kink).
    rng = np.random.default_rng(seed)
    a = rng.integers(-3, 3, shapes[0]).astype(float)
    b = rng.integers(-3, 3, shapes[1]) + 0.5
    check(op, a, b)


@given(shapes=broadcastable_triple(), seed=seeds)
def test_where_gradient(shapes, seed):
    cond = np.random.default_rng(seed).random(shapes[0]) < 0.5
    check(lambda a, b: mt.where(cond, a, b), normal(seed, shapes[1]), normal(seed + 1, shapes[2]))


@given(shapes=broadcastable_pair(), seed=seeds)
def test_masked_fill_gradient(shapes, seed):
    mask = np.random.default_rng(seed).random(shapes[1]) < 0.5
    check(lambda x: x.masked_fill(mask, -7.0), normal(seed, shapes[0]))


@given(shapes=broadcastable_pair(), seed=seeds)
def test_scalar_operands_gradient(shapes, seed):
    # Python numbers on either side of every arithmetic operator.
    x = positive(seed, shapes[0])
    check(lambda x: 2.0 + x - 3.0 * x / 1.5 + 1.0 / x - (2.0 - x) + x ** 3 + 2.0 ** x, x)


# ----------------------------------------------------------------- elementwise, unary

UNARY = {
    "neg": (lambda x: -x, normal),
    "exp": (mt.exp, normal),
    "log": (mt.log, positive),
    "sqrt": (mt.sqrt, positive),
    "tanh": (mt.tanh, normal),
    "sigmoid": (mt.sigmoid, normal),
    "relu": (mt.relu, away_from),  # no element at the kink 0
    "gelu": (mt.gelu, normal),
    "abs": (mt.abs, away_from),
    "clip": (lambda x: x.clip(-0.5, 0.8), lambda s, shape: away_from(s, shape, (-0.5, 0.8))),
    "clip_min_only": (lambda x: mt.clip(x, min=0.3), lambda s, shape: away_from(s, shape, (0.3,))),
    "astype": (lambda x: x.astype(np.float64) * 1.0, normal),
}


@pytest.mark.parametrize("name", UNARY)
@given(shape=shapes(), seed=seeds)
def test_unary_gradient(name, shape, seed):
    fn, make = UNARY[name]
    check(fn, make(seed, shape))


def test_astype_float32_roundtrip_gradient():
    # Through float32 and back: identity up to rounding, so a wide eps is exact enough.
    x = normal(0, (3, 4))
    check(lambda x: x.astype(np.float32).astype(np.float64) * 2.0, x, eps=1e-2, atol=1e-4)
    x32 = mt.tensor(x.astype(np.float32), requires_grad=True)
    (x32.astype(np.float64) * 3.0).sum().backward()
    assert x32.grad.dtype == np.float32
    np.testing.assert_array_equal(x32.grad, np.full((3, 4), 3.0, np.float32))


# ----------------------------------------------------------------- reductions

@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@given(case=reduction_cases(), seed=seeds)
def test_reduction_gradient(name, case, seed):
    shape, axis, keepdims = case
    data = distinct(seed, shape) if name in ("max", "min") else normal(seed, shape)
    check(lambda x: getattr(x, name)(axis=axis, keepdims=keepdims), data)


@given(case=reduction_cases(min_dims=1), correction=st.sampled_from([0, 1]), seed=seeds)
def test_var_gradient(case, correction, seed):
    shape, axis, keepdims = case
    axes = {a % len(shape) for a in (range(len(shape)) if axis is None else np.atleast_1d(axis))}
    if int(np.prod([shape[a] for a in axes])) <= correction:
        # enough elements for the estimate: grow every reduced axis by one
        shape = tuple(n + 1 if i in axes else n for i, n in enumerate(shape))
    check(lambda x: x.var(axis=axis, keepdims=keepdims, correction=correction),
          normal(seed, shape))


def test_max_tie_shares_gradient():
    # Ties split the gradient evenly (like torch.amax), so it still sums to g.
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


# ----------------------------------------------------------------- shape ops

@given(shape=shapes(), seed=seeds, data=st.data())
def test_reshape_gradient(shape, seed, data):
    sizes = list(shape)
    data.draw(st.randoms()).shuffle(sizes)
    target = [n for n in sizes if n != 1] + [1] * data.draw(st.integers(0, 1))
    if target and data.draw(st.booleans()):
        target[0] = -1  # the inferred size
    check(lambda x: x.reshape(tuple(target)), normal(seed, shape))
    check(lambda x: x.reshape(*target), normal(seed, shape))
    check(lambda x: x.view(*target), normal(seed, shape))          # PyTorch's other name


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_permute_swapaxes_transpose_gradient(shape, seed, data):
    ndim = len(shape)
    axes = data.draw(st.permutations(range(ndim)))
    signed = tuple(data.draw(st.sampled_from([a, a - ndim])) for a in axes)
    a1, a2 = data.draw(st.integers(-ndim, ndim - 1)), data.draw(st.integers(-ndim, ndim - 1))
    x = normal(seed, shape)
    check(lambda x: x.permute(*signed), x)
    check(lambda x: x.swapaxes(a1, a2), x)
    check(lambda x: mt.transpose(x, a1, a2), x)
    check(lambda x: x.T, x)


@given(shape=shapes(), seed=seeds, data=st.data())
def test_flatten_unsqueeze_squeeze_gradient(shape, seed, data):
    ndim = len(shape)
    x = normal(seed, shape)
    if ndim:
        start = data.draw(st.integers(-ndim, ndim - 1))
        end = data.draw(st.integers(start % ndim, ndim - 1))
        check(lambda x: x.flatten(start, end), x)
    check(lambda x: x.flatten(), x)
    where = data.draw(st.integers(-ndim - 1, ndim))
    check(lambda x: x.unsqueeze(where), x)
    check(lambda x: x.squeeze(), x)
    ones = [i for i, n in enumerate(shape) if n == 1]
    if ones:
        axis = data.draw(st.sampled_from(ones))
        check(lambda x: x.squeeze(axis - ndim), x)


@given(shapes=broadcastable_pair(), seed=seeds)
def test_expand_gradient(shapes, seed):
    small, other = shapes
    target = np.broadcast_shapes(small, other)
    check(lambda x: x.expand(*target), normal(seed, small))


# ----------------------------------------------------------------- indexing

@st.composite
def basic_indices(draw, shape):
    """A tuple of slices (steps may be negative), ints, None and Ellipsis for `shape`."""
    parts = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "int", "all"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start, stop = draw(st.integers(-n, n)), draw(st.integers(-n, n))
            step = draw(st.sampled_from([1, 2, -1]))
            parts.append(slice(start, stop, step))
        else:
            parts.append(slice(None))
    if parts and draw(st.booleans()):
        parts[draw(st.integers(0, len(parts) - 1))] = Ellipsis
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return tuple(parts)


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_getitem_basic_gradient(shape, seed, data):
    index = data.draw(basic_indices(shape))
    check(lambda x: x[index], normal(seed, shape))


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_getitem_integer_array_repeats_accumulate(shape, seed, data):
    n = shape[0]
    ids = np.array(data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6)))
    check(lambda x: x[ids], normal(seed, shape))
    check(lambda x: x[mt.tensor(ids), ...], normal(seed, shape))  # index given as a Tensor


def test_getitem_repeated_index_gradient_counts_every_use():
    x = leaf([1.0, 2.0, 3.0])
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])


@given(shape=shapes(min_dims=2), seed=seeds, data=st.data())
def test_getitem_mixed_array_and_slice_gradient(shape, seed, data):
    rows = np.array(data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=5)))
    cols = np.array(data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=len(rows),
                                       max_size=len(rows))))
    x = normal(seed, shape)
    check(lambda x: x[rows, 1:], x)
    check(lambda x: x[rows, cols], x)
    check(lambda x: x[:, cols], x)


@given(shape=shapes(min_dims=1), seed=seeds)
def test_getitem_boolean_mask_gradient(shape, seed):
    x = normal(seed, shape)
    mask = np.random.default_rng(seed + 1).random(shape) < 0.5
    check(lambda x: x[mask], x)
    check(lambda x: x[x.data > 0], x)
    row_mask = mask.reshape(shape[0], -1)[:, 0]
    check(lambda x: x[row_mask], x)


# ----------------------------------------------------------------- joining and splitting

@given(shape=shapes(min_dims=1), n=st.integers(1, 3), seed=seeds, data=st.data())
def test_concat_stack_gradient(shape, n, seed, data):
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    parts = []
    for i in range(n):  # pieces differ in length along the concat axis
        piece = list(shape)
        piece[axis] = data.draw(st.integers(1, 3))
        parts.append(normal(seed + i, tuple(piece)))
    check(lambda *xs: mt.concat(list(xs), axis=axis), *parts)
    new_axis = data.draw(st.integers(-ndim - 1, ndim))
    same = [normal(seed + i, shape) for i in range(n)]
    check(lambda *xs: mt.stack(list(xs), axis=new_axis), *same)


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_split_gradient(shape, seed, data):
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    length = shape[axis]
    size = data.draw(st.integers(1, length))
    weights = [normal(seed + 1, p.shape) for p in mt.randn(*shape).split(size, axis=axis)]

    def pieces_weighted(x):
        pieces = x.split(size, axis=axis)
        assert sum(p.shape[axis] for p in pieces) == length
        return mt.stack([(p * w).sum() for p, w in zip(pieces, weights)])
    check(pieces_weighted, normal(seed, shape))
    cut = data.draw(st.integers(0, length))
    check(lambda x: x.split([cut, length - cut], axis=axis)[1] * 2.0, normal(seed, shape))


# ----------------------------------------------------------------- matmul

MATMUL_CASES = {
    "vector @ vector": ((3,), (3,)),
    "vector @ matrix": ((3,), (3, 2)),
    "matrix @ vector": ((4, 3), (3,)),
    "matrix @ matrix": ((4, 3), (3, 2)),
    "batched": ((2, 4, 3), (2, 3, 5)),
    "broadcast batch": ((2, 1, 4, 3), (3, 3, 2)),
    "batched @ 2-D": ((2, 4, 3), (3, 5)),
    "4-D @ 2-D": ((2, 2, 4, 3), (3, 2)),
    "2-D @ batched": ((4, 3), (2, 3, 5)),
    "vector @ batched": ((3,), (2, 3, 5)),
    "batched @ vector": ((2, 4, 3), (3,)),
    "one-row batch": ((5, 1, 3), (3, 2)),
}


@pytest.mark.parametrize("case", MATMUL_CASES)
def test_matmul_gradient(case):
    shape_a, shape_b = MATMUL_CASES[case]
    check(lambda a, b: a @ b, normal(1, shape_a), normal(2, shape_b))


@given(batch=broadcastable_pair(max_dims=2), n=st.integers(1, 3), k=st.integers(1, 3),
       m=st.integers(1, 3), seed=seeds)
def test_matmul_broadcast_batch_gradient(batch, n, k, m, seed):
    a, b = normal(seed, batch[0] + (n, k)), normal(seed + 1, batch[1] + (k, m))
    check(lambda a, b: mt.matmul(a, b), a, b)


def test_matmul_batched_by_2d_backward_uses_one_gemm():
    """dW for (B, T, k) @ (k, m) must be one (k, B*T) @ (B*T, m) product. A per-batch
    outer product would allocate a (B, k, m) stack; measure the peak allocation."""
    B, T, k, m = 256, 1, 64, 64
    x = mt.randn(B, T, k, dtype=np.float64, requires_grad=True)
    W = mt.randn(k, m, dtype=np.float64, requires_grad=True)
    out = x @ W
    grad_out = np.ones(out.shape)
    tracemalloc.start()
    try:
        out.backward(grad_out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_batch_stack = B * k * m * 8  # 8 MiB
    assert peak < per_batch_stack / 4, f"backward allocated {peak} bytes at peak"
    np.testing.assert_allclose(W.grad, x.data.reshape(-1, k).T @ grad_out.reshape(-1, m))


# ----------------------------------------------------------------- fused nn ops

@pytest.mark.parametrize("op", [F.softmax, F.log_softmax])
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_softmax_gradient(op, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check(lambda x: op(x, axis=axis), normal(seed, shape) * 3)


@pytest.mark.parametrize("affine", ["none", "weight", "bias", "both"])
@given(shape=shapes(min_dims=1), seed=seeds)
def test_layer_norm_gradient(affine, shape, seed):
    shape = shape[:-1] + (shape[-1] + 1,)  # at least 2 features: a non-degenerate variance
    d = shape[-1]
    weight, bias = normal(seed + 1, (d,)), normal(seed + 2, (d,))
    if affine == "none":
        check(lambda x: F.layer_norm(x), normal(seed, shape))
    elif affine == "weight":
        check(lambda x, w: F.layer_norm(x, w), normal(seed, shape), weight)
    elif affine == "bias":
        check(lambda x, b: F.layer_norm(x, None, b), normal(seed, shape), bias)
    else:
        check(lambda x, w, b: F.layer_norm(x, w, b), normal(seed, shape), weight, bias)


@pytest.mark.parametrize("with_weight", [True, False])
@given(shape=shapes(min_dims=1), seed=seeds)
def test_rms_norm_gradient(with_weight, shape, seed):
    d = shape[-1]
    if with_weight:
        check(lambda x, w: F.rms_norm(x, w), normal(seed, shape), normal(seed + 1, (d,)))
    else:
        check(lambda x: F.rms_norm(x), normal(seed, shape))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(rows=shapes(min_dims=0, max_dims=2), classes=st.integers(1, 4), seed=seeds)
def test_cross_entropy_gradient(reduction, rows, classes, seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, rows)
    ignored = rng.random(rows) < 0.3
    target = np.where(ignored, -1, target)
    if not (target != -1).any():
        target = np.zeros(rows, dtype=np.int64)  # at least one counted position
    check(lambda logits: F.cross_entropy(logits, target, ignore_index=-1,
                                         reduction=reduction),
          normal(seed, rows + (classes,)) * 2)


@given(shape=shapes(min_dims=1), p=st.sampled_from([0.0, 0.25, 0.5]), seed=seeds)
def test_dropout_gradient(shape, p, seed):
    def fixed_mask_dropout(x):
        mt.manual_seed(seed)  # the same mask on every call gradcheck makes
        return F.dropout(x, p=p)
    check(fixed_mask_dropout, normal(seed, shape))


@pytest.mark.parametrize("one_hot_max_vocab", [10**9, 0])   # the GEMM path, the sort path
@given(ids_shape=shapes(min_dims=1, max_dims=3), vocab=st.integers(1, 5), seed=seeds)
def test_embedding_gradient_with_repeated_ids(one_hot_max_vocab, ids_shape, vocab, seed):
    ids = np.random.default_rng(seed).integers(0, vocab, ids_shape)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn_ops, "ONE_HOT_MAX_VOCAB", one_hot_max_vocab)
        check(lambda W: F.embedding(ids, W), normal(seed, (vocab, 3)))


def test_embedding_repeated_id_accumulates():
    W = leaf(np.arange(6.0).reshape(3, 2))
    F.embedding(np.array([[2, 0], [2, 2]]), W).sum().backward()
    np.testing.assert_array_equal(W.grad, [[1, 1], [0, 0], [3, 3]])


@pytest.mark.parametrize("with_bias", [True, False])
@given(lead=shapes(min_dims=0, max_dims=3), n_in=st.integers(1, 4), n_out=st.integers(1, 4),
       seed=seeds)
def test_linear_gradient(with_bias, lead, n_in, n_out, seed):
    x = normal(seed, lead + (n_in,))
    weight, bias = normal(seed + 1, (n_in, n_out)), normal(seed + 2, (n_out,))
    if with_bias:
        check(lambda x, w, b: F.linear(x, w, b), x, weight, bias)
    else:
        check(lambda x, w: F.linear(x, w), x, weight)



@pytest.mark.parametrize("with_bias", [True, False])
@given(lead=shapes(min_dims=0, max_dims=3), n_in=st.integers(2, 5), n_out=st.integers(1, 4),
       seed=seeds)
def test_layer_norm_linear_gradient_and_its_two_op_reference(with_bias, lead, n_in, n_out,
                                                              seed):
    x = normal(seed, lead + (n_in,))
    params = [normal(seed + 1, (n_in,)), normal(seed + 2, (n_in,)),
              normal(seed + 3, (n_in, n_out))] + ([normal(seed + 4, (n_out,))] if with_bias
                                                  else [])
    check(F.layer_norm_linear, x, *params)
    # The folded form meets the two ops it replaces: output and every gradient.
    results = []
    for op in (F.layer_norm_linear, nn_ops.layer_norm_linear_reference):
        inputs = [mt.tensor(array, requires_grad=True) for array in (x, *params)]
        out = op(*inputs)
        (out * normal(seed + 5, out.shape)).sum().backward()
        results.append([out.data] + [t.grad for t in inputs])
    for fused, reference in zip(*results):
        np.testing.assert_allclose(fused, reference, rtol=1e-9, atol=1e-12)


def test_layer_norm_linear_in_float32_stays_float32_and_near_the_reference():
    rng = np.random.default_rng(0)
    x, w, b, W, c = (mt.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
                     for s in [(4, 6, 8), (8,), (8,), (8, 5), (5,)])
    out = F.layer_norm_linear(x, w, b, W, c)
    reference = nn_ops.layer_norm_linear_reference(x, w, b, W, c)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, reference.data, rtol=1e-5, atol=1e-5)


def test_layer_norm_linear_names_itself_on_mismatched_shapes():
    x, w, b = normal(0, (2, 4)), normal(1, (4,)), normal(2, (4,))
    with pytest.raises(ValueError, match=r"layer_norm_linear.*\(2, 4\).*\(3, 5\).*\(in, out\)"):
        F.layer_norm_linear(x, w, b, normal(3, (3, 5)))
    with pytest.raises(ValueError, match=r"layer_norm_linear.*norm_weight.*\(3,\)"):
        F.layer_norm_linear(x, normal(1, (3,)), b, normal(3, (4, 5)))
    with pytest.raises(ValueError, match=r"layer_norm_linear.*bias.*\(4,\)"):
        F.layer_norm_linear(x, w, b, normal(3, (4, 5)), normal(4, (4,)))

def test_linear_equals_matmul_plus_bias():
    x, w, b = normal(0, (2, 3, 4)), normal(1, (4, 5)), normal(2, (5,))
    np.testing.assert_allclose(F.linear(x, w, b).data, (x @ w + b).data, rtol=1e-12)
