"""The fused attention path computes what the composed (teaching) form computes: forward,
weights and gradients, over boolean and float masks, padding, causal, grouped-query and
cached (one query, many keys) shapes; and it is one node, which modules run by default
(their fast forms) and the textbook forwards under `mt.fast_paths(False)`."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
from microtensor.autograd import topological_order
from transformer import (
    DecoderLM,
    LMConfig,
    MultiHeadAttention,
    fused_attention,
    scaled_dot_product_attention,
)
from transformer.attention import _check_qkv, attention_masks, weights_constant
from transformer.fast.attention import fused_self_attention


def fused_sdpa(q, k, v, mask=None, causal=False):
    """scaled_dot_product_attention as the fast forms run it: the same checks and masks,
    attention as one fused node, the weights a constant tensor."""
    _check_qkv(q, k, v)
    bias, allowed = attention_masks(mask, causal, q.shape, k.shape)
    kept = []
    out = fused_attention(q, k, v, bias, allowed=allowed, scale=1.0 / math.sqrt(q.shape[-1]),
                          keep_weights=kept)
    return out, weights_constant(kept.pop())


def sdpa(fused):
    """scaled_dot_product_attention, composed (the textbook function) or fused."""
    return fused_sdpa if fused else scaled_dot_product_attention


def both_paths(fn, tensors):
    """fn(fused) run composed (under mt.fast_paths(False)), then fused (the default):
    [(output arrays..., input grads...)] for each."""
    results = []
    for fused in (False, True):
        for t in tensors:
            t.grad = None
        with mt.fast_paths(fused):
            out, weights = fn(fused)
        projection = np.random.default_rng(0).standard_normal(out.shape)
        (out * projection).sum().backward()
        results.append([out.data, weights.data] + [t.grad for t in tensors])
    return results


def assert_paths_agree(fn, tensors, atol=1e-10):
    composed, fused = both_paths(fn, tensors)
    for a, b in zip(composed, fused):
        np.testing.assert_allclose(b, a, atol=atol, rtol=1e-9)


def qkv(rng, batch, n_q, n_k, d_k, d_v=None, heads=()):
    def make(*shape):
        return mt.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
    return (make(batch, *heads, n_q, d_k), make(batch, *heads, n_k, d_k),
            make(batch, *heads, n_k, d_v or d_k))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), heads=st.sampled_from([(), (1,), (2,)]),
       n_q=st.integers(1, 5), n_k=st.integers(1, 5), d_k=st.integers(1, 5),
       d_v=st.integers(1, 4), causal=st.booleans(),
       mask_kind=st.sampled_from(["none", "bool", "padding", "float"]),
       seed=st.integers(0, 2**16))
def test_fused_equals_composed_over_shapes_and_masks(batch, heads, n_q, n_k, d_k, d_v,
                                                     causal, mask_kind, seed):
    rng = np.random.default_rng(seed)
    q, k, v = qkv(rng, batch, n_q, n_k, d_k, d_v, heads)
    scores_shape = (batch, *heads, n_q, n_k)
    mask = None
    if mask_kind == "bool":      # some rows may lose every key: zeros, not NaN, both ways
        mask = rng.random(scores_shape) > 0.4
    elif mask_kind == "padding":  # (B, Tk) key padding, broadcast over heads and queries
        valid = rng.random((batch, n_k)) > 0.3
        mask = valid.reshape(batch, *([1] * len(heads)), 1, n_k)
    elif mask_kind == "float":   # a bias with some -inf entries, as PyTorch's float mask
        mask = rng.standard_normal(scores_shape)
        mask[rng.random(scores_shape) > 0.7] = -np.inf
    assert_paths_agree(lambda fused: sdpa(fused)(q, k, v, mask=mask, causal=causal),
                       [q, k, v])


@pytest.mark.parametrize("dtype,above", [(np.float32, 100.0), (np.float64, 800.0)])
@pytest.mark.parametrize("causal", [False, True])
def test_a_score_far_above_its_rows_diagonal_still_gives_the_softmax(dtype, above, causal):
    # The fused softmax shifts each row by its own diagonal score q_i . k_i. Where another
    # key scores more than exp's range above it (88 in float32, 709 in float64), exp
    # overflows, and that row alone must be redone with its max: the same weights as the
    # composed path, nothing infinite or NaN, and the other rows untouched.
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)).astype(dtype) for _ in range(3))
    q[1, 2, 3] = np.array([3.0, 0, 0, 0], dtype)
    k[1, 2, 3] = np.array([-3.0, 0, 0, 0], dtype)    # query 3's own score: -9 * scale
    k[1, 2, 1] = np.array([2 * above, 0, 0, 0], dtype)  # key 1's: 6 * above * scale
    tensors = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
    composed, fused = both_paths(
        lambda fused: sdpa(fused)(*tensors, causal=causal), tensors)
    for a, b in zip(composed, fused):
        assert np.isfinite(b).all()
        # (scores near 100 carry rounding errors near 100 ulps through exp, on both paths)
        tolerance = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(b, a, atol=tolerance, rtol=tolerance)
    assert fused[1][1, 2, 3, 1] == pytest.approx(1.0)     # that row's weight is all on key 1


def test_a_float_mask_tensor_gets_the_same_gradient():
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, 2, 3, 4, 5)
    bias = mt.tensor(rng.standard_normal((1, 3, 4)), dtype=np.float64, requires_grad=True)
    assert_paths_agree(lambda fused: sdpa(fused)(q, k, v, mask=bias), [q, k, v, bias])


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_fused_gradcheck(mask_kind):
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, 2, 3, 4, 3, heads=(2,))
    allowed = rng.random((2, 2, 3, 4)) > 0.3
    allowed[0, 0, 1] = False  # a row with no key
    bias = None if mask_kind == "none" else (
        allowed if mask_kind == "bool" else np.where(allowed, rng.standard_normal(allowed.shape),
                                                     -np.inf))
    assert mt.gradcheck(lambda q, k, v: fused_sdpa(q, k, v, mask=bias, causal=True)[0],
                        [q, k, v])


def test_fused_primitive_gradcheck_with_a_bias_input():
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, 2, 3, 5, 4)
    bias = mt.tensor(rng.standard_normal((3, 5)), dtype=np.float64, requires_grad=True)
    allowed = rng.random((2, 3, 5)) > 0.3
    assert mt.gradcheck(lambda q, k, v, b: fused_attention(q, k, v, b, allowed=allowed,
                                                           scale=0.5), [q, k, v, bias])


def test_fused_is_one_node_and_the_textbook_function_is_the_composed_graph():
    q, k, v = qkv(np.random.default_rng(4), 1, 3, 3, 2)
    out, weights = scaled_dot_product_attention(q, k, v, causal=True)
    assert out.op.name == "matmul" and weights.name == "weights" and weights.op is not None
    mha = MultiHeadAttention(4, 2)
    x = mt.randn(1, 3, 4)

    def attention_node(out):     # W_o's input: the fused node, or merge_heads' reshape
        return out.op.inputs[0].op.name
    assert mt.is_fast_enabled() and attention_node(mha(x, causal=True)) == "self_attention"
    with mt.fast_paths(False):
        assert not mt.is_fast_enabled()
        assert attention_node(mha(x, causal=True)) == "reshape"
        with mt.fast_paths(True):   # nested: the inner choice wins, then the outer resumes
            assert attention_node(mha(x, causal=True)) == "self_attention"
        assert attention_node(mha(x, causal=True)) == "reshape"
    assert mt.is_fast_enabled() and attention_node(mha(x, causal=True)) == "self_attention"
    out, weights = fused_sdpa(q, k, v, causal=True)
    assert out.op.name == "attention" and [i for i in out.op.inputs[:3]] == [q, k, v]
    assert weights.name == "weights" and weights.op is None and not weights.requires_grad
    np.testing.assert_allclose(weights.data.sum(-1), 1)


def test_the_returned_weights_share_the_ops_array_read_only():
    # No copy is made, so the array the backward reads must not be writable from outside.
    q, k, v = qkv(np.random.default_rng(4), 1, 3, 3, 2)
    out, weights = fused_sdpa(q, k, v, causal=True)
    with pytest.raises(ValueError, match="read-only"):
        weights.data[...] = 0
    out.sum().backward()
    composed_grads = q.grad.copy()
    q.grad = k.grad = v.grad = None
    scaled_dot_product_attention(q, k, v, causal=True)[0].sum().backward()
    np.testing.assert_allclose(q.grad, composed_grads, atol=1e-12)


def test_dropout_while_training_keeps_the_composed_form():
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    out = mha(mt.randn(1, 3, 8), causal=True)          # the default: fast paths on
    names = [t.op.name for t in topological_order(out) if t.op is not None]
    assert "dropout" in names and "softmax" in names
    assert "attention" not in names and "self_attention" not in names
    with mt.dropout_off():                              # nothing drawn: fused again
        out = mha(mt.randn(1, 3, 8), causal=True)
    assert out.op.inputs[0].op.name == "self_attention"


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_multi_head_attention_agrees_and_keeps_last_weights(n_kv_heads):
    mt.manual_seed(6)
    mha = MultiHeadAttention(d_model=16, n_heads=4, n_kv_heads=n_kv_heads)
    for p in mha.parameters():
        p.data = p.data.astype(np.float64)
    x = mt.tensor(np.random.default_rng(6).standard_normal((2, 5, 16)), requires_grad=True)
    valid = np.array([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]

    def run(fused):
        out = mha(x, mask=valid, causal=True)
        return out, mha.last_weights
    assert_paths_agree(run, [x, *mha.parameters()])
    assert mha.last_weights.shape == (2, 4, 5, 5)


@pytest.mark.parametrize("style,n_kv_heads", [("gpt", None), ("llama", 2)])
def test_cached_decoding_and_training_agree(style, n_kv_heads):
    mt.manual_seed(7)
    lm = DecoderLM(LMConfig(vocab=20, d_model=16, n_heads=4, n_layers=2, max_len=32,
                            style=style, n_kv_heads=n_kv_heads))
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    with mt.fast_paths(False):
        composed = lm.generate(prompt, max_new_tokens=6, temperature=0, return_logits=True)
    fused = lm.generate(prompt, max_new_tokens=6, temperature=0, return_logits=True)
    np.testing.assert_array_equal(fused[0], composed[0])
    np.testing.assert_allclose(fused[1], composed[1], atol=1e-4)
    # one training step's gradients
    grads = []
    for on in (False, True):
        lm.zero_grad()
        with mt.fast_paths(on):
            lm(prompt).sum().backward()
        grads.append([p.grad.copy() for p in lm.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("fast", [False, True])
def test_fused_path_checks_masks_as_the_composed_one(fast):
    q, k, v = qkv(np.random.default_rng(8), 2, 3, 4, 2)
    with pytest.raises(ValueError, match="does not broadcast"):
        sdpa(fast)(q, k, v, mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        sdpa(fast)(q, k, v, mask=np.ones((3, 4), dtype=np.int64))
    mha, x = MultiHeadAttention(4, 2), mt.randn(2, 3, 4)   # the modules' forms, the same
    with mt.fast_paths(fast), pytest.raises(ValueError, match="does not broadcast"):
        mha(x, mask=np.ones((2, 2), dtype=bool))
    with mt.fast_paths(fast), pytest.raises(TypeError, match="boolean"):
        mha(x, mask=np.ones((3, 3), dtype=np.int64))


# ------------------------------------------------ packed self-attention (one GEMM for Q, K, V)

def float64_mha(seed, d_model, n_heads, n_kv_heads, bias):
    mt.manual_seed(seed)
    mha = MultiHeadAttention(d_model, n_heads, n_kv_heads=n_kv_heads, bias=bias)
    for p in mha.parameters():
        p.data = p.data.astype(np.float64)
    return mha


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 5),
       heads=st.sampled_from([(1, 1), (2, 2), (4, 4), (4, 2), (4, 1)]), d_k=st.integers(1, 3),
       bias=st.booleans(), causal=st.booleans(),
       mask_kind=st.sampled_from(["none", "bool", "padding", "float"]),
       seed=st.integers(0, 2**16))
def test_packed_self_attention_equals_the_composed_module(batch, length, heads, d_k, bias,
                                                          causal, mask_kind, seed):
    n_heads, n_kv_heads = heads
    mha = float64_mha(seed, n_heads * d_k, n_heads, n_kv_heads, bias)
    rng = np.random.default_rng(seed)
    x = mt.tensor(rng.standard_normal((batch, length, n_heads * d_k)), requires_grad=True)
    scores_shape = (batch, n_heads, length, length)
    mask = None
    if mask_kind == "bool":      # some query rows may lose every key
        mask = rng.random(scores_shape) > 0.4
    elif mask_kind == "padding":
        mask = (rng.random((batch, length)) > 0.3)[:, None, None, :]
    elif mask_kind == "float":
        mask = rng.standard_normal((1, n_heads, length, length))
        mask[rng.random(mask.shape) > 0.7] = -np.inf

    def run(fused):
        return mha(x, mask=mask, causal=causal), mha.last_weights
    assert_paths_agree(run, [x, *mha.parameters()])


def test_packed_self_attention_is_three_nodes_and_the_projections_keep_their_grads():
    mha = float64_mha(9, 8, 4, 2, True)
    x = mt.tensor(np.random.default_rng(9).standard_normal((2, 3, 8)), requires_grad=True)
    out = mha(x, causal=True)                          # the default: fast paths on
    attention = out.op.inputs[0].op
    assert out.op.name == "linear" and attention.name == "self_attention"
    qkv = attention.inputs[0].op
    assert qkv.name == "linear" and [i.op.name for i in qkv.inputs[1:]] == ["concat", "concat"]
    out.sum().backward()
    for projection in (mha.W_q, mha.W_k, mha.W_v, mha.W_o):
        assert projection.weight.grad.shape == projection.weight.shape
        assert projection.bias.grad.shape == projection.bias.shape
    assert mha.last_weights.shape == (2, 4, 3, 3) and mha.last_weights.op is None


@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_packed_primitive_gradcheck_with_masks_and_a_bias_input(n_kv_heads):
    rng = np.random.default_rng(10)
    n_heads, d_k, length = 2, 2, 4
    qkv = mt.tensor(rng.standard_normal((2, length, (n_heads + 2 * n_kv_heads) * d_k)),
                    requires_grad=True)
    bias = mt.tensor(rng.standard_normal((1, n_heads, length, length)), requires_grad=True)
    allowed = rng.random((2, 1, length, length)) > 0.3
    allowed[1, 0, 2] = False  # a query with no key: zero output, zero gradient
    assert mt.gradcheck(lambda qkv, bias: fused_self_attention(
        qkv, bias, n_heads=n_heads, n_kv_heads=n_kv_heads, allowed=allowed, scale=0.7),
        [qkv, bias])


def test_dropout_while_training_keeps_the_separate_projections():
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    with mt.fast_paths(True):
        out = mha(mt.randn(1, 3, 8), causal=True)
        assert out.op.inputs[0].op.name != "self_attention"
        mha.eval()
        assert mha(mt.randn(1, 3, 8), causal=True).op.inputs[0].op.name == "self_attention"


def float64_lm(seed, **options):
    mt.manual_seed(seed)
    model = DecoderLM(LMConfig.gpt2(vocab=11, d_model=8, n_heads=2, n_layers=2, d_ff=16,
                                    max_len=6, **options))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model


def lm_logits_and_grads(model, ids, fast):
    model.zero_grad()
    with mt.fast_paths(fast):
        logits = model(ids)
    (logits * np.random.default_rng(1).standard_normal(logits.shape)).sum().backward()
    return logits, [logits.data] + [p.grad for p in model.parameters()]


def test_a_whole_model_on_fast_paths_folds_its_norms_and_agrees():
    model = float64_lm(11)
    ids = np.random.default_rng(11).integers(0, 11, (2, 6))
    _, composed = lm_logits_and_grads(model, ids, fast=False)
    logits, fast = lm_logits_and_grads(model, ids, fast=True)
    for a, b in zip(composed, fast):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    names = [t.op.name for t in topological_order(logits) if t.op is not None]
    # Each block's LayerNorms are folded away: norm1 into Q/K/V, norm2 into its one
    # feed_forward node; the final LayerNorm, before the head, is the one layer_norm left.
    assert names.count("layer_norm_linear") == 2 and names.count("feed_forward") == 2
    assert names.count("layer_norm") == 1


@pytest.mark.parametrize("watched", ["blocks.0.norm1", "blocks.1.self_attn.W_k",
                                     "blocks.0.ffn.W_1", "norm", "blocks.0.self_attn",
                                     "blocks.1.ffn"])
def test_a_forward_hook_on_fast_paths_sees_what_it_sees_on_textbook_ones(watched):
    model = float64_lm(12)
    ids = np.random.default_rng(12).integers(0, 11, (2, 6))
    seen = {True: [], False: []}
    dict(model.named_modules())[watched].register_forward_hook(
        lambda module, inputs, output: seen[mt.is_fast_enabled()].append(
            [inputs[0].data, output.data]))
    _, composed = lm_logits_and_grads(model, ids, fast=False)
    _, fast = lm_logits_and_grads(model, ids, fast=True)
    assert seen[True], f"the hook on {watched} did not run"
    for a, b in zip(composed + seen[False][0], fast + seen[True][0]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
