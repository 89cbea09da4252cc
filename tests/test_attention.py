"""Scaled dot-product attention and multi-head attention: the formula, masking (-inf,
bottom-right causal, fully masked rows), heads without a loop, equivariance, gradients."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
from microtensor.autograd import topological_order
from transformer import MultiHeadAttention, PositionalEncoding, causal_mask
from transformer import scaled_dot_product_attention as sdpa


def reference_attention(q, k, v, allowed=None):
    """softmax(q k^T / sqrt(d_k)) v written directly in NumPy (float64)."""
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v, weights


def f64(*shape):
    return mt.randn(*shape, dtype=np.float64, requires_grad=True)


def bind(module, tensors):
    """Make `module` compute with `tensors` in place of its parameters (in order), so
    gradcheck, which passes fresh float64 copies, checks parameter gradients too."""
    for (path, _), tensor in zip(module.named_parameters(), tensors):
        owner = module
        *parents, attr = path.split(".")
        for name in parents:
            owner = getattr(owner, name)
        object.__setattr__(owner, attr, tensor)


def float64_params(module):
    for param in module.parameters():
        param.data = param.data.astype(np.float64)
    return list(module.parameters())


# ---------------------------------------------------------------------- the function
@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), n_queries=st.integers(1, 5), n_keys=st.integers(1, 5),
       d_k=st.integers(1, 6), causal=st.booleans())
def test_matches_the_formula(batch, n_queries, n_keys, d_k, causal):
    q, k, v = f64(batch, n_queries, d_k), f64(batch, n_keys, d_k), f64(batch, n_keys, 3)
    out, weights = sdpa(q, k, v, causal=causal)
    allowed = causal_mask(n_queries, n_keys) if causal else None
    if allowed is not None and not allowed.any(axis=-1).all():
        allowed_rows = allowed.any(axis=-1)
        expected_out, expected_w = reference_attention(q.data, k.data, v.data,
                                                       np.where(allowed_rows[:, None],
                                                                allowed, True))
        expected_out[:, ~allowed_rows] = 0
        expected_w[:, ~allowed_rows] = 0
    else:
        expected_out, expected_w = reference_attention(q.data, k.data, v.data, allowed)
    np.testing.assert_allclose(out.data, expected_out, atol=1e-12)
    np.testing.assert_allclose(weights.data, expected_w, atol=1e-12)


def test_graph_is_matmul_scale_mask_softmax_matmul():
    q, k, v = f64(2, 3, 4), f64(2, 3, 4), f64(2, 3, 4)
    out, _ = sdpa(q, k, v, causal=True)
    names, node = [], out.op
    while node is not None:
        names.append(node.name)
        first = next(i for i in node.inputs if isinstance(i, mt.Tensor) and i.requires_grad)
        node = first.op
    assert names[::-1] == ["matmul", "mul", "masked_fill", "softmax", "matmul"]
    scale = out.op.inputs[0].op.inputs[0].op.inputs[0].op.inputs[1]   # the mul's factor
    assert scale == pytest.approx(1 / math.sqrt(4))


def test_causal_mask_is_aligned_bottom_right():
    np.testing.assert_array_equal(causal_mask(3, 3), np.tril(np.ones((3, 3), bool)))
    # one new query after 4 cached keys sees all 5 keys; 2 queries over 4 keys
    assert causal_mask(1, 5).all()
    np.testing.assert_array_equal(causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])


def op_names(out):
    return {t.op.name for t in topological_order(out) if t.op is not None}


def test_nothing_masked_means_no_masking_ops_and_the_same_result():
    q, k, v = f64(2, 1, 4), f64(2, 5, 4), f64(2, 5, 4)
    plain, plain_w = sdpa(q, k, v)
    # one query under a causal mask sees every key; an all-True padding mask hides nothing
    for kwargs in ({"causal": True}, {"mask": np.ones((2, 1, 5), bool)},
                   {"mask": np.ones((2, 1, 5), bool), "causal": True}):
        out, weights = sdpa(q, k, v, **kwargs)
        assert "masked_fill" not in op_names(out)
        np.testing.assert_array_equal(out.data, plain.data)
        np.testing.assert_array_equal(weights.data, plain_w.data)
    # but one masked key still goes through masked_fill
    mask = np.ones((2, 1, 5), bool)
    mask[1, 0, 2] = False
    out, weights = sdpa(q, k, v, mask=mask)
    assert "masked_fill" in op_names(out) and weights.data[1, 0, 2] == 0


def test_last_queries_of_causal_attention_equal_a_cached_step():
    q, k, v = f64(1, 6, 4), f64(1, 6, 4), f64(1, 6, 4)
    full, _ = sdpa(q, k, v, causal=True)
    last_two, _ = sdpa(q[:, 4:], k, v, causal=True)
    np.testing.assert_allclose(last_two.data, full.data[:, 4:], atol=1e-12)


def test_masked_keys_get_exactly_zero_weight_even_against_huge_scores():
    # A -1e4 fill would let a masked score of 1e5 win; -inf never does.
    q = mt.tensor(np.ones((1, 1, 1)))
    k = mt.tensor(np.array([[[1.0], [2e5]]]))
    v = mt.tensor(np.array([[[1.0], [100.0]]]))
    out, weights = sdpa(q, k, v, mask=np.array([[True, False]]))
    assert weights.data[0, 0, 1] == 0.0
    assert out.item() == 1.0


def test_fully_masked_row_gives_zeros_and_zero_gradient_not_nan():
    q, k, v = f64(2, 3, 4), f64(2, 5, 4), f64(2, 5, 4)
    allowed = np.ones((2, 3, 5), bool)
    allowed[1, 2] = False                        # batch 1, query 2: no key at all
    out, weights = sdpa(q, k, v, mask=allowed)
    assert np.isfinite(out.data).all() and np.isfinite(weights.data).all()
    np.testing.assert_array_equal(out.data[1, 2], 0)
    np.testing.assert_array_equal(weights.data[1, 2], 0)
    out.sum().backward()
    assert all(np.isfinite(t.grad).all() for t in (q, k, v))
    np.testing.assert_array_equal(q.grad[1, 2], 0)
    np.testing.assert_allclose(weights.data[0].sum(-1), 1)
    assert mt.gradcheck(lambda q, k, v: sdpa(q, k, v, mask=allowed)[0], [q, k, v])


def test_key_padding_mask_broadcasts_over_heads_and_queries():
    q, k, v = f64(2, 4, 3, 8), f64(2, 4, 5, 8), f64(2, 4, 5, 8)
    valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out, weights = sdpa(q, k, v, mask=valid[:, None, None, :])
    np.testing.assert_array_equal(weights.data[0, :, :, 3:], 0)
    short, _ = sdpa(q[:1], k[:1, :, :3], v[:1, :, :3])      # the padded keys removed
    np.testing.assert_allclose(out.data[:1], short.data, atol=1e-12)


def test_mask_errors_name_the_function_and_shapes():
    q = k = v = mt.randn(2, 3, 4)
    with pytest.raises(TypeError, match=r"scaled_dot_product_attention: mask must be "
                                        r"boolean .*int64"):
        sdpa(q, k, v, mask=np.ones((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"mask of shape \(4,\) does not broadcast .*"
                                         r"\(2, 3, 3\)"):
        sdpa(q, k, v, mask=np.ones(4, bool))
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: q \(2, 3, 4\) and "
                                         r"k \(2, 3, 5\)"):
        sdpa(q, mt.randn(2, 3, 5), v)


def test_gradcheck_attention_with_mask_and_causal():
    q, k, v = f64(2, 3, 4), f64(2, 4, 4), f64(2, 4, 2)
    valid = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], bool)[:, None, :]
    assert mt.gradcheck(lambda q, k, v: sdpa(q, k, v, mask=valid, causal=True)[0],
                        [q, k, v])


# ---------------------------------------------------------------------- multi-head
def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match=r"MultiHeadAttention: d_model=10 must split "
                                         r"evenly into n_heads=4 heads.*\[1, 2\]"):
        MultiHeadAttention(10, 4)


def test_multi_head_equals_one_attention_per_head():
    mha = MultiHeadAttention(12, 3)
    x = mt.randn(2, 5, 12)
    out = mha(x, causal=True)
    Q, K, V = (x.data @ W.weight.data + W.bias.data for W in (mha.W_q, mha.W_k, mha.W_v))
    heads = []
    for h in range(3):                             # the loop the module never runs
        cols = slice(4 * h, 4 * h + 4)
        head_out, _ = reference_attention(Q[..., cols], K[..., cols], V[..., cols],
                                          causal_mask(5, 5))
        heads.append(head_out)
    expected = np.concatenate(heads, axis=-1) @ mha.W_o.weight.data + mha.W_o.bias.data
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-5)
    assert mha.last_weights.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(mha.last_weights.data.sum(-1), 1, rtol=1e-5)


def test_cross_attention_uses_the_context_for_keys():
    mha = MultiHeadAttention(8, 2)
    x, memory = mt.randn(2, 3, 8), mt.randn(2, 7, 8)
    assert mha(x, context=memory).shape == (2, 3, 8)
    assert mha.last_weights.shape == (2, 2, 3, 7)


@settings(max_examples=10, deadline=None)
@given(permutation=st.permutations(range(6)))
def test_self_attention_without_positions_is_permutation_equivariant(permutation):
    mt.manual_seed(1)
    mha = MultiHeadAttention(8, 2)
    x = mt.randn(2, 6, 8, dtype=np.float64)
    float64_params(mha)
    out = mha(x).data
    permuted = mha(mt.tensor(x.data[:, list(permutation)])).data
    np.testing.assert_allclose(permuted, out[:, list(permutation)], atol=1e-10)


def test_positional_encoding_breaks_permutation_equivariance():
    mha, pe = MultiHeadAttention(8, 2), PositionalEncoding(8, max_len=16)
    x = mt.randn(1, 6, 8)
    permutation = [5, 4, 3, 2, 1, 0]
    out = mha(pe(x)).data
    permuted = mha(pe(mt.tensor(x.data[:, permutation]))).data
    assert not np.allclose(permuted, out[:, permutation], atol=1e-3)


@pytest.mark.parametrize("fast", [False, True])
def test_changing_future_tokens_leaves_past_outputs_unchanged(fast):
    # Bit for bit, on the composed and the fused path: no shift or sum that spans rows
    # may let a later query's scores touch an earlier query's rounding.
    mha = MultiHeadAttention(8, 2)
    x = mt.randn(2, 6, 8)
    changed = x.data.copy()
    changed[:, 4:] = 100 * np.random.default_rng(0).standard_normal((2, 2, 8))
    with mt.fast_paths(fast):
        before, after = mha(x, causal=True).data, mha(mt.tensor(changed), causal=True).data
    np.testing.assert_array_equal(before[:, :4], after[:, :4])
    assert not np.allclose(before[:, 4:], after[:, 4:])


def test_gradcheck_multi_head_attention_layer():
    mha = MultiHeadAttention(6, 2)
    params = float64_params(mha)
    x, memory = f64(2, 3, 6), f64(2, 4, 6)
    valid = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)[:, None, None, :]

    def layer(x, memory, *weights):
        bind(mha, weights)
        return mha(x, context=memory, mask=valid)
    assert mt.gradcheck(layer, [x, memory, *params])

    def causal_self(x, *weights):
        bind(mha, weights)
        return mha(x, causal=True)
    assert mt.gradcheck(causal_self, [x, *params])
