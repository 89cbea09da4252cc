"""The cached fast path (`transformer/fast/decode.py`) against the composed forward: the same
logits (to rounding) and the same greedy tokens, for GPT-style and Llama-style models
(RoPE, RMSNorm, SwiGLU, grouped-query attention), with and without left padding, at
batch 1 and above, in float32 and float64; and the composed path wherever something
watches the modules (hooks), draws dropout, or records a graph."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
from microtensor.ops.elementwise import gelu_tanh
from transformer import DecoderLM, LMConfig
from transformer.fast import decode
from transformer.fast.decode import BlockForward, PreNormBlockStep, gelu_in_place

TOLERANCE = {np.float32: 2e-5, np.float64: 1e-10}

GPT = {"vocab": 19, "d_model": 16, "n_heads": 4, "n_layers": 2, "d_ff": 32, "max_len": 16}
MODELS = {
    "gpt": GPT,
    "gpt-sinusoidal-relu-tied": dict(GPT, positional="sinusoidal", activation="relu",
                                     tie_weights=True),
    "llama-mha": dict(GPT, style="llama", d_ff=None, n_kv_heads=4, rope_theta=100.0),
    "llama-gqa": dict(GPT, style="llama", d_ff=None, n_kv_heads=2, rope_theta=100.0),
    "llama-mqa-tied": dict(GPT, style="llama", d_ff=None, n_kv_heads=1, tie_weights=True),
}


def make_model(name, dtype=np.float32, seed=0, **overrides):
    mt.manual_seed(seed)
    config = {k: v for k, v in dict(MODELS[name], **overrides).items() if v is not None}
    model = DecoderLM(LMConfig(**config)).eval()
    for param in model.parameters():
        param.data = param.data.astype(dtype)
        # Non-zero norm weights and biases, so that folding them into the products counts.
        if param.data.ndim == 1:
            param.data += np.random.default_rng(seed).normal(0, 0.3, param.data.shape)
    return model


def prompts_and_mask(batch, length, padded, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, length))
    if not padded:
        return ids, None
    mask = np.ones((batch, length), bool)
    for row in range(1, batch):               # row 0 unpadded; the others left-padded
        mask[row, : rng.integers(1, length)] = False
    return np.where(mask, ids, 0), mask


def watch(model):
    """A forward hook that does nothing: the model then runs its composed modules."""
    return model.register_forward_hook(lambda module, args, output: None)


def stepped_logits(model, ids, mask, first):
    """Logits of every position: `first` positions as one prefill, then one at a time,
    through a cache. Returns (logits (B, T, vocab), cache)."""
    cache = model.new_cache(batch=len(ids))
    pieces = []
    with mt.no_grad():
        for start, end in [(0, first)] + [(t, t + 1) for t in range(first, ids.shape[1])]:
            piece_mask = None if mask is None else mask[:, start:end]
            pieces.append(model(ids[:, start:end], cache=cache,
                                attention_mask=piece_mask).data)
    return np.concatenate(pieces, axis=1), cache


@pytest.fixture(params=["small", "large"])
def size(request, monkeypatch):
    """Decode as a small model does (norms folded into copies of the matrices, products by
    np.vecmat) and as a large one does (every matrix read in place by BLAS, the norm's
    affine applied to the rows): with the thresholds below 0, a tiny model takes the
    large model's path."""
    if request.param == "large":
        monkeypatch.setattr(decode, "FOLD_MAX_BYTES", -1)
        monkeypatch.setattr(decode, "VECMAT_MAX_BYTES", -1)
    return request.param


def assert_close(fast, composed, dtype):
    assert fast.dtype == composed.dtype == dtype
    np.testing.assert_allclose(fast, composed, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def unknown_blocks(model):
    """The model with each block's type replaced by a subclass that no decoding step is
    registered for: the fast decoder then runs the blocks' own forwards (`BlockForward`),
    with their attention and feed-forward as cached steps on the arrays."""
    for block in model.blocks:
        block.__class__ = type("Unknown" + type(block).__name__, (type(block),), {})
    return model


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,padded", [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("block_steps", ["registered", "own forward"])
def test_fast_cached_logits_equal_the_composed_forward(name, dtype, batch, padded, size,
                                                      block_steps):
    model = make_model(name, dtype)
    if block_steps == "own forward":
        unknown_blocks(model)
    ids, mask = prompts_and_mask(batch, 9, padded, model.config.vocab)
    fast, cache = stepped_logits(model, ids, mask, first=4)
    assert cache.fast_decoder is not None                          # the fast path ran
    steps = {type(step) for step in cache.fast_decoder.blocks}
    assert steps == {BlockForward if block_steps == "own forward" else PreNormBlockStep}
    with mt.no_grad():
        uncached = model(ids, attention_mask=mask).data
    with watch(model):
        composed, composed_cache = stepped_logits(model, ids, mask, first=4)
    assert composed_cache.fast_decoder is None                     # the composed path ran
    real = np.ones(ids.shape, bool) if mask is None else mask      # padding rows: any value
    assert_close(fast[real], uncached[real], dtype)
    assert_close(fast[real], composed[real], dtype)
    # and both paths wrote the same keys and values into their caches
    for layer, composed_layer in zip(cache.layers, composed_cache.layers):
        assert_close(layer.self_attn.keys, composed_layer.self_attn.keys, dtype)
        assert_close(layer.self_attn.values, composed_layer.self_attn.values, dtype)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_greedy_tokens_equal_the_uncached_ones(name, dtype, size):
    model = make_model(name, dtype)
    ids, mask = prompts_and_mask(3, 5, True, model.config.vocab, seed=1)
    fast, fast_logits = model.generate(ids, 8, temperature=0, attention_mask=mask,
                                       return_logits=True)
    plain, plain_logits = model.generate(ids, 8, temperature=0, attention_mask=mask,
                                         use_cache=False, return_logits=True)
    np.testing.assert_array_equal(fast, plain)
    assert_close(fast_logits, plain_logits, dtype)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(MODELS)), batch=st.integers(1, 3),
       length=st.integers(2, 10), first=st.integers(1, 10), padded=st.booleans(),
       seed=st.integers(0, 1000))
def test_fast_prefill_in_any_pieces_equals_one_pass(name, batch, length, first, padded,
                                                     seed):
    model = make_model(name, np.float64, seed=seed % 7)
    ids, mask = prompts_and_mask(batch, length, padded, model.config.vocab, seed=seed)
    fast, _ = stepped_logits(model, ids, mask, first=min(first, length))
    with mt.no_grad():
        whole = model(ids, attention_mask=mask).data
    real = np.ones(ids.shape, bool) if mask is None else mask
    assert_close(fast[real], whole[real], np.float64)


@pytest.mark.parametrize("name", ["gpt", "llama-gqa"])
def test_fast_path_keeps_last_weights(name):
    model = make_model(name)
    ids = np.array([[3, 4, 5, 6]])
    stepped_logits(model, ids, None, first=3)
    with watch(model):
        stepped_logits(model, ids, None, first=3)
        composed = [block.self_attn.last_weights.data for block in model.blocks]
    stepped_logits(model, ids, None, first=3)
    for block, expected in zip(model.blocks, composed):
        weights = block.self_attn.last_weights       # kept as an array, a tensor when asked
        assert isinstance(weights, mt.Tensor) and weights.name == "weights"
        assert weights.shape == (1, 4, 1, 4)                       # (B, h, Tq, Tk)
        assert not weights.data.flags.writeable
        assert block.self_attn.last_weights is weights             # wrapped once
        np.testing.assert_allclose(weights.data, expected, atol=2e-6)


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40]), min_size=1, max_size=300))
def test_decoding_gelu_gives_the_numbers_of_the_gelu_op(values):
    x = np.array(values, np.float32)
    with np.errstate(all="ignore"):         # -inf gives NaN in both, as in the textbook form
        expected, _ = gelu_tanh.forward(x)
        np.testing.assert_array_equal(gelu_in_place(x.copy()), expected)   # NaN == NaN here


def test_hooks_see_every_cached_step():
    model = make_model("gpt")
    seen = []
    with model.blocks[0].self_attn.W_k.register_forward_hook(
            lambda module, args, output: seen.append(args[0].shape)):
        model.generate(np.array([[3, 4, 5]]), 4, temperature=0)
    assert seen == [(1, 3, 16)] + [(1, 1, 16)] * 3                 # prefill, then 1 by 1


def test_dropout_while_training_takes_the_composed_path():
    model = make_model("gpt", dropout=0.5).train()
    cache = model.new_cache(batch=1)
    with mt.no_grad():
        model(np.array([[3, 4, 5]]), cache=cache)
    assert cache.fast_decoder is None
    # generate turns dropout off for its own thread, so it decodes fast
    np.testing.assert_array_equal(model.generate(np.array([[3, 4, 5]]), 4, temperature=0),
                                  model.generate(np.array([[3, 4, 5]]), 4, temperature=0,
                                                 use_cache=False))


def test_a_cache_longer_than_the_position_table_still_says_which_position():
    model = make_model("gpt")
    cache = model.new_cache(batch=1, max_len=40)
    with mt.no_grad(), pytest.raises(ValueError, match="position 16 is beyond max_len=16"):
        model(np.arange(17)[None] % 19, cache=cache)


@pytest.mark.parametrize("name", ["gpt", "llama-gqa"])
def test_a_large_model_decodes_from_its_parameters_own_arrays(name, size):
    """At GPT-2's size a fold would copy every block's weights: there the decoder keeps
    the parameters' arrays, and a whole `generate` allocates far less than the weights
    (NumPy reports its arrays to tracemalloc)."""
    import tracemalloc
    model = make_model(name, d_model=64, d_ff=256, vocab=300)
    weights = sum(p.data.nbytes for p in model.parameters())
    prompt = np.array([[3, 4, 5]])
    model.generate(prompt, 2, temperature=0)                      # warm caches of kernels
    tracemalloc.start()
    try:
        cache = model.new_cache(batch=1, max_len=12)
        with mt.no_grad():
            model(prompt, cache=cache)
            for token in range(8):
                model(np.array([[token]]), cache=cache)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    block = cache.fast_decoder.blocks[0]
    qkv, ffn_in = block.attention.qkv, block.feed_forward.ffn_in
    if size == "large":
        params = {id(p.data) for p in model.parameters()}
        assert qkv.weights is not None and ffn_in.weights is not None
        assert all(id(w) in params for w in qkv.weights + ffn_in.weights)
        assert peak < 0.1 * weights, (peak, weights)
    else:
        assert qkv.weights is None                                # folded: a copy
        assert peak > 0.5 * sum(p.data.nbytes for p in model.blocks.parameters())


def test_each_cache_decodes_with_the_weights_it_was_filled_with():
    model = make_model("llama-gqa")
    prompt = np.array([[3, 4, 5]])
    before = model.generate(prompt, 6, temperature=0, return_logits=True)[1]
    for param in model.parameters():
        param.data *= 1.5                          # as an optimizer step would, in place
    after, after_logits = model.generate(prompt, 6, temperature=0, return_logits=True)
    plain, plain_logits = model.generate(prompt, 6, temperature=0, use_cache=False,
                                         return_logits=True)
    np.testing.assert_array_equal(after, plain)
    assert_close(after_logits, plain_logits, np.float32)
    assert not np.allclose(before, after_logits)
