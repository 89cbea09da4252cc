"""Forward hooks on modules (PyTorch's semantics), the names attention gives what it
makes, and the one size validator."""
import numpy as np
import pytest

import microtensor as mt
from microtensor import nn
from microtensor.errors import check_sizes
from transformer import DecoderLM, LMConfig, MultiHeadAttention
from transformer import scaled_dot_product_attention as sdpa


def test_a_forward_hook_sees_module_inputs_and_output_until_removed():
    layer = nn.Linear(3, 2)
    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append((module, args, out)))
    x = mt.randn(4, 3)
    y = layer(x)
    assert len(seen) == 1 and seen[0][0] is layer and seen[0][1][0] is x and seen[0][2] is y
    handle.remove()
    handle.remove()               # twice is harmless, as in PyTorch
    layer(x)
    assert len(seen) == 1


def test_hooks_run_in_order_and_a_returned_value_replaces_the_output():
    layer = nn.Linear(2, 2)
    order = []
    layer.register_forward_hook(lambda m, args, out: order.append("first"))
    layer.register_forward_hook(lambda m, args, out: out * 0)
    layer.register_forward_hook(lambda m, args, out: order.append(float(out.sum().item())))
    assert np.all(layer(mt.ones(1, 2)).numpy() == 0)
    assert order == ["first", 0.0]


def test_a_hook_with_kwargs_and_as_a_context_manager():
    attention = MultiHeadAttention(8, 2)
    calls = []
    with attention.register_forward_hook(
            lambda m, args, kwargs, out: calls.append(kwargs), with_kwargs=True):
        attention(mt.randn(1, 3, 8), causal=True)
    attention(mt.randn(1, 3, 8))
    assert calls == [{"causal": True}]


def test_a_hook_must_be_callable():
    with pytest.raises(TypeError, match=r"Linear.register_forward_hook: hook must be callable"):
        nn.Linear(2, 2).register_forward_hook("print")


def test_hooks_on_sub_modules_see_every_call_of_a_model():
    mt.manual_seed(0)
    lm = DecoderLM(LMConfig.gpt2(vocab=11, d_model=8, n_heads=2, n_layers=2, d_ff=16,
                                 max_len=16))
    rows = []
    handles = [block.self_attn.W_k.register_forward_hook(
        lambda m, args, out: rows.append(args[0].shape[1])) for block in lm.blocks]
    lm.generate(np.array([[1, 2, 3]]), 2, temperature=0)
    for handle in handles:
        handle.remove()
    assert rows == [3, 3, 1, 1]        # the prompt, then one new position per layer


def test_attention_names_what_it_makes():
    q = k = v = mt.randn(1, 3, 4, requires_grad=True)
    _, weights = sdpa(q, k, v, causal=True)
    assert weights.name == "weights"
    names = set()
    stack = [weights]
    while stack:
        tensor = stack.pop()
        names.add(tensor.name)
        stack += [t for t in (tensor.op.inputs if tensor.op else ()) if isinstance(t, mt.Tensor)]
    assert {"QK^T", "scores", "weights"} <= names


@pytest.mark.parametrize("bad", [True, False, 0, -1, 2.0, "3", None])
def test_one_size_validator_refuses_bools_and_non_positive_sizes(bad):
    with pytest.raises(ValueError, match=r"Linear: in_features must be a positive integer"):
        nn.Linear(bad, 2)
    with pytest.raises(ValueError, match=r"LMConfig: d_model must be a positive integer"):
        LMConfig.gpt2(vocab=4, d_model=bad, n_heads=1, n_layers=1)
    with pytest.raises(ValueError, match=r"where: n must be a positive integer"):
        check_sizes("where", n=bad)
