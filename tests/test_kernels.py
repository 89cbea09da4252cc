"""The fast primitives against their textbook reference forms, and the row-block kernel.

Each fast primitive (softmax, layer_norm, rms_norm, gelu, embedding's backward, matmul's
batched path) has a plain NumPy reference form beside it that reads like the math. Here
both run on the same hypothesis-drawn inputs and must agree, forward and backward.
`for_row_blocks` must give, bit for bit, what one call on the whole arrays gives.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import broadcastable_pair, seeds, shapes

import microtensor as mt
import microtensor.functional as F
from microtensor import kernels
from microtensor.autograd import sum_to_shape
from microtensor.kernels import for_row_blocks
from microtensor.ops import neural as nn_ops
from microtensor.ops.activation import gelu_exact, gelu_exact_reference
from microtensor.ops.elementwise import (
    gelu_tanh,
    gelu_tanh_reference,
    masked_fill,
    masked_fill_reference,
)
from microtensor.ops.linalg import matmul, matmul_reference
from microtensor.ops.neural import (
    cross_entropy,
    cross_entropy_reference,
    embedding,
    embedding_reference,
    layer_norm,
    layer_norm_reference,
    rms_norm,
    rms_norm_reference,
    softmax,
    softmax_reference,
)

# Relative to the largest value compared: the normalisations' gradients subtract terms of
# the inputs' size, so a near-zero result carries that size's rounding error.
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}
dtypes = st.sampled_from([np.float64, np.float32])


def data(shape, seed, dtype, scale=2.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def assert_same(fast, reference, inputs, grad_seed, dtype, **config):
    """fast.forward and the reference agree on the output and on every gradient (each
    summed to its input's shape, as the primitive decorator does)."""
    out, backward = fast.forward(*inputs, **config)
    ref_out, ref_backward = reference(*inputs, **config)
    assert out.shape == np.shape(ref_out)
    assert_close(out, ref_out, dtype)
    g = np.array(data(out.shape, grad_seed, dtype))
    g.flags.writeable = False    # as the stepper hands it: a backward must not write there
    for x, grad, ref_grad in zip(inputs, backward(g), ref_backward(g)):
        assert (grad is None) == (ref_grad is None)
        if grad is not None:
            assert_close(sum_to_shape(np.asarray(grad), np.shape(x)),
                         sum_to_shape(np.asarray(ref_grad), np.shape(x)), dtype)


def assert_close(actual, desired, dtype):
    scale = max(1.0, float(np.max(np.abs(desired), initial=0)))
    np.testing.assert_allclose(actual, desired, rtol=TOLERANCE[dtype],
                               atol=TOLERANCE[dtype] * scale * 10)


@settings(max_examples=40, deadline=None)
@given(shapes(min_dims=1), st.data(), seeds, dtypes)
def test_softmax_matches_its_reference(shape, draw, seed, dtype):
    axis = draw.draw(st.integers(-len(shape), len(shape) - 1))
    assert_same(softmax, softmax_reference, [data(shape, seed, dtype)], seed + 1, dtype,
                axis=axis)


@settings(max_examples=40, deadline=None)
@given(shapes(min_dims=1), seeds, dtypes, st.booleans(), st.booleans())
def test_layer_norm_matches_its_reference(shape, seed, dtype, with_weight, with_bias):
    features = shape[-1:]
    inputs = [data(shape, seed, dtype),
              data(features, seed + 1, dtype) if with_weight else None,
              data(features, seed + 2, dtype) if with_bias else None]
    assert_same(layer_norm, layer_norm_reference, inputs, seed + 3, dtype)


@settings(max_examples=40, deadline=None)
@given(shapes(min_dims=1), seeds, dtypes, st.booleans())
def test_rms_norm_matches_its_reference(shape, seed, dtype, with_weight):
    inputs = [data(shape, seed, dtype), data(shape[-1:], seed + 1, dtype) if with_weight else None]
    assert_same(rms_norm, rms_norm_reference, inputs, seed + 2, dtype)


@settings(max_examples=40, deadline=None)
@given(shapes(), seeds, dtypes)
def test_gelu_matches_its_reference(shape, seed, dtype):
    assert_same(gelu_tanh, gelu_tanh_reference, [data(shape, seed, dtype)], seed + 1, dtype)


@settings(max_examples=40, deadline=None)
@given(shapes(), seeds, dtypes)
def test_exact_gelu_matches_its_reference(shape, seed, dtype):
    assert_same(gelu_exact, gelu_exact_reference, [data(shape, seed, dtype)], seed + 1, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_its_reference_at_extreme_inputs(dtype):
    # Where t = +-1 exactly, the derivative's growing factors x and 1 + 3k x^2 must meet
    # the 0 before they overflow, as in the textbook order; NaN and inf pass as there.
    x = np.array([-1e30, -1e14, -1e10, -30, -5, -1e-30, 0, 1e-3, 5, 30, 1e10, 1e14, 1e30,
                  np.inf, -np.inf, np.nan], dtype)
    with np.errstate(all="ignore"):
        out, backward = gelu_tanh.forward(x)
        ref_out, ref_backward = gelu_tanh_reference(x)
        grad, = backward(np.ones_like(x))
        ref_grad, = ref_backward(np.ones_like(x))
    np.testing.assert_allclose(out, ref_out, rtol=TOLERANCE[dtype])
    np.testing.assert_allclose(grad, ref_grad, rtol=TOLERANCE[dtype], atol=10 * TOLERANCE[dtype])
    assert np.isfinite(grad[1:12]).all()                 # |x| <= 1e14: finite in float32 too


EMBEDDING_PATHS = {"one_hot_gemm": 10**9, "sort_and_sum": 0}   # ONE_HOT_MAX_VOCAB


@pytest.mark.parametrize("path", EMBEDDING_PATHS)
@settings(max_examples=40, deadline=None)
@given(shapes(max_dims=3), st.integers(1, 5), st.integers(1, 4), seeds)
def test_embedding_gradient_matches_its_reference(path, ids_shape, vocab, dim, seed):
    # Few rows and many ids, so repeated ids (which must accumulate) are the usual case.
    ids = np.random.default_rng(seed).integers(0, vocab, ids_shape)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn_ops, "ONE_HOT_MAX_VOCAB", EMBEDDING_PATHS[path])
        assert_same(embedding, embedding_reference,
                    [ids, data((vocab, dim), seed, np.float64)], seed + 1, np.float64)


@pytest.mark.parametrize("path", EMBEDDING_PATHS)
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 200), st.integers(1, 120), st.integers(1, 8), seeds,
       st.sampled_from([np.float64, np.float32]))
def test_embedding_gradient_is_exactly_np_add_at(path, n_ids, vocab, dim, seed, dtype):
    # Gradients on a grid of multiples of 1/8 add up exactly in any order, so both paths
    # must give np.add.at's result bit for bit (here up to 200 ids, many repeated).
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, n_ids)
    g = (rng.integers(-64, 64, (n_ids, dim)) / 8).astype(dtype)
    table = data((vocab, dim), seed, dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn_ops, "ONE_HOT_MAX_VOCAB", EMBEDDING_PATHS[path])
        grad = embedding.forward(ids, table)[1](g)[1]
    np.testing.assert_array_equal(grad, embedding_reference(ids, table)[1](g)[1])
    assert grad.dtype == dtype


@pytest.mark.parametrize("path", EMBEDDING_PATHS)
@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), shapes(max_dims=2), st.integers(1, 5), st.integers(1, 4), seeds)
def test_embedding_gradient_of_rows_of_the_same_ids(path, batch, row_shape, vocab, dim, seed):
    # Every row the same lookups, as an unpadded batch's positions: the batch's gradient
    # rows are summed first (exact on a grid of 1/8, so equal to np.add.at bit for bit).
    rng = np.random.default_rng(seed)
    ids = np.broadcast_to(rng.integers(0, vocab, row_shape), (batch, *row_shape)).copy()
    g = (rng.integers(-64, 64, (*ids.shape, dim)) / 8).astype(np.float32)
    table = data((vocab, dim), seed, np.float32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn_ops, "ONE_HOT_MAX_VOCAB", EMBEDDING_PATHS[path])
        grad = embedding.forward(ids, table)[1](g)[1]
    np.testing.assert_array_equal(grad, embedding_reference(ids, table)[1](g)[1])
    assert grad.dtype == np.float32


def test_embedding_gradient_keeps_inf_and_nan_in_their_own_rows():
    # In a one-hot GEMM 0 * inf would spread NaN to every row: the op sums by sorting then.
    ids = np.array([0, 2, 2, 1])
    g = np.array([[1.0, 2.0], [np.inf, 1.0], [1.0, np.nan], [3.0, 4.0]])
    grad = embedding.forward(ids, np.zeros((4, 2)))[1](g)[1]
    np.testing.assert_array_equal(grad, [[1.0, 2.0], [3.0, 4.0], [np.inf, np.nan], [0, 0]])


@st.composite
def cross_entropy_cases(draw):
    """(logits, target, config): integer targets (some ignored) or probabilities, any
    reduction, with or without label smoothing."""
    lead = draw(shapes(max_dims=2))
    classes, seed = draw(st.integers(1, 6)), draw(seeds)
    dtype = draw(dtypes)
    rng = np.random.default_rng(seed)
    logits = data(lead + (classes,), seed, dtype, scale=3.0)
    if draw(st.booleans()):
        target = rng.dirichlet(np.ones(classes), lead).astype(dtype)
    else:
        target = rng.integers(0, classes, lead)
        target = np.where(rng.random(lead) < 0.3, -1, target)     # some ignored
    config = {"ignore_index": -1, "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
              "label_smoothing": draw(st.sampled_from([0.0, 0.1, 1.0]))}
    return logits, target, config, dtype, seed


@settings(max_examples=60, deadline=None)
@given(cross_entropy_cases())
def test_cross_entropy_matches_its_reference(case):
    logits, target, config, dtype, seed = case
    with np.errstate(invalid="ignore"):   # "mean" over no counted position is NaN in both
        assert_same(cross_entropy, cross_entropy_reference, [logits, target], seed + 1,
                    dtype, **config)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_is_stable_at_extreme_logits(dtype, label_smoothing):
    # Huge logits (exp would overflow without the max) and -inf logits (a class that
    # can never be picked) give the reference's finite loss and gradient.
    logits = np.array([[1e30, 0.0, -1e30], [-np.inf, 2.0, 1.0], [3.0, -np.inf, -np.inf],
                       [0.0, 1.0, 2.0]], dtype)
    target = np.array([0, 1, 0, -100])
    out, backward = cross_entropy.forward(logits, target, label_smoothing=label_smoothing)
    ref_out, ref_backward = cross_entropy_reference(logits, target,
                                                    label_smoothing=label_smoothing)
    grad, _ = backward(np.ones((), dtype))
    ref_grad, _ = ref_backward(np.ones((), dtype))
    if label_smoothing == 0:
        assert np.isfinite(out) and np.isfinite(grad).all()
    np.testing.assert_allclose(out, ref_out, rtol=TOLERANCE[dtype])
    np.testing.assert_allclose(grad, ref_grad, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@settings(max_examples=40, deadline=None)
@given(broadcastable_pair(), seeds, dtypes, st.sampled_from([float("-inf"), 0.0, 3.5]))
def test_masked_fill_matches_its_reference_bit_for_bit(shapes_xm, seed, dtype, value):
    rng = np.random.default_rng(seed)
    x = np.asarray(data(shapes_xm[0], seed, dtype))
    x[x > 2.5] = np.inf                                   # infs and NaNs pass through
    mask = rng.random(shapes_xm[1]) < 0.5
    out, backward = masked_fill.forward(x, mask, value=value)
    ref_out, ref_backward = masked_fill_reference(x, mask, value)
    np.testing.assert_array_equal(out, ref_out)
    assert out.dtype == ref_out.dtype
    g = np.asarray(data(out.shape, seed + 1, dtype))
    g[g > 2.5] = np.nan
    np.testing.assert_array_equal(backward(g)[0], ref_backward(g)[0])
    # A read-only broadcast gradient (as a sum's backward sends) is not written into.
    broadcast_g = np.broadcast_to(np.ones((), dtype), out.shape)
    np.testing.assert_array_equal(backward(broadcast_g)[0], ref_backward(broadcast_g)[0])


@st.composite
def batched_matmul_shapes(draw):
    """(..., n, k) @ (..., k, m) with batch axes that broadcast, or one 2-D operand."""
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = draw(st.sampled_from([((2, 3), ()), ((), (2,)), ((2, 1), (3,)),
                                             ((1,), (2,)), ((2,), (2,)), ((), ())]))
    return batch_a + (n, k), batch_b + (k, m)


@settings(max_examples=40, deadline=None)
@given(batched_matmul_shapes(), seeds, dtypes)
def test_matmul_batched_paths_match_the_reference(shapes_ab, seed, dtype):
    a, b = (data(s, seed + i, dtype) for i, s in enumerate(shapes_ab))
    assert_same(matmul, matmul_reference, [a, b], seed + 2, dtype)


def test_the_references_are_what_the_textbook_says():
    # Spot values, so the references cannot both drift with the fast forms.
    y, _ = softmax_reference(np.log(np.array([1.0, 3.0])))
    np.testing.assert_allclose(y, [0.25, 0.75])
    out, _ = layer_norm_reference(np.array([1.0, 3.0]), eps=0.0)
    np.testing.assert_allclose(out, [-1.0, 1.0])
    out, _ = gelu_tanh_reference(np.array([0.0, 30.0]))
    np.testing.assert_allclose(out, [0.0, 30.0])


# ------------------------------------------------------------------ row blocks

ROWS = 1031                                          # odd, and not a multiple of any block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_gelu_is_bit_identical_to_one_block(dtype, monkeypatch):
    x = data((ROWS, 67), 0, dtype, scale=3.0)
    g = data((ROWS, 67), 1, dtype)
    assert x.size > kernels.BLOCK_SIZE                 # several blocks, the last one short
    blocked_out, blocked_backward = gelu_tanh.forward(x)
    blocked_grad, = blocked_backward(g)
    monkeypatch.setattr(kernels, "BLOCK_SIZE", x.size)
    whole_out, whole_backward = gelu_tanh.forward(x)
    whole_grad, = whole_backward(g)
    np.testing.assert_array_equal(blocked_out, whole_out)
    np.testing.assert_array_equal(blocked_grad, whole_grad)
    assert blocked_out.dtype == blocked_grad.dtype == dtype


def test_for_row_blocks_covers_every_row_in_blocks():
    x = np.arange(ROWS * 64, dtype=np.float64).reshape(ROWS, 64)
    y = np.full_like(x, np.nan)
    sizes = []

    def kernel(x, y):
        sizes.append(len(x))
        y[...] = 2 * x
    for_row_blocks(kernel, x, y)
    np.testing.assert_array_equal(y, 2 * x)
    assert len(sizes) > 1 and sum(sizes) == ROWS


def test_for_row_blocks_hands_each_block_its_scratch_buffers():
    x = np.arange(ROWS * 64, dtype=np.float64).reshape(ROWS, 64)
    y = np.full_like(x, np.nan)
    seen = []

    def kernel(x, y, scratch):
        assert scratch.shape == x.shape and scratch.dtype == y.dtype
        seen.append(scratch.base if scratch.base is not None else scratch)
        np.multiply(x, 3, out=scratch)
        np.subtract(scratch, x, out=y)
    for_row_blocks(kernel, x, y, scratch=1)
    np.testing.assert_array_equal(y, 2 * x)
    assert len(seen) > 1 and all(buffer is seen[0] for buffer in seen)   # made once


def test_a_kernel_error_reaches_the_caller():
    def kernel(x):
        raise ValueError("bad block")
    with pytest.raises(ValueError, match="bad block"):
        for_row_blocks(kernel, np.ones((ROWS, 64)))


def test_block_kernels_keep_their_gradients(monkeypatch):
    # Through the blocked path (small blocks, so 9 rows make 5 of them), in float64.
    monkeypatch.setattr(kernels, "BLOCK_SIZE", 16)
    x = mt.randn(9, 8, dtype=np.float64, requires_grad=True)
    weight = mt.randn(8, dtype=np.float64, requires_grad=True)
    assert mt.gradcheck(lambda x, w: (F.layer_norm(x, w) * F.gelu(x)).sum(), (x, weight))


def test_the_averaging_vector_is_shared_and_read_only():
    assert kernels.averager(8, np.float32) is kernels.averager(8, np.float32)
    with pytest.raises(ValueError):
        kernels.averager(8, np.float32)[0] = 1


@pytest.mark.parametrize("shape", [(3, 0), (0, 4), (0,), (2, 0, 5)])
def test_layer_norm_keeps_empty_shapes(shape):
    x = mt.randn(*shape, requires_grad=True)
    out = F.layer_norm(x)
    out.sum().backward()
    assert out.shape == shape and x.grad.shape == shape


def test_layer_norm_refuses_a_0d_tensor_and_says_why():
    with pytest.raises(ValueError, match=r"layer_norm: got a 0-d tensor, but layer_norm "
                                         r"normalises over the last axis\. Give it at least"):
        F.layer_norm(mt.tensor(1.0))
