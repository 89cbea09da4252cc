"""Today's decoder parts: rms_norm, rotary positions, SwiGLU and grouped-query attention,
each by gradcheck and (where torch is installed) against a PyTorch reference written here;
the Llama-style DecoderLM: cached == uncached decoding with padding and GQA, training,
and clear errors."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import normal, seeds, shapes
from test_attention import bind, f64, float64_params

import microtensor as mt
import microtensor.functional as F
from microtensor import optim
from transformer import (
    DecoderLM,
    LlamaBlock,
    LMConfig,
    MultiHeadAttention,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rotary,
)
from transformer.rope import rotate_half

try:
    import torch
except ImportError:  # the PyTorch references below skip; everything else runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def leaf(array):
    return mt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def torch_leaf(array):
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def agree_with_torch(ours, theirs, arrays, seed=0, atol=1e-10):
    """Run both on the same float64 data, pull one random gradient back through each and
    compare outputs and every input's gradient."""
    mine = [leaf(a) for a in arrays]
    reference = [torch_leaf(a) for a in arrays]
    out, ref_out = ours(*mine), theirs(*reference)
    np.testing.assert_allclose(out.data, ref_out.detach().numpy(), atol=atol, rtol=1e-8)
    grad_out = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(grad_out)
    ref_out.backward(torch.tensor(grad_out))
    for i, (a, b) in enumerate(zip(mine, reference)):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), atol=atol, rtol=1e-8,
                                   err_msg=f"gradient of input {i}")


# ---------------------------------------------------------------------- rms_norm
@given(shape=shapes(min_dims=1), seed=seeds, with_weight=st.booleans())
def test_rms_norm_gradient(shape, seed, with_weight):
    x = leaf(normal(seed, shape))
    weight = leaf(normal(seed + 1, shape[-1:]))
    if with_weight:
        assert mt.gradcheck(lambda x, w: F.rms_norm(x, w), [x, weight])
    else:
        assert mt.gradcheck(lambda x: F.rms_norm(x, eps=1e-3), [x])


@given(shape=shapes(min_dims=1), seed=seeds)
def test_rms_norm_is_the_formula_and_keeps_float32(shape, seed):
    x = normal(seed, shape)
    weight = normal(seed + 1, shape[-1:])
    expected = x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-6) * weight
    np.testing.assert_allclose(F.rms_norm(leaf(x), leaf(weight)).data, expected, atol=1e-12)
    assert F.rms_norm(mt.tensor(x.astype(np.float32)), mt.ones(shape[-1])).dtype == np.float32


@needs_torch
@given(shape=shapes(min_dims=1), seed=seeds)
def test_rms_norm_matches_torch(shape, seed):
    agree_with_torch(lambda x, w: F.rms_norm(x, w, eps=1e-6),
                     lambda x, w: torch.nn.functional.rms_norm(x, x.shape[-1:], w, eps=1e-6),
                     [normal(seed, shape), normal(seed + 1, shape[-1:])], seed=seed)


def test_rms_norm_equals_layer_norm_on_zero_mean_rows():
    x = normal(0, (4, 6))
    x -= x.mean(-1, keepdims=True)
    weight = normal(1, (6,))
    ours = F.rms_norm(leaf(x), leaf(weight), eps=1e-5).data
    layer = F.layer_norm(leaf(x), leaf(weight), leaf(np.zeros(6)), eps=1e-5).data
    np.testing.assert_allclose(ours, layer, atol=1e-12)
    assert np.abs(F.rms_norm(leaf(x + 1)).data - F.layer_norm(leaf(x + 1)).data).max() > 0.1


def test_rms_norm_module_and_errors():
    norm = RMSNorm(4)
    assert [name for name, _ in norm.named_parameters()] == ["weight"]   # no bias
    with pytest.raises(ValueError, match=r"rms_norm: weight has shape \(3,\) but the input "
                                         r"\(2, 4\)"):
        F.rms_norm(mt.randn(2, 4), mt.ones(3))
    with pytest.raises(ValueError, match="rms_norm: got a 0-d tensor"):
        F.rms_norm(mt.tensor(1.0))
    with pytest.raises(ValueError, match="RMSNorm: expected the last axis to have size 4"):
        norm(mt.randn(2, 5))
    with pytest.raises(ValueError, match="RMSNorm: eps must be a positive number"):
        RMSNorm(4, eps=0)


# ---------------------------------------------------------------------- rotary positions
rotary_cases = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4),
                         st.sampled_from([2, 4, 6]), seeds)


def torch_rotary(x, positions, theta=10000.0):
    """The rotate-half RoPE of transformers' Llama, written out in PyTorch."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.tensor(positions, dtype=torch.float64)[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)[:, None]             # (B, 1, T, d)
    first, second = x[..., : d // 2], x[..., d // 2:]
    return x * angles.cos() + torch.cat([-second, first], dim=-1) * angles.sin()


def random_positions(seed, batch, length):
    return np.random.default_rng(seed).integers(0, 50, (batch, length))


@given(rotary_cases)
def test_rotary_gradient(case):
    batch, heads, length, d, seed = case
    rotation = RotaryEmbedding(d)(random_positions(seed, batch, length), dtype=np.float64)
    x = leaf(normal(seed, (batch, heads, length, d)))
    assert mt.gradcheck(lambda x: apply_rotary(x, rotation), [x])


@needs_torch
@given(rotary_cases)
def test_rotary_matches_torch(case):
    batch, heads, length, d, seed = case
    positions = random_positions(seed, batch, length)
    rotation = RotaryEmbedding(d, theta=500.0)(positions, dtype=np.float64)
    agree_with_torch(lambda x: apply_rotary(x, rotation),
                     lambda x: torch_rotary(x, positions, theta=500.0),
                     [normal(seed, (batch, heads, length, d))], seed=seed)


@given(rotary_cases, st.integers(0, 1000))
def test_rotated_dot_product_depends_only_on_the_offset(case, shift):
    _, _, _, d, seed = case
    rope = RotaryEmbedding(d)
    q, k = leaf(normal(seed, (1, 1, 1, d))), leaf(normal(seed + 1, (1, 1, 1, d)))

    def score(pos_q, pos_k):
        rotated_q = apply_rotary(q, rope(np.array([pos_q]), dtype=np.float64))
        rotated_k = apply_rotary(k, rope(np.array([pos_k]), dtype=np.float64))
        return float((rotated_q * rotated_k).sum().data)
    assert score(7, 3) == pytest.approx(score(7 + shift, 3 + shift), abs=1e-9)
    rotated = apply_rotary(q, rope(np.array([shift]), dtype=np.float64)).data
    assert np.linalg.norm(rotated) == pytest.approx(np.linalg.norm(q.data))   # a rotation
    np.testing.assert_allclose(apply_rotary(q, rope(np.array([0]), np.float64)).data, q.data)


def test_rotate_half_pairs_dimension_j_with_j_plus_half():
    x = mt.tensor([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(rotate_half(x).data, [[-3.0, -4.0, 1.0, 2.0]])


def test_rotary_errors():
    for bad in (3, 0, True):
        with pytest.raises(ValueError, match="RotaryEmbedding: head_dim must be a positive "
                                             "even integer"):
            RotaryEmbedding(bad)
    with pytest.raises(TypeError, match="RotaryEmbedding: positions must be integers"):
        RotaryEmbedding(4)(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="apply_rotary: x .* has head size 6"):
        apply_rotary(mt.randn(1, 1, 2, 6), RotaryEmbedding(4)(np.arange(2)))


# ---------------------------------------------------------------------- SwiGLU
def test_swiglu_gradient():
    ffn = SwiGLU(4, 6)
    params = float64_params(ffn)

    def swiglu(x, *weights):
        bind(ffn, weights)
        return ffn(x)
    assert mt.gradcheck(swiglu, [f64(2, 3, 4), *params])


@needs_torch
@pytest.mark.parametrize("seed", range(3))
def test_swiglu_matches_torch(seed):
    ffn = SwiGLU(5, 7)
    float64_params(ffn)
    x = normal(seed, (2, 3, 5))

    def ours(x, W_gate, W_up, W_down):
        bind(ffn, [W_gate, W_up, W_down])
        return ffn(x)

    def theirs(x, W_gate, W_up, W_down):
        return (torch.nn.functional.silu(x @ W_gate) * (x @ W_up)) @ W_down
    agree_with_torch(ours, theirs, [x] + [p.data for p in ffn.parameters()], seed=seed)


# ---------------------------------------------------------------------- grouped-query attention
@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_grouped_query_attention_gradient(n_kv_heads):
    mha = MultiHeadAttention(8, n_heads=4, n_kv_heads=n_kv_heads, bias=False)
    params = float64_params(mha)
    rotation = RotaryEmbedding(2)(np.array([[0, 1, 2], [0, 0, 1]]), dtype=np.float64)
    valid = np.array([[True, True, True], [False, True, True]])[:, None, None, :]

    def attention(x, *weights):
        bind(mha, weights)
        return mha(x, mask=valid, causal=True, rotation=rotation)
    assert mt.gradcheck(attention, [f64(2, 3, 8), *params])


def torch_gqa(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads, positions):
    """Grouped-query attention with rotary positions, written out in PyTorch: K/V heads
    repeated with repeat_interleave (query head i reads K/V head i // group)."""
    batch, length, d_model = x.shape
    d_k = d_model // n_heads

    def heads(t, n):
        return t.reshape(batch, length, n, d_k).transpose(1, 2)
    q = torch_rotary(heads(x @ W_q, n_heads), positions)
    k = torch_rotary(heads(x @ W_k, n_kv_heads), positions)
    v = heads(x @ W_v, n_kv_heads)
    group = n_heads // n_kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return out.transpose(1, 2).reshape(batch, length, d_model) @ W_o


@needs_torch
@pytest.mark.parametrize("n_kv_heads", [1, 2, 3, 6])
def test_grouped_query_attention_matches_torch(n_kv_heads):
    mha = MultiHeadAttention(12, n_heads=6, n_kv_heads=n_kv_heads, bias=False)
    float64_params(mha)
    positions = np.tile(np.arange(5), (2, 1))
    rotation = RotaryEmbedding(2)(positions, dtype=np.float64)

    def ours(x, *weights):
        bind(mha, weights)
        return mha(x, causal=True, rotation=rotation)
    agree_with_torch(ours, lambda x, *w: torch_gqa(x, *w, 6, n_kv_heads, positions),
                     [normal(n_kv_heads, (2, 5, 12))] + [p.data for p in mha.parameters()])


def test_grouped_query_shapes_and_errors():
    mha = MultiHeadAttention(16, n_heads=4, n_kv_heads=1, bias=False)
    assert mha.W_q.weight.shape == (16, 16) and mha.W_k.weight.shape == (16, 4)
    assert mha(mt.randn(2, 3, 16), causal=True).shape == (2, 3, 16)
    assert mha.last_weights.shape == (2, 4, 3, 3)
    assert "n_kv_heads=1" in repr(mha)
    with pytest.raises(ValueError, match=r"n_kv_heads=3 must be a positive integer dividing "
                                         r"n_heads=4.*(?i:choose) one of \[1, 2, 4\]"):
        MultiHeadAttention(16, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="rotary positions apply to self-attention"):
        mha(mt.randn(1, 2, 16), context=mt.randn(1, 3, 16),
            rotation=RotaryEmbedding(4)(np.arange(2)))


def test_llama_block_gradient():
    block = LlamaBlock(8, n_heads=4, d_ff=6, n_kv_heads=2)
    params = float64_params(block)
    rotation = RotaryEmbedding(2)(np.arange(3), dtype=np.float64)

    def layer(x, *weights):
        bind(block, weights)
        return block(x, rotation=rotation, causal=True)
    assert mt.gradcheck(layer, [f64(1, 3, 8), *params])


# ---------------------------------------------------------------------- the Llama-style model
def small_llama(n_kv_heads=2, **overrides):
    mt.manual_seed(5)
    config = {"vocab": 17, "d_model": 16, "n_heads": 4, "n_layers": 2, "max_len": 14,
              "style": "llama", "n_kv_heads": n_kv_heads, "rope_theta": 100.0}
    config.update(overrides)
    return DecoderLM(LMConfig(**config))


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_llama_cached_equals_uncached_with_padding_and_gqa(n_kv_heads):
    lm = small_llama(n_kv_heads, tie_weights=n_kv_heads == 1)
    cache = lm.new_cache(batch=3)
    assert cache.layers[0].self_attn.keys.shape == (3, n_kv_heads, 14, 4)   # not n_heads
    prompts = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 0, 0, 0, 9]])
    mask = prompts != 0
    for temperature in (0.0, 1.0):
        cached, cached_logits = lm.generate(prompts, 8, temperature=temperature, seed=2,
                                            attention_mask=mask, return_logits=True)
        plain, plain_logits = lm.generate(prompts, 8, temperature=temperature, seed=2,
                                          attention_mask=mask, use_cache=False,
                                          return_logits=True)
        np.testing.assert_array_equal(cached, plain)
        np.testing.assert_allclose(cached_logits, plain_logits, atol=1e-5)
    # a left-padded row continues exactly as the row alone: positions count real tokens
    alone, alone_logits = lm.generate(prompts[:1, 2:], 8, temperature=0, return_logits=True)
    greedy, greedy_logits = lm.generate(prompts, 8, temperature=0, attention_mask=mask,
                                        return_logits=True)
    np.testing.assert_array_equal(greedy[0, 2:], alone[0])
    np.testing.assert_allclose(greedy_logits[0], alone_logits[0], atol=1e-5)


def test_llama_prefill_in_pieces_equals_one_pass():
    lm = small_llama()
    ids = np.random.default_rng(1).integers(1, 17, (2, 9))
    with mt.no_grad():
        whole = lm(ids).data
        cache = lm.new_cache(batch=2)
        pieces = [lm(ids[:, a:b], cache=cache).data for a, b in ((0, 4), (4, 5), (5, 9))]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-5)


def test_llama_is_causal_and_has_no_biases_or_position_table():
    lm = small_llama()
    names = [name for name, _ in lm.named_parameters()]
    assert not any(name.endswith("bias") for name in names)
    assert not any(name.startswith("position") for name in names)
    ids = np.array([[3, 4, 5, 6]])
    changed = np.array([[3, 4, 5, 9]])
    np.testing.assert_allclose(lm(ids).data[:, :3], lm(changed).data[:, :3], atol=1e-6)
    assert lm.config.style == "llama" and lm.config.d_ff == 48    # ceil(8/3*16 / 8)*8


def test_llama_trains():
    lm = small_llama(n_kv_heads=1)
    opt = optim.AdamW(lm.parameters(), lr=1e-2)
    ids = np.tile(np.arange(1, 9), (4, 1))
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(lm(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(float(loss.data))
    assert losses[-1] < losses[0] / 4


@pytest.mark.parametrize("make, message", [
    (lambda: LMConfig.gpt2(vocab=10, d_model=8, n_heads=2, n_kv_heads=1),
     (r"LMConfig: n_kv_heads=1 with style='gpt': a GPT block has one K/V head per query "
      r"head\. Leave n_kv_heads out, or use LMConfig\.llama\(\.\.\.\)")),
    (lambda: LMConfig.gpt2(vocab=10, d_model=8, n_heads=2, rope_theta=10.0),
     r"LMConfig: rope_theta=10\.0 with positional='learned': it sets rotary positions only"),
    (lambda: LMConfig.llama(vocab=10, d_model=8, n_heads=2, positional="learned"),
     (r"LMConfig: style='llama' takes positional in \['rope'\], got 'learned'\. Leave "
      r"positional out \(default 'rope'\), or use LMConfig\.gpt2")),
    (lambda: LMConfig.gpt2(vocab=10, activation="silu"),
     r"LMConfig: style='gpt' takes activation in \['gelu', 'relu'\], got 'silu'"),
    (lambda: LMConfig(vocab=10, style="mistral"),
     (r"LMConfig: style='mistral' is not one of \['gpt', 'llama'\]\. Build the config with "
      r"LMConfig\.gpt2")),
    (lambda: LMConfig.llama(vocab=10, d_model=8, n_heads=4, n_kv_heads=3),
     r"LMConfig: n_kv_heads=3 must be a positive integer dividing n_heads=4.*\[1, 2, 4\]"),
    (lambda: LMConfig.gpt2(vocab=10, dropout=1.0),
     r"LMConfig: dropout=1\.0 must be a number in \[0, 1\)"),
    (lambda: LMConfig.llama(vocab=10, norm_eps=0),
     r"LMConfig: norm_eps=0 must be a positive number\. Leave it out for the default, 1e-06"),
    (lambda: LMConfig.gpt2(vocab=10, d_ff=0), r"LMConfig: d_ff must be a positive integer"),
])
def test_config_values_are_checked_by_field_value_and_fix(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_configs_fill_their_style_defaults_and_round_trip_as_dicts():
    gpt = LMConfig.gpt2(vocab=10, d_model=8, n_heads=2, n_layers=1)
    assert (gpt.style, gpt.positional, gpt.activation, gpt.d_ff) == ("gpt", "learned", "gelu",
                                                                     32)
    assert (gpt.n_kv_heads, gpt.rope_theta, gpt.norm_eps) == (2, None, 1e-5)
    llama = small_llama().config
    assert (llama.positional, llama.activation, llama.norm_eps) == ("rope", "silu", 1e-6)
    for config in (gpt, llama):
        assert LMConfig(**dataclasses.asdict(config)) == config
        assert DecoderLM(config).config is config
    with pytest.raises(TypeError, match=r"DecoderLM: expected an LMConfig, got dict\. Build "
                                        r"one with LMConfig\.gpt2\(vocab=\.\.\.\)"):
        DecoderLM(dataclasses.asdict(gpt))


@settings(max_examples=10)
@given(n_heads=st.sampled_from([1, 2, 4, 8]), data=st.data())
def test_gqa_cache_holds_n_kv_heads(n_heads, data):
    n_kv_heads = data.draw(st.sampled_from([k for k in range(1, n_heads + 1)
                                            if n_heads % k == 0]))
    lm = DecoderLM(LMConfig.llama(vocab=5, d_model=16, n_heads=n_heads, n_layers=1, max_len=6,
                                  n_kv_heads=n_kv_heads))
    cache = lm.new_cache(batch=2)
    assert cache.layers[0].self_attn.keys.shape == (2, n_kv_heads, 6, 16 // n_heads)
