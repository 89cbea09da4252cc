"""Generation and the KV cache: cached == uncached (tokens and logits), buffers written in
place, cross-attention K/V projected once per source, sampling controls and errors."""
import numpy as np
import pytest

import microtensor as mt
from transformer import DecoderLM, KVCache, LMConfig, Transformer

BOS, EOS, PAD = 1, 2, 0


@pytest.fixture
def seq2seq():
    mt.manual_seed(3)
    return Transformer(src_vocab=12, tgt_vocab=12, d_model=16, n_heads=4, n_layers=2,
                       d_ff=32, dropout=0.1, max_len=16, pad_id=PAD)


@pytest.fixture
def lm():
    mt.manual_seed(4)
    return DecoderLM(LMConfig.gpt2(vocab=14, d_model=16, n_heads=4, n_layers=2, d_ff=32,
                                   max_len=12, dropout=0.1))


SOURCES = np.array([[3, 4, 5, 6, 7, 8], [9, 10, 3, 0, 0, 0], [4, 0, 0, 0, 0, 0]])


# ---------------------------------------------------------------------- encoder-decoder
def test_seq2seq_cached_equals_uncached_with_padded_batch(seq2seq):
    cached, cached_logits = seq2seq.greedy_decode(SOURCES, 12, BOS, EOS, use_cache=True,
                                                  return_logits=True)
    plain, plain_logits = seq2seq.greedy_decode(SOURCES, 12, BOS, EOS, use_cache=False,
                                                return_logits=True)
    np.testing.assert_array_equal(cached, plain)
    np.testing.assert_allclose(cached_logits, plain_logits, atol=1e-5)
    assert seq2seq.training    # greedy_decode restores the mode it found


def test_seq2seq_rows_do_not_see_each_others_padding(seq2seq):
    together = seq2seq.greedy_decode(SOURCES, 8, BOS, EOS)
    for row, src in enumerate(SOURCES):
        alone = seq2seq.greedy_decode(src[src != PAD][None], 8, BOS, EOS)
        np.testing.assert_array_equal(together[row], alone[0])


def test_cross_attention_keys_values_are_projected_once_per_source(seq2seq):
    calls = []

    def counted(linear):
        forward = linear.forward
        def counting_forward(x):
            calls.append(1)
            return forward(x)
        linear.forward = counting_forward

    for layer in seq2seq.decoder.layers:
        counted(layer.cross_attn.W_k)
        counted(layer.cross_attn.W_v)
    seq2seq.eval()
    n_layers = len(seq2seq.decoder.layers)
    with mt.no_grad():
        memory = seq2seq.encode(SOURCES)
        cache = seq2seq.new_cache(len(SOURCES))
        tokens = np.full((len(SOURCES), 1), BOS)
        per_step = []
        for _ in range(6):
            before = len(calls)
            logits = seq2seq.decode(tokens[:, -1:], memory, src=SOURCES, cache=cache)
            tokens = np.concatenate([tokens, logits.data[:, -1].argmax(-1)[:, None]], 1)
            per_step.append(len(calls) - before)
    assert per_step == [2 * n_layers] + [0] * 5        # W_k and W_v, first step only
    assert cache.cross_projections() == n_layers
    calls.clear()
    seq2seq.greedy_decode(SOURCES, 6, BOS, EOS, use_cache=False)
    assert len(calls) == 6 * 2 * n_layers               # without a cache: every step


def test_cache_buffers_are_preallocated_and_written_in_place(lm):
    cache = lm.new_cache(batch=2)
    layer = cache.layers[0].self_attn
    assert layer.keys.shape == (2, 4, 12, 4) and layer.values.shape == (2, 4, 12, 4)
    buffers = (layer.keys, layer.values)
    with mt.no_grad():
        lm.eval()
        lm(np.array([[3, 4, 5], [6, 7, 8]]), cache=cache)
        lm(np.array([[9], [10]]), cache=cache)
    assert cache.length == 4
    assert layer.keys is buffers[0] and layer.values is buffers[1]
    assert np.abs(layer.keys[:, :, :4]).sum() > 0 and not layer.keys[:, :, 4:].any()


def test_cache_errors(lm):
    cache = lm.new_cache(batch=1, max_len=3)
    with pytest.raises(RuntimeError, match=r"DecoderLM: a KV cache .* inference only.*"
                                           r"mt.no_grad"):
        lm(np.array([[3, 4]]), cache=cache)
    with mt.no_grad():
        lm(np.array([[3, 4]]), cache=cache)
        with pytest.raises(ValueError, match=r"KVCache: cannot add 2 positions to 2 cached "
                                             r"ones: the cache holds max_len=3"):
            lm(np.array([[5, 6]]), cache=cache)
        with pytest.raises(ValueError, match=r"KVCache: the cache was made for batch 1, "
                                             r"got input with batch 2"):
            lm(np.array([[5], [6]]), cache=cache)
    assert isinstance(cache, KVCache)


# ---------------------------------------------------------------------- decoder-only
def test_lm_cached_equals_uncached_with_left_padding(lm):
    prompts = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 0, 0, 0, 9]])
    mask = prompts != 0
    for temperature in (0.0, 1.0):
        cached, cached_logits = lm.generate(prompts, 6, temperature=temperature, seed=1,
                                            attention_mask=mask, return_logits=True)
        plain, plain_logits = lm.generate(prompts, 6, temperature=temperature, seed=1,
                                          attention_mask=mask, use_cache=False,
                                          return_logits=True)
        np.testing.assert_array_equal(cached, plain)
        np.testing.assert_allclose(cached_logits, plain_logits, atol=1e-5)
    alone, alone_logits = lm.generate(prompts[:1, 2:], 6, temperature=0, return_logits=True)
    greedy, greedy_logits = lm.generate(prompts, 6, temperature=0, attention_mask=mask,
                                        return_logits=True)
    np.testing.assert_array_equal(greedy[0, 2:], alone[0])
    np.testing.assert_allclose(greedy_logits[0], alone_logits[0], atol=1e-5)


def test_lm_generation_past_max_len_slides_the_same_way_with_and_without_cache(lm):
    prompt = np.array([[3, 4, 5, 6, 7, 8, 9, 10]])
    cached, cached_logits = lm.generate(prompt, 20, temperature=0, return_logits=True)
    plain, plain_logits = lm.generate(prompt, 20, temperature=0, use_cache=False,
                                      return_logits=True)
    assert cached.shape == (1, 28)
    np.testing.assert_array_equal(cached, plain)
    np.testing.assert_allclose(cached_logits, plain_logits, atol=1e-5)


def test_greedy_is_argmax_and_top_k_1_is_greedy(lm):
    prompt = np.array([[3, 4, 5]])
    greedy = lm.generate(prompt, 1, temperature=0)
    lm.eval()
    assert greedy[0, -1] == lm(prompt).data[0, -1].argmax()
    lm.train()
    np.testing.assert_array_equal(lm.generate(prompt, 5, temperature=0.7, top_k=1, seed=9),
                                  lm.generate(prompt, 5, temperature=0))


def test_generate_returns_a_new_array_starting_with_the_prompt(lm):
    prompt = np.array([[3, 4, 5], [6, 7, 8]], dtype=np.int32)
    before = prompt.copy()
    for use_cache in (True, False):
        ids = lm.generate(prompt, 4, temperature=0, use_cache=use_cache)
        assert ids.shape == (2, 7) and ids.dtype == np.int32
        np.testing.assert_array_equal(ids[:, :3], prompt)
        assert not np.shares_memory(ids, prompt)
    np.testing.assert_array_equal(prompt, before)
    assert lm.generate(prompt, 0).shape == (2, 3)


def test_sampling_is_reproducible_and_respects_top_k(lm):
    prompt = np.array([[3, 4, 5]])
    a = lm.generate(prompt, 8, temperature=1.5, seed=7)
    b = lm.generate(prompt, 8, temperature=1.5, seed=7)
    np.testing.assert_array_equal(a, b)
    lm.eval()
    allowed = np.argsort(lm(prompt).data[0, -1])[-3:]
    firsts = {int(lm.generate(prompt, 1, temperature=5.0, top_k=3, seed=s)[0, -1])
              for s in range(40)}
    assert firsts <= set(allowed.tolist()) and len(firsts) > 1


def test_generate_errors_are_clear(lm):
    with pytest.raises(ValueError, match=r"DecoderLM.generate: prompt of 13 tokens is "
                                         r"longer than the model's max_len=12"):
        lm.generate(np.arange(13)[None] % 10 + 3, 2)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0, got "
                                         r"-1.0.*0 for greedy"):
        lm.generate([[3, 4]], 2, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_k must be an integer in \[1, 14\] \(the "
                                         r"vocabulary size\), got 15"):
        lm.generate([[3, 4]], 2, top_k=15)
    with pytest.raises(ValueError, match=r"top_k .* got 0"):
        lm.generate([[3, 4]], 2, top_k=0)
    with pytest.raises(ValueError, match="the prompt is empty"):
        lm.generate(np.zeros((1, 0), np.int64), 2)


def test_generate_refuses_bad_counts_masks_and_bools(lm):
    with pytest.raises(ValueError, match=r"DecoderLM.generate: max_new_tokens must be >= 0, "
                                         r"got -1\. Pass a whole number >= 0"):
        lm.generate([[3, 4]], -1)
    with pytest.raises(TypeError, match=r"DecoderLM.generate: max_new_tokens must be an "
                                        r"integer, got float 2.5"):
        lm.generate([[3, 4]], 2.5)
    with pytest.raises(TypeError, match=r"max_new_tokens must be an integer, got bool True"):
        lm.generate([[3, 4]], True)
    with pytest.raises(ValueError, match=r"DecoderLM.generate: top_k must be an integer in "
                                         r"\[1, 14\] \(the vocabulary size\), got True"):
        lm.generate([[3, 4]], 2, temperature=1.0, top_k=True)
    with pytest.raises(ValueError, match=r"DecoderLM.generate: attention_mask \(1, 3\) must "
                                         r"have the shape of the ids \(1, 2\)\. Pass one "
                                         r"True/False per token"):
        lm.generate([[3, 4]], 2, attention_mask=[[True, True, True]])
    # zero new tokens is a valid request: the prompt comes back unchanged
    np.testing.assert_array_equal(lm.generate([[3, 4]], 0), [[3, 4]])
    # a 1-D mask goes with 1-D ids
    assert lm.generate([3, 4], 1, temperature=0, attention_mask=[True, True]).shape == (1, 3)


@pytest.mark.parametrize("max_len, kind, message", [
    (0, ValueError, r"max_len must be >= 1, got 0\. Pass a whole number >= 1"),
    (-1, ValueError, r"max_len must be >= 1, got -1"),
    (2.0, TypeError, r"max_len must be an integer, got float 2.0"),
])
def test_greedy_decode_refuses_a_max_len_below_one(seq2seq, max_len, kind, message):
    with pytest.raises(kind, match=r"Transformer.greedy_decode: " + message):
        seq2seq.greedy_decode(SOURCES, max_len=max_len, bos=BOS, eos=EOS)


# ---------------------------------------------------------------------- shared model, threads
def test_generation_leaves_a_training_model_in_training_mode(lm, seq2seq):
    lm.train()
    seq2seq.train()
    tokens = lm.generate([[3, 4, 5]], 4, temperature=0)
    seq2seq.greedy_decode(SOURCES, max_len=5, bos=BOS, eos=EOS)
    assert lm.training and all(m.training for m in lm.modules())
    assert seq2seq.training and all(m.training for m in seq2seq.modules())
    # and dropout (p=0.1) was off while generating: same tokens as in eval mode
    np.testing.assert_array_equal(tokens, lm.eval().generate([[3, 4, 5]], 4, temperature=0))


def test_concurrent_generation_matches_sequential_and_never_flips_training(lm, seq2seq):
    """Two threads generate from one model in train mode while a third keeps reading
    `training`: the tokens are those of sequential calls, and training never reads False."""
    import threading
    lm.train()
    seq2seq.train()
    prompts = [np.array([[3, 4, 5]]), np.array([[6, 7, 8, 9]])]
    expected_lm = [lm.generate(p, 6, temperature=0.7, seed=i) for i, p in enumerate(prompts)]
    expected_s2s = [seq2seq.greedy_decode(SOURCES[i:i + 2], 5, BOS, EOS) for i in range(2)]
    got_lm, got_s2s, seen_training, failures = {}, {}, [], []
    start = threading.Barrier(3)
    stop = threading.Event()

    def generating(i):
        try:
            start.wait(10)
            for _ in range(15):
                got_lm.setdefault(i, []).append(
                    lm.generate(prompts[i], 6, temperature=0.7, seed=i))
                got_s2s.setdefault(i, []).append(
                    seq2seq.greedy_decode(SOURCES[i:i + 2], 5, BOS, EOS))
        except BaseException as error:  # noqa: BLE001 - reported in the main thread
            failures.append(error)

    def watching():
        start.wait(10)
        while not stop.is_set():
            seen_training.append(lm.training and lm.blocks[0].dropout.training
                                 and seq2seq.training and seq2seq.decoder.training)

    threads = [threading.Thread(target=generating, args=(i,)) for i in range(2)]
    watcher = threading.Thread(target=watching)
    for thread in (*threads, watcher):
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    watcher.join(10)
    assert not failures, failures
    for i in range(2):
        assert len(got_lm[i]) == len(got_s2s[i]) == 15
        for tokens in got_lm[i]:
            np.testing.assert_array_equal(tokens, expected_lm[i])
        for tokens in got_s2s[i]:
            np.testing.assert_array_equal(tokens, expected_s2s[i])
    assert seen_training and all(seen_training)
    assert lm.training and seq2seq.training


# Logits the test sets: vocab 8, in shuffled order, so that "the top k" is not "the first k".
SET_LOGITS = np.array([0.5, 2.0, -1.0, 1.0, -0.5, 1.5, 0.0, -2.0], dtype=np.float32)


def lm_with_logits(logits):
    """A DecoderLM whose next-token logits are `logits` at every position, whatever the
    ids: the final LayerNorm's weight is zero, so its output is its bias, e_0; the
    head's weight (d_model, vocab) has `logits` as its first row, so e_0 @ weight =
    logits exactly."""
    vocab = len(logits)
    model = DecoderLM(LMConfig.gpt2(vocab=vocab, d_model=6, n_heads=2, n_layers=1, d_ff=16,
                                    max_len=4, dropout=0.0))
    model.norm.weight.data[...] = 0
    model.norm.bias.data[...] = np.eye(6, dtype=np.float32)[0]
    model.head.weight.data[...] = 0
    model.head.weight.data[0] = logits
    return model


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_frequencies_follow_softmax_of_logits_over_temperature_within_top_k(
        temperature):
    top_k, draws = 5, 6000
    model = lm_with_logits(SET_LOGITS)
    prompts = np.full((draws, 1), 3)                # one draw per row, each its own uniform
    ids, logits = model.generate(prompts, 1, temperature=temperature, top_k=top_k, seed=11,
                                 return_logits=True)
    np.testing.assert_array_equal(logits[:, 0], np.broadcast_to(SET_LOGITS, (draws, 8)))
    allowed = np.argsort(SET_LOGITS)[-top_k:]
    scaled = SET_LOGITS[allowed].astype(np.float64) / temperature
    expected = np.exp(scaled - scaled.max())
    expected /= expected.sum()                      # softmax(logits / T) over the top k
    counts = np.bincount(ids[:, -1], minlength=8)
    assert counts.sum() == draws
    assert counts[np.setdiff1d(np.arange(8), allowed)].sum() == 0
    observed = counts[allowed]
    assert (draws * expected).min() > 20            # the chi-square approximation holds
    chi_square = ((observed - draws * expected) ** 2 / (draws * expected)).sum()
    # Pearson's statistic over top_k = 5 categories has 4 degrees of freedom; its 0.999
    # quantile is 18.467 (chi2.ppf(0.999, 4)), so a correct sampler fails 1 seed in 1,000.
    # Sampling from logits * T gives a statistic of thousands here; uniformly over the top
    # k, about 700 at T = 2 and 25,000 at T = 0.5.
    assert chi_square < 18.467, (chi_square, observed, draws * expected)


def test_generate_keeps_the_step_logits_only_when_asked():
    """Each step's logits are (B, vocab): at GPT-2's vocabulary 200 KB a token, so a long
    generation kept them all unless return_logits asks for them."""
    import tracemalloc
    mt.manual_seed(0)
    model = DecoderLM(LMConfig.gpt2(vocab=4000, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                    max_len=80))
    prompt, new = np.array([[1, 2, 3]]), 60
    model.generate(prompt, 2, temperature=0)                      # warm caches of kernels

    def peak(**options):
        tracemalloc.start()
        try:
            model.generate(prompt, new, temperature=0, **options)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    all_logits = new * 4000 * 4                                   # float32 bytes
    assert peak() < 0.3 * all_logits < peak(return_logits=True)
