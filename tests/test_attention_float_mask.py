"""scaled_dot_product_attention with a float mask: added to the scores, as PyTorch's
float attn_mask (the one exception to boolean masks, chosen by the mask's dtype)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

import microtensor as mt
from transformer import scaled_dot_product_attention as sdpa


def reference(q, k, v, bias):
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]) + bias
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v


@given(seed=seeds, tq=st.integers(1, 4), tk=st.integers(1, 4),
       bias_shape=st.sampled_from(["full", "row", "key"]))
def test_a_float_mask_is_added_to_the_scores(seed, tq, tk, bias_shape):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((2, tq, 3)), rng.standard_normal((2, tk, 3)), \
        rng.standard_normal((2, tk, 2))
    shape = {"full": (2, tq, tk), "row": (tq, tk), "key": (2, 1, tk)}[bias_shape]
    bias = rng.standard_normal(shape)
    out, _ = sdpa(mt.tensor(q), mt.tensor(k), mt.tensor(v), mask=bias)
    # (atol: an output near 0 is a cancellation of O(1) terms, so its rounding is
    # absolute; scale * (q k^T) and (q k^T) / sqrt(d) differ in the last bit)
    np.testing.assert_allclose(out.data, reference(q, k, v, bias), rtol=1e-12, atol=1e-14)
    # A learnable bias (ALiBi-like) gets its gradient; so do q, k, v.
    leaves = [mt.tensor(a, requires_grad=True) for a in (q, k, v, bias)]
    assert mt.gradcheck(lambda q, k, v, b: sdpa(q, k, v, mask=b)[0], leaves)


def test_minus_inf_entries_mask_exactly_like_false_and_an_empty_row_gives_zeros():
    rng = np.random.default_rng(0)
    q = mt.tensor(rng.standard_normal((3, 2)))                 # 3 queries, 4 keys
    k, v = (mt.tensor(rng.standard_normal((4, 2))) for _ in range(2))
    allowed = np.array([[True, False, True, True], [False] * 4, [True] * 4])
    additive = np.where(allowed, 0.0, -np.inf)
    with_bool, _ = sdpa(q, k, v, mask=allowed)
    with_float, weights_float = sdpa(q, k, v, mask=additive)
    np.testing.assert_array_equal(with_float.data, with_bool.data)
    np.testing.assert_array_equal(weights_float.data[1], 0.0)     # not NaN
    assert np.isfinite(with_float.data).all()
    # Causal masking combines with a float bias.
    q = mt.tensor(rng.standard_normal((4, 2)))
    bias = rng.standard_normal((4, 4))
    out, weights = sdpa(q, k, v, mask=bias, causal=True)
    np.testing.assert_array_equal(np.triu(weights.data, 1), 0.0)
    causal_bias = np.where(np.tril(np.ones((4, 4), bool)), bias, -np.inf)
    np.testing.assert_allclose(out.data, reference(q.data, k.data, v.data, causal_bias),
                               rtol=1e-12)


def test_float_mask_errors():
    q = mt.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: mask of shape "
                                         r"\(5,\) does not broadcast"):
        sdpa(q, q, q, mask=np.zeros(5))
    with pytest.raises(TypeError, match=r"scaled_dot_product_attention: mask must be boolean "
                                        r"\(True = may attend\) or float \(added to the scores\), "
                                        r"got dtype int64"):
        sdpa(q, q, q, mask=np.zeros((3, 3), np.int64))
