"""Pictures of a model's loss stay textbook: fused nodes (attention as one node, run by
default) are drawn and stepped through as their textbook form, with the same gradients."""
import io
import re

import numpy as np
import pytest

import microtensor as mt
import viz
from microtensor.autograd import backward_steps
from microtensor.tensor import Tensor
from transformer.fast.attention import fused_self_attention
from viz.examples import decoder_lm_example
from viz.player import player_page


def op_names(source: str) -> dict:
    """{op node id: op name} from a drawing's DOT source."""
    return dict(re.findall(r"\b(op\d+) \[label=<<B>([^<]+)</B>", source))


def op_inputs(source: str) -> dict:
    """{op node id: [the tensor node ids feeding it]} from the DOT edges."""
    inputs = {}
    for tail, head in re.findall(r"\b(t\d+) -> (op\d+)", source):
        inputs.setdefault(head, []).append(tail)
    return inputs


def maker(tensor_id: str) -> str:
    """The op node that made tensor t{k}: op{k}."""
    return "op" + tensor_id[1:]


def packed_source(tensor_id: str, names: dict, inputs: dict) -> str:
    """Walk back through reshapes and transposes to the getitem that sliced this tensor
    out of the packed [Q | K | V] projection; returns that projection's tensor id."""
    op = maker(tensor_id)
    while names.get(op) in ("reshape", "swapaxes", "transpose"):
        op = maker(inputs[op][0])
    assert names.get(op) == "getitem", f"expected a slice of the packed QKV, got {names.get(op)}"
    return inputs[op][0]


def test_draw_of_a_decoder_lm_loss_shows_softmax_between_qk_and_v():
    loss, model = decoder_lm_example(n_layers=1)      # the default mode: fast forms
    assert any(t.op.name == "self_attention" for t in mt.autograd.topological_order(loss)
               if t.op is not None), "the model no longer runs a fused attention node"
    source = viz.draw(loss, params=model).source
    names, inputs = op_names(source), op_inputs(source)
    assert "self_attention" not in names.values()
    assert "self_attention: fused node, drawn as its textbook form" in source
    (softmax,) = [op for op, name in names.items() if name == "softmax"]
    # softmax's input: masked_fill (the causal mask) of mul (the 1/sqrt(d_k) scale) of
    # the QK^T matmul.
    chain = []
    op = softmax
    for _ in range(3):
        (op,) = [maker(t) for t in inputs[op]]
        chain.append(names[op])
    assert chain == ["masked_fill", "mul", "matmul"]
    q, k = inputs[op]
    # softmax's output, the weights, feeds a matmul with V.
    weights = "t" + softmax[2:]
    (weights_times_v,) = [op for op, tensors in inputs.items() if weights in tensors]
    assert names[weights_times_v] == "matmul"
    (v,) = [t for t in inputs[weights_times_v] if t != weights]
    # Q, K and V are three slices of the one packed projection.
    assert packed_source(q, names, inputs) == packed_source(k, names, inputs) \
        == packed_source(v, names, inputs)


def test_textbook_false_draws_the_fused_node_labelled_fused_with_its_reference():
    loss, model = decoder_lm_example(n_layers=1)
    source = viz.draw(loss, params=model, textbook=False).source
    names = op_names(source)
    assert "self_attention" in names.values() and "softmax" not in names.values()
    (label,) = [line for line in source.split("\n") if "<B>self_attention</B>" in line]
    assert "fused: one node for fused_self_attention_reference" in label
    assert "fused nodes as they ran: layer_norm_linear, self_attention" in source


def test_the_opened_attention_sends_its_inputs_the_fused_nodes_gradients():
    loss, _ = decoder_lm_example(n_layers=1)
    fused = next(s for s in backward_steps(loss)
                 if s.node is not None and s.node.name == "self_attention")
    # The fused node again, on leaves holding its inputs' values: stepping through it
    # opens it into the textbook ops, and the leaves collect what those send back.
    leaves = [mt.tensor(x.data, requires_grad=True) if isinstance(x, Tensor) else x
              for x in fused.node.inputs]
    out = fused_self_attention(*leaves, **fused.node.config)
    stepped = viz.step_through(out, grad=fused.grad_out, file=io.StringIO())
    ops = [s.node.name for s in stepped if s.node is not None]
    assert "softmax" in ops and "self_attention" not in ops
    compared = 0
    for leaf, expected in zip(leaves, fused.grads_in):
        if expected is not None:
            np.testing.assert_allclose(leaf.grad, expected, rtol=1e-4, atol=1e-5)
            compared += 1
    assert compared >= 1


def test_stepping_through_the_textbook_form_fills_the_same_parameter_gradients():
    loss, model = decoder_lm_example(n_layers=2)
    steps = viz.step_through(loss, file=io.StringIO(), params=model)
    stepped = {name: p.grad.copy() for name, p in model.named_parameters()}
    assert "softmax" in [s.node.name for s in steps if s.node is not None]

    again, model = decoder_lm_example(n_layers=2)     # same seed: the same model
    again.backward()                                  # the fused graph's own backward
    for name, p in model.named_parameters():
        np.testing.assert_allclose(stepped[name], p.grad, rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_steps_from_the_stepper_draw_on_the_same_textbook_graph():
    loss, _ = decoder_lm_example(n_layers=1)
    steps = viz.step_through(loss, file=io.StringIO())
    source = viz.draw(loss, steps=steps).source
    assert "softmax" in op_names(source).values()
    assert "|g|" in source            # the steps' gradients are on the edges
    assert "grad: pending" not in source


def test_the_player_steps_through_the_textbook_form_and_says_so():
    loss, model = decoder_lm_example(n_layers=1)
    page = player_page(loss, params=model, engine="bundled")
    assert "self_attention: fused node, drawn as its textbook form" in page
    assert '"op":"softmax"' in page and '"op":"self_attention"' not in page


def test_highlighting_a_tensor_of_the_fused_graph_says_how():
    loss, _ = decoder_lm_example(n_layers=1)
    attention = next(t for t in mt.autograd.topological_order(loss)
                     if t.op is not None and t.op.name == "self_attention")
    with pytest.raises(ValueError, match="textbook=False"):
        viz.draw(loss, highlight=attention)
    viz.draw(loss, highlight=attention, textbook=False)
