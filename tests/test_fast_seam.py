"""The one seam for speed (`microtensor.nn.fast_form`, `transformer.fast`): each fused
primitive equals the textbook reference it names, forward and backward; a DecoderLM is
fast by default and gives the same logits and gradients as its textbook forwards
(`mt.fast_paths(False)`); `mt.textbook_graph` opens every fused node; hooks still see
their modules; the modes are per thread; and a block the fast decoder does not know
(a GPT-J style parallel block) still decodes with a cache through its own forward."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
import microtensor.functional as F
from microtensor import nn
from microtensor.autograd import topological_order
from microtensor.nn import LayerNorm, Module, ModuleList
from microtensor.ops.neural import layer_norm_linear_reference
from transformer import DecoderLM, FeedForward, LMConfig, MultiHeadAttention, SwiGLU
from transformer.fast.attention import (
    fused_attention,
    fused_attention_reference,
    fused_self_attention,
    fused_self_attention_reference,
)
from transformer.fast.decode import BlockForward
from transformer.fast.feed_forward import fused_feed_forward, fused_feed_forward_reference

FUSED = {"attention", "self_attention", "layer_norm_linear", "feed_forward"}


def leaf(rng, *shape):
    return mt.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)


def op_names(root):
    return [t.op.name for t in topological_order(root, every_input=True) if t.op is not None]


def fused_nodes(root):
    return [t.op.name for t in topological_order(root, every_input=True)
            if t.op is not None and t.op.reference is not None]


def grads_of(out, tensors, projection):
    """The gradients of sum(out * projection) with respect to `tensors` (fresh)."""
    for t in tensors:
        t.grad = None
    (out * projection).sum().backward(retain_graph=True)
    return [None if t.grad is None else t.grad.copy() for t in tensors]


def assert_node_equals_its_reference(out, tensors, atol=1e-10):
    """`out`, made by one fused node, against `out.op.reference` run on the same inputs
    and config: the same values, and the same gradients for `tensors`."""
    node = out.op
    assert node.reference is not None
    with mt.enable_grad():
        reference = node.reference(*node.inputs, **node.config)
    assert all(t.op is None or t.op.reference is None
               for t in topological_order(reference, every_input=True))
    np.testing.assert_allclose(out.data, reference.data, atol=atol, rtol=1e-9)
    projection = np.random.default_rng(0).standard_normal(out.shape)
    fused_grads = grads_of(out, tensors, projection)
    reference_grads = grads_of(reference, tensors, projection)
    for tensor, a, b in zip(tensors, fused_grads, reference_grads):
        assert a is not None and b is not None, tensor.shape
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-9)


def draw_masks(rng, kind, scores_shape, n_keys, empty_row=True):
    """(bias or None, allowed or None) over scores of `scores_shape`; `empty_row` blocks
    every key of one query (zero weights, zero output, zero gradient)."""
    bias = allowed = None
    if kind in ("bool", "both"):
        allowed = rng.random(scores_shape) > 0.3
        if empty_row:
            allowed[(0,) * (len(scores_shape) - 1)] = False
    elif kind == "padding":
        allowed = (rng.random((scores_shape[0], n_keys)) > 0.3).reshape(
            scores_shape[0], *([1] * (len(scores_shape) - 2)), n_keys)
        if empty_row:
            allowed[0] = False
    if kind in ("float", "both"):
        bias = rng.standard_normal(scores_shape)
    return bias, allowed


# ------------------------------------------------------------ fused primitives vs references

def test_fused_primitives_name_their_references():
    assert fused_attention.reference is fused_attention_reference
    assert fused_self_attention.reference is fused_self_attention_reference
    assert F.layer_norm_linear.reference is layer_norm_linear_reference
    assert fused_feed_forward.reference is fused_feed_forward_reference
    q = mt.randn(1, 2, 3, requires_grad=True)
    assert fused_attention(q, q, q).op.reference is fused_attention_reference


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), heads=st.sampled_from([(), (1,), (2,)]),
       n_q=st.integers(1, 5), n_k=st.integers(1, 5), d_k=st.integers(1, 4),
       d_v=st.integers(1, 4), mask=st.sampled_from(["none", "bool", "padding", "float", "both"]),
       bias_grad=st.booleans(), scale=st.sampled_from([1.0, 0.5, 0.37]),
       seed=st.integers(0, 2**16))
def test_fused_attention_equals_its_reference(batch, heads, n_q, n_k, d_k, d_v, mask,
                                              bias_grad, scale, seed):
    rng = np.random.default_rng(seed)
    q, k = leaf(rng, batch, *heads, n_q, d_k), leaf(rng, batch, *heads, n_k, d_k)
    v = leaf(rng, batch, *heads, n_k, d_v)
    scores_shape = (batch, *heads, n_q, n_k)
    bias, allowed = draw_masks(rng, mask, scores_shape, n_k)
    tensors = [q, k, v]
    if bias is not None and bias_grad:
        bias = mt.tensor(bias, requires_grad=True)
        tensors.append(bias)
    out = fused_attention(q, k, v, bias, allowed=allowed, scale=scale)
    assert out.op.name == "attention"
    assert_node_equals_its_reference(out, tensors)
    assert np.isfinite(out.data).all()


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 5),
       heads=st.sampled_from([(1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (3, 3)]),
       d_k=st.integers(1, 3), mask=st.sampled_from(["none", "bool", "padding", "float", "both"]),
       causal=st.booleans(), scale=st.sampled_from([1.0, 0.6]), seed=st.integers(0, 2**16))
def test_fused_self_attention_equals_its_reference(batch, length, heads, d_k, mask, causal,
                                                   scale, seed):
    n_heads, n_kv_heads = heads
    rng = np.random.default_rng(seed)
    qkv = leaf(rng, batch, length, (n_heads + 2 * n_kv_heads) * d_k)
    scores_shape = (batch, n_heads, length, length)
    bias, allowed = draw_masks(rng, mask, scores_shape, length)
    if causal:
        lower = np.tril(np.ones((length, length), bool))
        allowed = lower if allowed is None else allowed & lower
    tensors = [qkv]
    if bias is not None:
        bias = mt.tensor(bias, requires_grad=True)
        tensors.append(bias)
    out = fused_self_attention(qkv, bias, n_heads=n_heads, n_kv_heads=n_kv_heads,
                               allowed=allowed, scale=scale)
    assert out.op.name == "self_attention" and out.shape == (batch, length, n_heads * d_k)
    assert_node_equals_its_reference(out, tensors)


def test_a_query_with_no_key_gets_zero_output_and_sends_no_gradient():
    rng = np.random.default_rng(1)
    n_heads, n_kv_heads, d_k, length = 4, 2, 2, 3
    qkv = leaf(rng, 1, length, (n_heads + 2 * n_kv_heads) * d_k)
    allowed = np.ones((1, n_heads, length, length), bool)
    allowed[0, :, 1] = False                 # query 1 sees no key in any head
    out = fused_self_attention(qkv, n_heads=n_heads, n_kv_heads=n_kv_heads, allowed=allowed)
    np.testing.assert_array_equal(out.data[0, 1], 0)
    assert_node_equals_its_reference(out, [qkv])
    qkv.grad = None
    out[:, 1].sum().backward()
    np.testing.assert_array_equal(qkv.grad, 0)


@settings(max_examples=25, deadline=None)
@given(lead=st.sampled_from([(1,), (3,), (2, 3), (1, 2, 2)]), d=st.integers(1, 5),
       out_features=st.integers(1, 4), with_bias=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-3]), seed=st.integers(0, 2**16))
def test_layer_norm_linear_equals_its_reference(lead, d, out_features, with_bias, eps, seed):
    rng = np.random.default_rng(seed)
    x = leaf(rng, *lead, d)
    norm_weight, norm_bias = leaf(rng, d), leaf(rng, d)
    weight = leaf(rng, d, out_features)
    bias = leaf(rng, out_features) if with_bias else None
    out = F.layer_norm_linear(x, norm_weight, norm_bias, weight, bias, eps=eps)
    assert out.op.name == "layer_norm_linear" and out.shape == (*lead, out_features)
    expected = layer_norm_linear_reference(x, norm_weight, norm_bias, weight, bias, eps=eps)
    np.testing.assert_allclose(out.data, expected.data, atol=1e-10, rtol=1e-9)
    tensors = [x, norm_weight, norm_bias, weight] + ([bias] if with_bias else [])
    assert_node_equals_its_reference(out, tensors)


@settings(max_examples=25, deadline=None)
@given(lead=st.sampled_from([(1,), (3,), (2, 3), (1, 2, 2)]), d=st.integers(1, 5),
       d_ff=st.integers(1, 6), out_features=st.integers(1, 4),
       biases=st.sampled_from([(True, True), (False, True), (True, False), (False, False)]),
       eps=st.sampled_from([1e-5, 1e-3]), seed=st.integers(0, 2**16))
def test_fused_feed_forward_equals_its_reference(lead, d, d_ff, out_features, biases, eps,
                                                 seed):
    rng = np.random.default_rng(seed)
    x, norm_weight, norm_bias = leaf(rng, *lead, d), leaf(rng, d), leaf(rng, d)
    W_1, W_2 = leaf(rng, d, d_ff), leaf(rng, d_ff, out_features)
    b_1 = leaf(rng, d_ff) if biases[0] else None
    b_2 = leaf(rng, out_features) if biases[1] else None
    out = fused_feed_forward(x, norm_weight, norm_bias, W_1, b_1, W_2, b_2, eps=eps)
    assert out.op.name == "feed_forward" and out.shape == (*lead, out_features)
    tensors = [t for t in (x, norm_weight, norm_bias, W_1, b_1, W_2, b_2) if t is not None]
    assert_node_equals_its_reference(out, tensors)


@pytest.mark.parametrize("with_biases", [False, True])
def test_gradcheck_fused_feed_forward(with_biases):
    rng = np.random.default_rng(5)
    x, w, b, W_1, W_2 = (leaf(rng, 2, 3, 4), leaf(rng, 4), leaf(rng, 4), leaf(rng, 4, 6),
                         leaf(rng, 6, 3))
    b_1, b_2 = (leaf(rng, 6), leaf(rng, 3)) if with_biases else (None, None)
    inputs = [t for t in (x, w, b, W_1, b_1, W_2, b_2) if t is not None]

    def feed_forward(x, w, b, W_1, *rest):
        b_1, W_2, b_2 = rest if with_biases else (None, rest[0], None)
        return fused_feed_forward(x, w, b, W_1, b_1, W_2, b_2, eps=1e-5)
    assert mt.gradcheck(feed_forward, inputs)


def test_fused_feed_forward_keeps_float32_and_words_bad_weights():
    x = mt.randn(2, 3, 4)
    w, b, W_1, W_2 = mt.ones(4), mt.zeros(4), mt.randn(4, 8), mt.randn(8, 4)
    assert fused_feed_forward(x, w, b, W_1, None, W_2, None).dtype == np.float32
    with pytest.raises(ValueError, match=r"feed_forward: W_2 \(4, 8\) .* d_ff = 8"):
        fused_feed_forward(x, w, b, W_1, None, W_2.T, None)
    with pytest.raises(TypeError, match="feed_forward: norm_weight and norm_bias"):
        fused_feed_forward(x, None, b, W_1, None, W_2, None)


@pytest.mark.parametrize("mask", ["none", "bool", "float"])
def test_gradcheck_fused_attention(mask):
    rng = np.random.default_rng(2)
    q, k, v = leaf(rng, 2, 2, 3, 3), leaf(rng, 2, 2, 4, 3), leaf(rng, 2, 2, 4, 2)
    bias, allowed = draw_masks(rng, "both" if mask == "float" else mask, (2, 2, 3, 4), 4)
    inputs = [q, k, v]
    if bias is not None:
        inputs.append(mt.tensor(bias, requires_grad=True))
    assert mt.gradcheck(lambda *t: fused_attention(*t, allowed=allowed, scale=0.6), inputs)


@pytest.mark.parametrize("n_kv_heads", [2, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gradcheck_fused_self_attention(n_kv_heads, with_bias):
    rng = np.random.default_rng(3)
    n_heads, d_k, length = 2, 2, 4
    qkv = leaf(rng, 2, length, (n_heads + 2 * n_kv_heads) * d_k)
    bias, allowed = draw_masks(rng, "both" if with_bias else "bool",
                               (2, n_heads, length, length), length)
    allowed &= np.tril(np.ones((length, length), bool))
    inputs = [qkv] + ([mt.tensor(bias, requires_grad=True)] if with_bias else [])
    assert mt.gradcheck(lambda *t: fused_self_attention(
        *t, n_heads=n_heads, n_kv_heads=n_kv_heads, allowed=allowed, scale=0.7), inputs)


@pytest.mark.parametrize("with_bias", [False, True])
def test_gradcheck_layer_norm_linear(with_bias):
    rng = np.random.default_rng(4)
    inputs = [leaf(rng, 2, 3, 5), leaf(rng, 5), leaf(rng, 5), leaf(rng, 5, 4)]
    if with_bias:
        inputs.append(leaf(rng, 4))
    assert mt.gradcheck(lambda *t: F.layer_norm_linear(*t, eps=1e-5), inputs)


# ------------------------------------------------------------ a whole model, both modes

def float64_lm(style, seed=0, **options):
    mt.manual_seed(seed)
    extra = {"n_kv_heads": 2} if style == "llama" else {}
    model = DecoderLM(LMConfig(vocab=13, d_model=16, n_heads=4, n_layers=2, max_len=8,
                               style=style, **extra, **options))
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        p.data = p.data.astype(np.float64)
        if p.data.ndim == 1:     # norms' weights and biases not 1 and 0: folding them shows
            p.data += rng.normal(0, 0.3, p.shape)
    return model


def padded_batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 13, (3, 7))
    mask = np.ones(ids.shape, bool)
    mask[1, :2] = False           # left padding
    mask[2, :5] = False
    return np.where(mask, ids, 0), mask


def loss_of(model, ids, mask):
    logits = model(ids, attention_mask=mask)
    projection = np.random.default_rng(5).standard_normal(logits.shape)
    return logits, (logits * (projection * mask[..., None])).sum()


def parameter_grads(model, loss):
    """(the graph is kept: a textbook graph shares the nodes no fused node feeds)"""
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {name: p.grad.copy() for name, p in model.named_parameters()}


STYLES = {"gpt": "self_attention", "llama": "attention"}


@pytest.mark.parametrize("style", STYLES)
def test_decoder_lm_is_fast_by_default_and_agrees_with_its_textbook_forwards(style):
    model = float64_lm(style)
    ids, mask = padded_batch()
    assert mt.is_fast_enabled()
    fast_logits, fast_loss = loss_of(model, ids, mask)
    fast_grads = parameter_grads(model, fast_loss)
    with mt.fast_paths(False):
        assert not mt.is_fast_enabled()
        slow_logits, slow_loss = loss_of(model, ids, mask)
    slow_grads = parameter_grads(model, slow_loss)
    assert mt.is_fast_enabled()

    fast_names, slow_names = op_names(fast_loss), op_names(slow_loss)
    assert fast_names.count(STYLES[style]) == 2 and "softmax" not in fast_names
    if style == "gpt":     # each block's LayerNorms folded into Q/K/V, and its FFN one node
        assert fast_names.count("layer_norm_linear") == 2
        assert fast_names.count("feed_forward") == 2 and "gelu" not in fast_names
    assert "softmax" in slow_names and not FUSED & set(slow_names)
    assert not fused_nodes(slow_loss)

    np.testing.assert_allclose(fast_logits.data, slow_logits.data, rtol=1e-9, atol=1e-11)
    assert fast_grads.keys() == slow_grads.keys()
    for name in fast_grads:
        assert np.abs(slow_grads[name]).max() > 0 or name.endswith("bias"), name
        np.testing.assert_allclose(fast_grads[name], slow_grads[name], rtol=1e-9,
                                   atol=1e-11, err_msg=name)


def test_the_feed_forward_is_one_node_only_where_nothing_is_drawn_or_watched():
    model = float64_lm("gpt", dropout=0.5).train()
    ids, mask = padded_batch()
    drawing = op_names(loss_of(model, ids, mask)[1])          # dropout draws: no fused FFN
    assert "feed_forward" not in drawing and "gelu" in drawing and "dropout" in drawing
    with mt.dropout_off():
        assert op_names(loss_of(model, ids, mask)[1]).count("feed_forward") == 2
        with model.blocks[0].ffn.W_2.register_forward_hook(lambda *args: None):
            assert op_names(loss_of(model, ids, mask)[1]).count("feed_forward") == 1


@pytest.mark.parametrize("style", STYLES)
def test_textbook_graph_opens_every_fused_node_and_gives_the_same_gradients(style):
    model = float64_lm(style, seed=1)
    ids, mask = padded_batch(1)
    _, loss = loss_of(model, ids, mask)
    assert fused_nodes(loss)
    opened = mt.textbook_graph(loss)
    assert opened is not loss
    names = op_names(opened)
    assert not fused_nodes(opened) and not FUSED & set(names)
    assert "softmax" in names
    np.testing.assert_allclose(opened.data, loss.data, rtol=1e-10)
    # the same leaves: the parameters
    params = {id(p) for p in model.parameters()}
    leaves = {id(t) for t in topological_order(opened, every_input=True) if t.op is None}
    assert params <= leaves
    opened_grads = parameter_grads(model, opened)
    fused_grads = parameter_grads(model, loss)
    for name in fused_grads:
        np.testing.assert_allclose(opened_grads[name], fused_grads[name], rtol=1e-9,
                                   atol=1e-11, err_msg=name)


def test_textbook_graph_of_an_unfused_graph_is_itself():
    x = mt.randn(2, 3, requires_grad=True)
    loss = (x * x).softmax(axis=-1).sum()
    assert mt.textbook_graph(loss) is loss


# ------------------------------------------------------------ hooks

@pytest.mark.parametrize("watched", ["blocks.0.self_attn.W_q", "blocks.0.norm1"])
def test_a_forward_hook_sees_its_module_in_default_mode(watched):
    model = float64_lm("gpt", seed=2)
    ids, mask = padded_batch(2)
    plain = model(ids, attention_mask=mask).data
    with mt.fast_paths(False):
        textbook = model(ids, attention_mask=mask).data
    module = dict(model.named_modules())[watched]
    seen = []

    def hook(mod, inputs, output):
        seen.append((mod, inputs[0].data.copy(), output.data.copy()))
    with module.register_forward_hook(hook):
        assert mt.is_fast_enabled()
        hooked_logits, hooked_loss = loss_of(model, ids, mask)
    assert len(seen) == 1 and seen[0][0] is module
    assert seen[0][1].shape == (3, 7, 16)
    expected = seen[0][1] @ module.weight.data + module.bias.data \
        if watched.endswith("W_q") else None
    if expected is not None:
        np.testing.assert_allclose(seen[0][2], expected, rtol=1e-12)
    np.testing.assert_allclose(hooked_logits.data, plain, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(hooked_logits.data, textbook, rtol=1e-9, atol=1e-11)
    # the rest of the model still runs fast
    assert "attention" in op_names(hooked_loss) or "self_attention" in op_names(hooked_loss)
    model(ids, attention_mask=mask)
    assert len(seen) == 1                       # removed: not called again


# ------------------------------------------------------------ per-thread modes

def test_fast_paths_and_dropout_off_are_per_thread():
    seen = {}
    mha = MultiHeadAttention(8, 2)
    x = mt.randn(1, 3, 8)

    def other_thread():
        seen["fast"], seen["dropout"] = mt.is_fast_enabled(), mt.is_dropout_enabled()
        seen["node"] = mha(x, causal=True).op.inputs[0].op.name
        with mt.fast_paths(False), mt.dropout_off():
            seen["inner"] = mt.is_fast_enabled(), mt.is_dropout_enabled()
    with mt.fast_paths(False), mt.dropout_off():
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert not mt.is_fast_enabled() and not mt.is_dropout_enabled()
        assert mha(x, causal=True).op.inputs[0].op.name == "reshape"   # textbook here
    assert seen == {"fast": True, "dropout": True, "node": "self_attention",
                    "inner": (False, False)}
    assert mt.is_fast_enabled() and mt.is_dropout_enabled()


def test_dropout_off_leaves_training_and_other_threads_alone():
    layer = mt.nn.Dropout(0.5)
    x = mt.ones(2000)
    other = {}

    def other_thread():
        other["dropped"] = float((layer(x).data == 0).mean())
    with mt.dropout_off():
        assert layer.training
        np.testing.assert_array_equal(layer(x).data, 1)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert 0.4 < other["dropped"] < 0.6


# ------------------------------------------------------------ a block the decoder does not know

class ParallelBlock(Module):
    """A GPT-J style block: attention and feed-forward side by side on one LayerNorm,
    x + attn(ln(x)) + ffn(ln(x)). Written here, with the modules `transformer` has."""

    def __init__(self, d_model, n_heads, d_ff):
        super().__init__()
        self.ln = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff)

    def forward(self, x, mask=None, causal=False, cache=None):
        h = self.ln(x)
        self_cache = None if cache is None else cache.self_attn
        return x + self.attn(h, mask=mask, causal=causal, cache=self_cache) + self.ffn(h)


def parallel_lm(seed=0):
    mt.manual_seed(seed)
    model = DecoderLM(LMConfig.gpt2(vocab=17, d_model=16, n_heads=4, n_layers=2, d_ff=32,
                                    max_len=16))
    model.blocks = ModuleList(ParallelBlock(16, 4, 32) for _ in range(2))
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        if p.data.ndim == 1:
            p.data += rng.normal(0, 0.3, p.shape).astype(p.dtype)
    return model.eval()


def test_a_custom_parallel_block_decodes_the_same_with_and_without_a_cache():
    model = parallel_lm()
    assert all(type(block) is ParallelBlock for block in model.blocks)
    prompt = np.array([[3, 4, 5, 6], [7, 8, 9, 10]])
    cached, cached_logits = model.generate(prompt, 8, temperature=0, return_logits=True)
    plain, plain_logits = model.generate(prompt, 8, temperature=0, use_cache=False,
                                         return_logits=True)
    np.testing.assert_array_equal(cached, plain)
    np.testing.assert_allclose(cached_logits, plain_logits, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_a_custom_parallel_block_gives_the_uncached_logits_step_by_step(padded):
    model = parallel_lm(1)
    ids = np.random.default_rng(1).integers(1, 17, (2, 9))
    mask = None
    if padded:
        mask = np.ones(ids.shape, bool)
        mask[1, :3] = False
    cache = model.new_cache(batch=2)
    pieces = []
    with mt.no_grad():
        for start, end in [(0, 4)] + [(t, t + 1) for t in range(4, 9)]:
            pieces.append(model(ids[:, start:end], cache=cache,
                                attention_mask=None if mask is None else mask[:, start:end])
                          .data)
        whole = model(ids, attention_mask=mask).data
    # decoded by the fast decoder, through the blocks' own forwards
    assert all(type(step) is BlockForward for step in cache.fast_decoder.blocks)
    stepped = np.concatenate(pieces, axis=1)
    real = np.ones(ids.shape, bool) if mask is None else mask
    np.testing.assert_allclose(stepped[real], whole[real], atol=1e-5)
    # and the same block in textbook mode gives the same numbers
    with mt.no_grad(), mt.fast_paths(False):
        textbook = model(ids, attention_mask=mask).data
    np.testing.assert_allclose(whole[real], textbook[real], atol=1e-5)


def test_a_custom_block_decodes_fast_through_its_sub_modules_steps():
    """No decoder file knows ParallelBlock, yet a cached token costs it three ops (its
    LayerNorm and two adds): attention and feed-forward take their cached steps on the
    arrays. The textbook forwards take more than five times as many."""
    model = parallel_lm(2)

    def ops_per_token(fast_paths):
        cache = model.new_cache(batch=1)
        with mt.no_grad(), mt.fast_paths(fast_paths):
            model(np.array([[3, 4, 5]]), cache=cache)
            with mt.profile() as prof:
                logits = model(np.array([[6]]), cache=cache)
        return sum(row["forward_calls"] for row in prof.rows.values()), logits.data, prof

    fast, fast_logits, prof = ops_per_token(True)
    textbook, textbook_logits, _ = ops_per_token(False)
    assert sorted(prof.rows) == ["add", "layer_norm"] and fast == 3 * len(model.blocks)
    assert textbook > 5 * fast
    np.testing.assert_allclose(fast_logits, textbook_logits, atol=1e-5)


def test_fast_form_and_textbook_graph_refuse_what_they_cannot_use():
    with pytest.raises(TypeError, match=r"fast_form: expected a Module subclass.*MyModule"):
        nn.fast_form(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"fast_form: the fast form of Linear must be callable"):
        nn.fast_form(nn.Linear)(3)
    with pytest.raises(TypeError, match=r"textbook_graph: expected the Tensor.*textbook_graph\(loss\)"):
        mt.textbook_graph(np.ones(3))


def test_a_registered_fast_form_runs_by_default_and_the_textbook_forward_without_it():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    calls = []

    @nn.fast_form(Square)
    def square_fast(module, x):
        calls.append(module)
        return x ** 2

    square, x = Square(), mt.tensor([3.0], requires_grad=True)
    assert square(x).op.name == "pow" and calls == [square]
    with mt.fast_paths(False):
        assert square(x).op.name == "mul" and calls == [square]
    square.forward = lambda x: x + x        # a replaced forward always runs
    assert square(x).op.name == "add"


@pytest.mark.parametrize("make", [lambda: FeedForward(8, 16, activation="gelu"),
                                  lambda: FeedForward(8, 16, activation="relu"),
                                  lambda: SwiGLU(8, 12)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_feed_forward_without_grad_is_one_step_with_the_textbook_numbers(make, dtype):
    ffn = make()
    x = mt.tensor(np.random.default_rng(0).standard_normal((2, 3, 8)).astype(dtype))
    with mt.no_grad(), mt.fast_paths(False):
        textbook = ffn(x)
    with mt.no_grad(), mt.profile() as prof:
        fast = ffn(x)
    assert prof.rows == {}                      # no op: one step on the arrays
    assert fast.dtype == textbook.dtype and fast.shape == textbook.shape
    np.testing.assert_allclose(fast.data, textbook.data, rtol=1e-6 if dtype == np.float32
                               else 1e-12, atol=1e-6 if dtype == np.float32 else 1e-12)
    # with gradients, or with a hook on a sub-module, its modules run as written
    seen = []
    first = ffn.W_gate if isinstance(ffn, SwiGLU) else ffn.W_1
    with first.register_forward_hook(lambda module, args, out: seen.append(out.shape)), \
            mt.no_grad():
        ffn(x)
    assert seen == [(2, 3, first.weight.shape[1])]
    with pytest.raises(ValueError, match=r"linear: input \(2, 3, 5\) and weight \(8, "), \
            mt.no_grad():
        ffn(mt.zeros((2, 3, 5)))                 # a wrong width is worded, not a NumPy error
