"""The wrong numbers and bugs of issue 30, each pinned by a test that failed before the fix,
and the cases where PyTorch refuses what we once accepted. (PyTorch's own answers are
compared in test_torch_oracle.py; these tests need only NumPy and exact arithmetic.)"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microtensor as mt
from transformer import scaled_dot_product_attention

# ----------------------------------------------------------------- linspace

def test_integer_linspace_truncates_toward_zero():
    # NumPy rounds down ([0 -1 -1 -2]); PyTorch truncates toward zero.
    np.testing.assert_array_equal(mt.linspace(5, -5, 20, dtype=np.int32).data[9:13],
                                  [0, 0, 0, -1])


@given(start=st.floats(-60, 60), stop=st.floats(-60, 60), num=st.integers(0, 40),
       dtype=st.sampled_from([np.int16, np.int32, np.int64]))
def test_integer_linspace_is_the_exact_value_truncated(start, stop, num, dtype):
    first, last = int(start), int(stop)          # int() truncates toward zero
    exact = [Fraction(first) + Fraction(last - first) * i / max(num - 1, 1)
             for i in range(num)]
    ours = mt.linspace(start, stop, num, dtype=dtype)
    assert ours.dtype == dtype
    assert ours.tolist() == [int(v) for v in exact]    # int(Fraction) truncates too


def test_float_linspace_is_unchanged():
    np.testing.assert_allclose(mt.linspace(-1, 2, 7).data, np.linspace(-1, 2, 7), rtol=1e-6)
    assert mt.linspace(0, 1, 3, dtype=np.float64).dtype == np.float64


def test_bool_linspace_is_refused_as_in_pytorch():
    with pytest.raises(TypeError, match=r"linspace: dtype bool has no evenly spaced values\. "
                                        r"Use a float or integer dtype"):
        mt.linspace(0, 1, 5, dtype=bool)


# ----------------------------------------------------------------- roll

def test_roll_takes_a_one_element_tuple_without_an_axis():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(mt.tensor(x).roll((1,)).data, np.roll(x, (1,)))
    np.testing.assert_array_equal(mt.roll(mt.tensor(x), [-2]).data, np.roll(x, -2))
    leaf = mt.tensor(x, requires_grad=True)
    (leaf.roll((1,)) * mt.tensor(np.arange(6.0).reshape(2, 3))).sum().backward()
    np.testing.assert_array_equal(leaf.grad, np.roll(np.arange(6.0).reshape(2, 3), -1))


# ----------------------------------------------------------------- dtype promotion

# (tensor dtype, 0-d tensor dtype) -> PyTorch's result dtype (torch.result_type).
PROMOTIONS = [
    (np.int32, np.float32, np.float32), (np.int32, np.float64, np.float64),
    (np.float32, np.float64, np.float32), (np.float64, np.float32, np.float64),
    (np.int32, np.int64, np.int32), (np.uint8, np.int8, np.uint8),
    (np.bool_, np.float32, np.float32), (np.float16, np.float64, np.float16),
    (np.int64, np.float16, np.float16),
]


@pytest.mark.parametrize("tensor_dtype, zero_d_dtype, expected", PROMOTIONS)
@pytest.mark.parametrize("op", [mt.maximum, mt.minimum, mt.add, mt.sub, mt.mul])
def test_a_0d_tensor_promotes_as_in_pytorch(op, tensor_dtype, zero_d_dtype, expected):
    if op is mt.sub and np.dtype(tensor_dtype) == bool:
        return                              # NumPy and PyTorch both refuse bool - bool
    a = mt.tensor(np.array([0, 1, 1], dtype=tensor_dtype))
    b = mt.tensor(np.array(1, dtype=zero_d_dtype))
    assert op(a, b).dtype == expected and op(b, a).dtype == expected


@pytest.mark.parametrize("tensor_dtype, zero_d_dtype, expected",
                         [p for p in PROMOTIONS if np.dtype(p[0]).kind in "iuf"
                          and np.dtype(p[2]).kind == "f"])
@pytest.mark.parametrize("op", [
    lambda a, b: mt.where(mt.tensor(np.array([True, False, True])), a, b),
    mt.copysign,
    lambda a, b: mt.lerp(a, b, 0.5),
])
def test_a_0d_tensor_promotes_as_in_pytorch_in_where_copysign_and_lerp(
        op, tensor_dtype, zero_d_dtype, expected):
    a = mt.tensor(np.array([0, 1, 1], dtype=tensor_dtype))
    b = mt.tensor(np.array(1, dtype=zero_d_dtype))
    assert op(a, b).dtype == expected and op(b, a).dtype == expected


def test_promotion_keeps_values_and_gradients():
    ints = mt.tensor(np.array([1, 5, 3], np.int32))
    bound = mt.tensor(np.float32(2.5), requires_grad=True)
    out = mt.maximum(ints, bound)
    np.testing.assert_array_equal(out.data, [2.5, 5, 3])
    out.sum().backward()
    assert bound.grad.dtype == np.float32 and bound.grad == 1.0
    # Same-rank operands keep NumPy's rule, which PyTorch shares for these.
    assert (mt.zeros(2) + mt.zeros(2, dtype=np.float64)).dtype == np.float64


# ----------------------------------------------------------------- repeat

def test_repeat_with_fewer_counts_than_axes_raises_as_in_pytorch():
    with pytest.raises(ValueError, match=r"repeat: 1 repeat count\(s\) \(2,\) for a tensor with "
                                         r"2 axes \(shape \(2, 3\)\)\. Give one count per axis"):
        mt.ones(2, 3).repeat(2)
    assert mt.ones(2, 3).repeat(1, 2).shape == (2, 6)
    assert mt.ones(2, 3).repeat(2, 1, 1).shape == (2, 2, 3)        # more counts: new axes
    assert mt.tile(mt.ones(2, 3), (2,)).shape == (2, 6)             # tile keeps NumPy's rule


# ----------------------------------------------------------------- refused as in PyTorch

def test_scatter_add_of_another_dtype_is_refused():
    half = mt.zeros(3, dtype=np.float16)
    with pytest.raises(TypeError, match=r"scatter_add: src float32 \(2,\) must have the dtype "
                                        r"of the tensor it is written into, float16 \(3,\)"):
        mt.scatter_add(half, 0, np.array([0, 1]), mt.ones(2))
    out = mt.scatter_add(half, 0, np.array([0, 0]), mt.ones(2, dtype=np.float16))
    assert out.dtype == np.float16 and out.tolist() == [2, 0, 0]


def test_attention_mask_and_causal_combine_where_pytorch_refuses():
    # A documented choice (docs/reference.md): a key may be attended to only where both
    # the mask and the causal rule allow it. DecoderLM passes its padding mask this way.
    rng = np.random.default_rng(0)
    q, k, v = (mt.tensor(rng.standard_normal((1, 4, 3))) for _ in range(3))
    padding = np.array([True, True, False, True])
    _, weights = scaled_dot_product_attention(q, k, v, mask=padding, causal=True)
    allowed = np.tril(np.ones((4, 4), bool)) & padding
    assert (weights.data[0][~allowed] == 0).all() and (weights.data[0][allowed] > 0).all()


# ----------------------------------------------------------------- missing arguments

def test_sum_and_prod_take_a_dtype():
    x = mt.tensor(np.array([1e8, 1.0, -1e8], np.float32), requires_grad=True)
    total = x.sum(dtype=np.float64)
    assert total.dtype == np.float64 and total.item() == 1.0       # float32 would give 0
    total.backward()
    assert x.grad.dtype == np.float32 and (x.grad == 1).all()
    assert mt.prod(mt.arange(1, 5), dtype=np.float32).dtype == np.float32
    assert mt.prod(mt.arange(1, 5), dtype=np.float32).item() == 24
    leaf = mt.tensor(np.array([[2.0, 3.0]]), requires_grad=True)
    assert mt.gradcheck(lambda t: t.prod(axis=1, dtype=np.float64), [leaf])


def test_isinf_can_leave_out_either_sign():
    x = mt.tensor([1.0, np.inf, -np.inf, np.nan])
    assert x.isinf().tolist() == [False, True, True, False]
    assert x.isinf(detect_negative=False).tolist() == [False, True, False, False]
    assert mt.isinf(x, detect_positive=False).tolist() == [False, False, True, False]
    assert not mt.isinf(x, detect_positive=False, detect_negative=False).data.any()


@pytest.mark.parametrize("vocab, width, count", [(3, 0, 2), (40, 0, 5), (40, 3, 0), (3, 2, 0)])
def test_embedding_of_a_zero_width_table_or_no_ids(vocab, width, count):
    # A zero-width table failed in the backward with a raw ValueError (reshape(-1, 0)).
    import microtensor.functional as F
    table = mt.zeros((vocab, width), requires_grad=True, dtype=np.float64)
    out = F.embedding(np.arange(count) % vocab, table)
    assert out.shape == (count, width)
    out.sum().backward()
    assert table.grad.shape == (vocab, width) and not table.grad.any()
