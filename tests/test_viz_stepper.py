"""viz.stepper: the backward pass printed step by step, in the engine's own order."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest

import microtensor as mt
from microtensor.autograd import backward_steps
from viz.examples import attention_example
from viz.stepper import step_through


def run(root, **kwargs):
    out = io.StringIO()
    steps = step_through(root, file=out, **kwargs)
    return out.getvalue(), steps


def test_one_block_per_backward_step_in_engine_order():
    text, steps = run(attention_example(dtype=np.float64)[0])
    twin, _ = attention_example(dtype=np.float64)
    expected = [(s.index, s.node.name if s.node else "leaf") for s in backward_steps(twin)]
    total = len(mt.autograd.topological_order(twin))
    headers = re.findall(r"^step (\d+)/(\d+)  (\w+)", text, flags=re.MULTILINE)
    assert [(int(k) - 1, name) for k, _, name in headers] == expected
    assert {int(n) for _, n, _ in headers} == {total}
    assert [(s.index, s.node.name if s.node else "leaf") for s in steps] == expected
    assert text.rstrip().endswith(f"done: {len(expected)} steps")


def test_each_op_step_shows_its_rule_the_gradient_in_and_what_each_input_gets():
    text, steps = run(attention_example(dtype=np.float64)[0])
    softmax = next(s for s in steps if s.node and s.node.name == "softmax")
    block = text.split(f"step {softmax.index + 1}/")[1].split("\nstep ")[0]
    assert "rule: dx = y * (g - sum(g * y, axis))" in block
    assert "gradient arriving at" in block and "(softmax output)" in block
    assert block.count("sends to") == 1
    # X feeds Q, K and V: three matmuls each send X a share.
    assert text.count("sends to X:") == 3


def test_leaf_steps_print_the_gradient_added_and_it_is_the_real_backward():
    loss, tensors = attention_example(dtype=np.float64)
    text, _ = run(loss)
    twin, twin_tensors = attention_example(dtype=np.float64)
    twin.backward()
    for name, tensor in tensors.items():
        np.testing.assert_allclose(tensor.grad, twin_tensors[name].grad, rtol=1e-12)
        assert f"leaf {name} {tuple(tensor.shape)}\n  {name}.grad += " in text
    printed = " ".join(text.split("W_v.grad += ")[1].split())
    rows = np.array2string(tensors["W_v"].grad, precision=4, suppress_small=True,
                           floatmode="maxprec").splitlines()
    assert " ".join(" ".join(rows).split()) in printed


def test_the_example_gradients_agree_with_finite_differences():
    _, tensors = attention_example(dtype=np.float64)

    def loss_of(X, W_q, W_k, W_v):
        weights = ((X @ W_q) @ (X @ W_k).T / np.sqrt(2.0)).softmax(axis=-1)
        out = weights @ (X @ W_v)
        return (out * out).mean()

    assert mt.gradcheck(loss_of, tuple(tensors[n] for n in ("X", "W_q", "W_k", "W_v")))


def test_large_tensors_print_shape_and_norm_not_values():
    big = mt.randn(30, 40, requires_grad=True, name="big")
    text, _ = run((big * 2.0).sum())
    leaf = text.split("big.grad += ")[1].splitlines()[0]
    assert leaf.startswith("(30, 40) mean 2  std 0  norm ")
    assert "[[" not in text


def test_pause_waits_for_enter_between_steps(monkeypatch):
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt) or "")
    _, steps = run(attention_example()[0], pause=True)
    assert len(prompts) == len(steps) - 1 and "Enter" in prompts[0]


def test_q_stops_pausing(monkeypatch):
    answers = iter(["q"])
    calls = []
    monkeypatch.setattr("builtins.input", lambda prompt="": calls.append(1) or next(answers))
    _, steps = run(attention_example()[0], pause=True)
    assert len(calls) == 1 and len(steps) > 3


def test_no_pause_never_reads_input(monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt="": pytest.fail("input() was called"))
    run(attention_example()[0])


def test_parameter_names_come_from_the_module():
    from microtensor import nn
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    text, _ = run(model(mt.randn(4, 3)).sum(), params=model)
    assert "0.weight.grad += " in text and "2.bias.grad += " in text


def test_bad_input_gets_a_clear_error():
    with pytest.raises(TypeError, match="step_through: expected the Tensor to backpropagate "
                                        "from, got ndarray"):
        step_through(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        step_through(mt.ones(3).sum(), file=io.StringIO())
