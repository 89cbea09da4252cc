"""No warning leaks from a fast path (issue 31, item 4). A model whose weights are scaled
up 8 times has scores far above their row's diagonal, as trained models' attention sinks
do: the fused attention's exp overflows there, and it redoes such rows with their max.
That overflow is expected and handled, so decoding and training such a model must not
print a RuntimeWarning: these tests turn every warning into an error."""
import warnings

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor.optim import AdamW
from transformer import DecoderLM, LMConfig
from transformer.fast import attention as fast_attention

STYLES = {"gpt": LMConfig.gpt2, "llama": LMConfig.llama}


def loud_model(style, scale=8.0, seed=0):
    """GPT-2's initialisation (N(0, 0.02) matrices, norms at 1), every weight times
    `scale`."""
    mt.manual_seed(seed)
    extra = {"n_kv_heads": 2} if style == "llama" else {}
    model = DecoderLM(STYLES[style](vocab=97, d_model=128, n_heads=4, n_layers=2,
                                    max_len=48, tie_weights=True, **extra))
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        if param.data.ndim == 2:
            param.data[...] = rng.normal(0, 0.02, param.shape)
        param.data *= scale
    return model


@pytest.fixture
def redone_rows(monkeypatch):
    """Counts the rows the fused attention redoes after an overflow (so each test shows
    that it met the case it is about)."""
    calls = []
    original = fast_attention._softmax_rows_by_max

    def counting(weights, rows, *args):
        calls.append(int(rows.sum()))
        return original(weights, rows, *args)
    monkeypatch.setattr(fast_attention, "_softmax_rows_by_max", counting)
    return calls


def decode_and_train(style):
    model = loud_model(style)
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 97, (2, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = model.generate(prompt, 8, temperature=0)
        uncached = model.generate(prompt, 8, temperature=0, use_cache=False)
        model.train()
        optimizer = AdamW(model.parameters(), lr=1e-3)
        ids = rng.integers(0, 97, (2, 33))
        for _ in range(2):
            loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model, cached, uncached, loss


@pytest.mark.parametrize("style", STYLES)
def test_decoding_and_training_a_model_with_huge_scores_warn_nothing(style, redone_rows):
    model, cached, uncached, loss = decode_and_train(style)
    assert sum(redone_rows) > 0                     # rows did overflow, and were redone
    np.testing.assert_array_equal(cached, uncached)
    assert np.isfinite(loss.item())
    assert all(np.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("style", STYLES)
def test_a_blas_that_makes_nan_of_inf_warns_nothing_either(style, monkeypatch, redone_rows):
    """Some BLAS kernels (the issue saw it on an AVX-512 Xeon) flag an invalid operation
    when a row holds inf, and give NaN: `invalid value encountered in matmul`. Such a sum
    is simulated here; the row is redone like any overflowed one."""
    def nan_for_inf(a):
        sums = a.sum(axis=-1)
        overflowed = np.isinf(sums)
        if overflowed.any():
            sums[overflowed] -= np.inf                  # inf - inf: NaN, flagged invalid
        return sums
    monkeypatch.setattr(fast_attention, "sum_over_last_axis", nan_for_inf)
    _, cached, uncached, loss = decode_and_train(style)
    assert sum(redone_rows) > 0
    np.testing.assert_array_equal(cached, uncached)
    assert np.isfinite(loss.item())
