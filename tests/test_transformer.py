"""Layers and models: the paper's positional encoding, residual/LayerNorm variants,
padding masks on both sides, causality, and gradients of a whole decoder layer."""
import dataclasses
import math

import numpy as np
import pytest
from test_attention import bind, f64, float64_params

import microtensor as mt
from microtensor.functional import cross_entropy
from transformer import (
    DecoderLayer,
    DecoderLM,
    EncoderLayer,
    FeedForward,
    LMConfig,
    PositionalEncoding,
    Transformer,
    sinusoidal_table,
)


def small_transformer(**overrides):
    config = {"src_vocab": 11, "tgt_vocab": 9, "d_model": 16, "n_heads": 4, "n_layers": 2,
              "d_ff": 32, "dropout": 0.0, "max_len": 20, "pad_id": 0}
    config.update(overrides)
    return Transformer(**config)


# ---------------------------------------------------------------------- positional encoding
@pytest.mark.parametrize("d_model", [6, 7, 16])
def test_sinusoidal_table_is_the_papers_formula(d_model):
    table = sinusoidal_table(50, d_model)
    for pos in range(50):
        for i in range(0, d_model, 2):       # i here is the even index 2i of the paper
            angle = pos / 10000 ** (i / d_model)
            assert table[pos, i] == pytest.approx(math.sin(angle), abs=1e-6)
            if i + 1 < d_model:
                assert table[pos, i + 1] == pytest.approx(math.cos(angle), abs=1e-6)


def test_positional_encoding_adds_rows_at_an_offset():
    pe = PositionalEncoding(8, max_len=10)
    x = mt.zeros(2, 3, 8)
    np.testing.assert_array_equal(pe(x).data[0], sinusoidal_table(10, 8)[:3])
    np.testing.assert_array_equal(pe(x, offset=4).data[1], sinusoidal_table(10, 8)[4:7])
    with pytest.raises(ValueError, match=r"PositionalEncoding: position 10 is beyond "
                                         r"max_len=10 \(sequence of 3 tokens at offset 8\)"):
        pe(x, offset=8)


def test_learned_positions_are_trained():
    pe = PositionalEncoding(4, max_len=6, kind="learned")
    out = pe(mt.zeros(1, 3, 4))
    (out * out).sum().backward()
    grad = pe.table.weight.grad
    assert np.abs(grad[:3]).sum() > 0 and np.all(grad[3:] == 0)
    with pytest.raises(ValueError, match="kind must be 'sinusoidal' or 'learned'"):
        PositionalEncoding(4, kind="rotary")


# ---------------------------------------------------------------------- layers
def test_feed_forward_activation_and_error():
    ffn = FeedForward(4, 8, activation="gelu")
    x = mt.randn(2, 4)
    hidden = x.data @ ffn.W_1.weight.data + ffn.W_1.bias.data
    gelu = 0.5 * hidden * (1 + np.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3)))
    expected = gelu @ ffn.W_2.weight.data + ffn.W_2.bias.data
    np.testing.assert_allclose(ffn(x).data, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"FeedForward: activation must be one of "
                                         r"\['gelu', 'relu'\], got 'swish'"):
        FeedForward(4, 8, activation="swish")


def test_post_ln_output_is_normalised_and_pre_ln_is_not():
    x = mt.randn(2, 5, 8) * 5
    post = EncoderLayer(8, 2, 16, norm_first=False)(x).data
    pre = EncoderLayer(8, 2, 16, norm_first=True)(x).data
    np.testing.assert_allclose(post.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(post.var(-1), 1, atol=1e-3)
    assert np.abs(pre.var(-1) - 1).max() > 0.5      # the residual stream keeps x's scale


@pytest.mark.parametrize("norm_first", [False, True])
def test_gradcheck_decoder_layer(norm_first):
    layer = DecoderLayer(4, 2, 6, dropout=0.0, norm_first=norm_first)
    params = float64_params(layer)
    x, memory = f64(1, 3, 4), f64(1, 2, 4)
    memory_valid = np.array([[True, False]])[:, None, None, :]

    def decoder_layer(x, memory, *weights):
        bind(layer, weights)
        return layer(x, memory, memory_mask=memory_valid)
    assert mt.gradcheck(decoder_layer, [x, memory, *params])


# ---------------------------------------------------------------------- padding masks
def test_source_padding_changes_nothing():
    model = small_transformer().eval()
    src_short = np.array([[3, 4, 5]])
    src_padded = np.array([[3, 4, 5, 0, 0, 0]])
    tgt = np.array([[1, 5, 6, 7]])
    memory_short = model.encode(src_short)
    memory_padded = model.encode(src_padded)
    np.testing.assert_allclose(memory_padded.data[:, :3], memory_short.data, atol=1e-5)
    np.testing.assert_allclose(model(src_padded, tgt).data, model(src_short, tgt).data,
                               atol=1e-5)


def test_target_padding_changes_nothing_at_real_positions():
    model = small_transformer().eval()
    src = np.array([[3, 4, 5, 6]])
    short = model(src, np.array([[1, 5, 6]])).data
    padded = model(src, np.array([[1, 5, 6, 0, 0]])).data
    np.testing.assert_allclose(padded[:, :3], short, atol=1e-5)
    assert np.isfinite(padded).all()


def test_decoder_is_causal():
    model = small_transformer().eval()
    src = np.array([[3, 4, 5, 6]])
    a = model(src, np.array([[1, 5, 6, 7, 8]])).data
    b = model(src, np.array([[1, 5, 6, 2, 3]])).data
    np.testing.assert_array_equal(a[:, :3], b[:, :3])


def test_decoder_lm_is_causal():
    lm = DecoderLM(LMConfig.gpt2(12, d_model=16, n_heads=2, n_layers=2, max_len=10))
    a = lm(np.array([[3, 4, 5, 6, 7]])).data
    b = lm(np.array([[3, 4, 5, 9, 1]])).data
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    assert not np.allclose(a[:, 3:], b[:, 3:])


def test_lm_left_padding_matches_the_unpadded_row():
    lm = DecoderLM(LMConfig.gpt2(12, d_model=16, n_heads=2, n_layers=2, max_len=10))
    ids = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    padded = lm(ids, attention_mask=ids != 0).data
    alone = lm(ids[:1, 2:]).data
    np.testing.assert_allclose(padded[0, 2:], alone[0], atol=1e-5)


# ---------------------------------------------------------------------- models
def test_tied_weights_share_the_embedding():
    config = LMConfig.gpt2(12, d_model=16, n_heads=2, n_layers=1, max_len=8)
    tied = DecoderLM(dataclasses.replace(config, tie_weights=True))
    untied = DecoderLM(config)
    n_tied = sum(p.size for p in tied.parameters())
    assert sum(p.size for p in untied.parameters()) - n_tied == 12 * 16
    ids = np.array([[3, 4, 5]])
    cross_entropy(tied(ids), np.array([[4, 5, 6]])).backward()
    # the embedding gets gradient from the output projection too: rows never looked up
    assert np.abs(tied.tok_embed.weight.grad[7]).sum() > 0


def test_transformer_learns_a_copy_batch():
    mt.manual_seed(0)
    model = small_transformer(src_vocab=9)
    from microtensor.optim import Adam
    opt = Adam(model.parameters(), lr=3e-3)
    src = np.array([[3, 4, 5, 6], [7, 8, 3, 0]])
    tgt_in = np.array([[1, 3, 4, 5, 6], [1, 7, 8, 3, 0]])
    tgt_out = np.array([[3, 4, 5, 6, 2], [7, 8, 3, 2, 0]])
    losses = []
    for _ in range(60):
        loss = cross_entropy(model(src, tgt_in), tgt_out, ignore_index=0)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    out = model.greedy_decode(src, max_len=6, bos=1, eos=2)
    np.testing.assert_array_equal(out[:, :5], tgt_out)


def test_bad_ids_and_lengths_are_reported():
    model = small_transformer()
    with pytest.raises(TypeError, match=r"Transformer.encode: token ids must be integers "
                                        r"shaped \(B, T\), got dtype float64"):
        model.encode(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"greedy_decode: max_len=25 plus the bos token "
                                         r"exceeds the model's max_len=20"):
        model.greedy_decode(np.array([[3, 4]]), max_len=25, bos=1, eos=2)
    lm = DecoderLM(LMConfig.gpt2(12, d_model=16, n_heads=2, n_layers=1, max_len=4))
    with pytest.raises(ValueError, match=r"DecoderLM: sequence of 5 tokens is longer than "
                                         r"max_len=4"):
        lm(np.array([[3, 4, 5, 6, 7]]))


def test_empty_sequences_and_mismatched_batches_are_reported_at_the_model():
    """Checked at the model's entry, naming both shapes, not by softmax or matmul inside."""
    model = small_transformer()
    src, tgt = np.array([[3, 4, 5], [6, 7, 8]]), np.array([[1, 3], [1, 4]])
    with pytest.raises(ValueError, match=r"Transformer: src \(2, 3\) and tgt \(1, 2\) have "
                                         r"different batch sizes \(2 and 1\)\. Pass one "
                                         r"target row per source row"):
        model(src, tgt[:1])
    with pytest.raises(ValueError, match=r"Transformer: the source ids \(2, 0\) hold no "
                                         r"tokens\. Pass at least one token per row"):
        model(src[:, :0], tgt)
    with pytest.raises(ValueError, match=r"Transformer: the target ids \(2, 0\) hold no tokens"):
        model(src, tgt[:, :0])
    with pytest.raises(ValueError, match=r"Transformer.encode: the source ids \(1, 0\) hold "
                                         r"no tokens"):
        model.encode(np.zeros((1, 0), np.int64))
    memory = model.encode(src)
    with pytest.raises(ValueError, match=r"Transformer.decode: target ids \(3, 2\) and memory "
                                         r"\(2, 3, 16\) have different batch sizes"):
        model.decode(np.ones((3, 2), np.int64), memory)
    lm = DecoderLM(LMConfig.gpt2(12, d_model=16, n_heads=2, n_layers=1, max_len=4))
    with pytest.raises(ValueError, match=r"DecoderLM: the input ids \(2, 0\) hold no tokens\. "
                                         r"Pass at least one token per row"):
        lm(np.zeros((2, 0), np.int64))
    with pytest.raises(ValueError, match=r"DecoderLM: attention_mask \(2, 2\) must have the "
                                         r"shape of the ids \(2, 3\)"):
        lm(np.ones((2, 3), np.int64), attention_mask=np.ones((2, 2), bool))
