"""The tied head as one primitive (`transformer/fast/head.py`) against its textbook form,
`x @ E.swapaxes(0, 1)`: the same output and gradients (float64 gradcheck too), the
table's gradient laid out as the table, and a tied DecoderLM whose fast form ends in it
agreeing with its textbook forwards, GPT and Llama style."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
import microtensor.functional as F
from microtensor.autograd import topological_order
from transformer import DecoderLM, LMConfig
from transformer.fast.head import matmul_transposed, matmul_transposed_reference


def leaf(rng, *shape):
    return mt.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)


@settings(max_examples=30, deadline=None)
@given(lead=st.lists(st.integers(1, 4), min_size=1, max_size=3), d=st.integers(1, 6),
       out=st.integers(1, 9), seed=st.integers(0, 1000))
def test_matmul_transposed_equals_its_reference(lead, d, out, seed):
    rng = np.random.default_rng(seed)
    x, weight = leaf(rng, *lead, d), leaf(rng, out, d)
    fast = matmul_transposed(x, weight)
    assert fast.op.name == "matmul_transposed" and fast.shape == (*lead, out)
    grad = rng.standard_normal(fast.shape)
    fast.backward(grad)
    fast_grads = x.grad.copy(), weight.grad.copy()
    x.grad = weight.grad = None
    textbook = matmul_transposed_reference(x, weight)
    textbook.backward(grad)
    np.testing.assert_allclose(fast.data, textbook.data, rtol=1e-12, atol=1e-12)
    for got, expected in zip(fast_grads, (x.grad, weight.grad)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_gradcheck_matmul_transposed():
    rng = np.random.default_rng(0)
    assert mt.gradcheck(matmul_transposed, [leaf(rng, 2, 3, 4), leaf(rng, 5, 4)])


def test_the_tables_gradient_is_laid_out_as_the_table():
    rng = np.random.default_rng(1)
    x, weight = leaf(rng, 2, 3, 4), leaf(rng, 50, 4)
    _, backward = matmul_transposed.forward(x.data, weight.data)
    grad_x, grad_weight = backward(rng.standard_normal((2, 3, 50)))
    assert grad_weight.shape == (50, 4) and grad_weight.flags.c_contiguous
    assert grad_x.shape == (2, 3, 4)


def test_matmul_transposed_refuses_shapes_that_do_not_match():
    with pytest.raises(ValueError, match="matmul_transposed"):
        matmul_transposed(mt.randn(2, 3), mt.randn(5, 4))


def tied_lm(style, seed=0):
    mt.manual_seed(seed)
    extra = {"n_kv_heads": 2} if style == "llama" else {}
    model = DecoderLM(LMConfig(vocab=13, d_model=16, n_heads=4, n_layers=2, max_len=8,
                               style=style, tie_weights=True, **extra))
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
        if p.data.ndim == 1:
            p.data += rng.normal(0, 0.3, p.shape)
    return model


@pytest.mark.parametrize("style", ["gpt", "llama"])
def test_a_tied_model_ends_in_one_head_node_and_agrees_with_its_textbook_forwards(style):
    model = tied_lm(style)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 13, (3, 6))
    mask = np.ones(ids.shape, bool)
    mask[1, :2] = False

    def loss_and_grads():
        model.zero_grad()
        logits = model(ids, attention_mask=mask)
        loss = F.cross_entropy(logits, np.where(mask, ids, -100))
        loss.backward()
        return logits, {n: p.grad.copy() for n, p in model.named_parameters()}

    fast_logits, fast_grads = loss_and_grads()
    assert fast_logits.op.name == "matmul_transposed"
    with mt.fast_paths(False):
        slow_logits, slow_grads = loss_and_grads()
    assert slow_logits.op.name == "matmul"
    np.testing.assert_allclose(fast_logits.data, slow_logits.data, rtol=1e-9, atol=1e-11)
    for name in fast_grads:
        np.testing.assert_allclose(fast_grads[name], slow_grads[name], rtol=1e-9,
                                   atol=1e-11, err_msg=name)
    assert fast_grads["tok_embed.weight"].flags.c_contiguous


def test_the_tied_head_opens_into_its_textbook_form():
    model = tied_lm("gpt")
    logits = model(np.array([[1, 2, 3]]))
    names = [t.op.name for t in topological_order(mt.textbook_graph(logits.sum())) if t.op]
    assert "matmul_transposed" not in names and "swapaxes" in names
