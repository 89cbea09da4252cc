"""viz.draw / viz.render: what the drawing says, read back from the Digraph's DOT source."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
import viz
from microtensor import nn
from microtensor.autograd import backward_steps
from viz.graph import DIM, HIGHLIGHT, DotNotFoundError
from viz.labels import fmt, norm
from viz.layout import plan_layout

# --------------------------------------------------------------------------- helpers


def attention_loss(seed=0, dtype=np.float64):
    """loss = sum(softmax((X W_q)(X W_k)^T / sqrt(d)) (X W_v)), from microtensor ops."""
    rng = np.random.default_rng(seed)
    X = mt.tensor(rng.standard_normal((3, 4)), dtype=dtype, name="X")
    W_q, W_k, W_v = (mt.tensor(rng.standard_normal((4, 2)), dtype=dtype,
                               requires_grad=True, name=n) for n in ("W_q", "W_k", "W_v"))
    scores = (X @ W_q) @ (X @ W_k).T / math.sqrt(2)
    loss = (scores.softmax(axis=-1) @ (X @ W_v)).sum()
    return loss, {"X": X, "W_q": W_q, "W_k": W_k, "W_v": W_v}


NODE = re.compile(r"^\s*(t\d+|op\d+|m\d+) \[(.*)\]$")
EDGE = re.compile(r"^\s*(\S+) -> (\S+)(?: \[(.*)\])?$")


def nodes(graph) -> dict:
    """{node id: attribute text} from the DOT source."""
    return {m[1]: m[2] for m in map(NODE.match, graph.source.splitlines()) if m}


def edges(graph) -> list:
    """[(tail, head, attribute text)] from the DOT source."""
    return [(m[1], m[2], m[3] or "") for m in map(EDGE.match, graph.source.splitlines()) if m]


def headlines(source: str) -> dict:
    """{node id: its bold headline (a tensor's name, an op's name) or None} of DOT source."""
    found = {m[1]: re.search(r"<B>(.*?)</B>", m[2]) for m in map(NODE.match, source.splitlines())
             if m}
    return {node: bold and bold[1] for node, bold in found.items()}


SVG = "{http://www.w3.org/2000/svg}"


def assert_svg_shows(svg: str, source: str) -> None:
    """`svg` is a layout of the DOT `source`: each of its nodes and edges, and no other
    (Graphviz names each node's and edge's <g> with a <title>: "t3", "op2->t3")."""
    shown = {"node": [], "edge": []}
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.get("class") in shown:
            shown[group.get("class")].append(group.find(f"{SVG}title").text)
    assert sorted(shown["node"]) == sorted(headlines(source))
    assert sorted(shown["edge"]) == sorted(arrows(source))


def arrows(source: str) -> list:
    """["tail->head"] of DOT source, in its order."""
    return [f"{m[1]}->{m[2]}" for m in map(EDGE.match, source.splitlines()) if m]


def attr(text: str, key: str) -> str | None:
    found = re.search(rf'(?:^|\s){key}=("[^"]*"|[^\s\]]+)', text)
    return found[1].strip('"') if found else None


def op_node(graph, op_name: str) -> list:
    return [n for n, a in nodes(graph).items() if n.startswith("op") and f"<B>{op_name}</B>" in a]


def tensor_node(graph, tensor) -> str:
    return graph.node_ids[id(tensor)]


# --------------------------------------------------------------------------- highlight


def test_highlight_w_q_lights_the_route_through_softmax_and_dims_the_rest():
    loss, t = attention_loss()
    graph = viz.draw(loss, highlight=t["W_q"])
    attrs = nodes(graph)

    (softmax,) = op_node(graph, "softmax")
    assert attr(attrs[softmax], "color") == HIGHLIGHT
    assert attr(attrs[tensor_node(graph, t["W_q"])], "color") == HIGHLIGHT
    assert attr(attrs[tensor_node(graph, loss)], "color") == HIGHLIGHT
    for off_route in ("W_k", "W_v", "X"):
        assert attr(attrs[tensor_node(graph, t[off_route])], "color") == DIM

    # Every lit node lies on a lit path from W_q up to the loss, and nothing else is lit.
    lit_edges = [(a, b) for a, b, e in edges(graph) if attr(e, "color") == HIGHLIGHT]
    reach, frontier = {tensor_node(graph, t["W_q"])}, [tensor_node(graph, t["W_q"])]
    while frontier:
        here = frontier.pop()
        for a, b in lit_edges:
            if a == here and b not in reach:
                reach.add(b)
                frontier.append(b)
    lit_nodes = {n for n, a in attrs.items() if attr(a, "color") == HIGHLIGHT}
    assert tensor_node(graph, loss) in reach
    assert lit_nodes == reach == graph.highlighted
    dimmed = {n for n, a in attrs.items() if attr(a, "color") == DIM}
    assert dimmed == set(attrs) - lit_nodes and dimmed
    # The op computing W_k's product is off the route.
    matmuls = op_node(graph, "matmul")
    assert sum(attr(attrs[m], "color") == DIM for m in matmuls) == 2  # X W_k and X W_v


def test_highlight_w_v_does_not_pass_through_softmax():
    loss, t = attention_loss()
    graph = viz.draw(loss, highlight=t["W_v"])
    (softmax,) = op_node(graph, "softmax")
    assert attr(nodes(graph)[softmax], "color") == DIM


def test_highlight_several_tensors_lights_the_union():
    loss, t = attention_loss()
    both = viz.draw(loss, highlight=[t["W_q"], t["W_v"]]).highlighted
    assert both == (viz.draw(loss, highlight=t["W_q"]).highlighted
                    | viz.draw(loss, highlight=t["W_v"]).highlighted)


def test_without_highlight_nothing_is_dimmed():
    loss, _ = attention_loss()
    graph = viz.draw(loss)
    assert all(attr(a, "color") != DIM for a in nodes(graph).values())
    assert not graph.highlighted


# --------------------------------------------------------------------------- gradients


def test_gradients_are_pending_before_backward_and_drawn_after():
    loss, t = attention_loss()
    before = nodes(viz.draw(loss))[viz.draw(loss).node_ids[id(t["W_q"])]]
    assert "grad: pending" in before
    assert ">grad<" not in before  # no gradient heatmap yet, and no zeros pretending to be one

    loss.backward()
    graph = viz.draw(loss)
    after = nodes(graph)[tensor_node(graph, t["W_q"])]
    assert "pending" not in after and ">grad<" in after
    for value in t["W_q"].grad.ravel():
        assert f">{fmt(value)}</FONT>" in after
    # A constant never gets a gradient line at all.
    assert "grad" not in nodes(graph)[tensor_node(graph, t["X"])]


def test_intermediate_gradient_after_backward_says_it_was_freed():
    loss, _ = attention_loss()
    loss.backward()
    graph = viz.draw(loss)
    (softmax,) = op_node(graph, "softmax")
    weights_node = "t" + softmax[2:]  # op k made tensor k
    assert "freed" in nodes(graph)[weights_node]


def test_recorded_steps_show_every_gradient_and_each_contribution_on_its_edge():
    loss, t = attention_loss()
    t["X"].requires_grad = True  # X feeds Q, K and V: three contributions to add up
    steps = list(backward_steps(loss))
    graph = viz.draw(loss, steps=steps)
    attrs = nodes(graph)
    x_node = tensor_node(graph, t["X"])
    assert "used 3 times: gradients add" in attrs[x_node]
    assert all("pending" not in a and "freed" not in a for a in attrs.values())

    by_tensor = {id(s.tensor): s for s in steps}
    expected = []
    for tensor in plan_layout(loss).order:
        if tensor.op is not None:
            for inp, sent in zip(tensor.op.inputs, by_tensor[id(tensor)].grads_in):
                if inp is t["X"]:
                    expected.append(sent)
    assert len(expected) == 3
    np.testing.assert_allclose(sum(expected), t["X"].grad, rtol=1e-12)
    labels = sorted(attr(e, "label") for a, b, e in edges(graph) if a == x_node)
    assert labels == sorted(f"|g| {fmt(norm(g))}" for g in expected)


def test_a_tensor_used_twice_by_one_op_gets_two_edges():
    x = mt.tensor([1.0, 2.0], requires_grad=True, name="x")
    graph = viz.draw((x * x).sum())
    x_node = graph.node_ids[id(x)]
    assert [a for a, b, e in edges(graph)].count(x_node) == 2


def test_large_tensors_show_statistics_small_ones_heatmaps():
    big = mt.randn(20, 30, requires_grad=True, name="big")
    small = mt.randn(2, 3, requires_grad=True, name="small")
    loss = (big.sum() * small).sum()
    loss.backward()
    graph = viz.draw(loss)
    big_label, small_label = (nodes(graph)[graph.node_ids[id(x)]] for x in (big, small))
    assert "BGCOLOR" not in big_label
    assert "mean" in big_label and "std" in big_label and "norm" in big_label
    assert big_label.count("grad: mean") == 1
    assert small_label.count("BGCOLOR") == 2 * small.size  # values and gradient cells


def test_op_nodes_show_their_rule():
    loss, _ = attention_loss()
    graph = viz.draw(loss)
    (softmax,) = op_node(graph, "softmax")
    assert "dx = y * (g - sum(g * y, axis))" in nodes(graph)[softmax]
    assert "axis=-1" in nodes(graph)[softmax]


# --------------------------------------------------------------------------- modules


class Block(nn.Module):
    """A pre-LN Transformer block written with microtensor.nn only."""

    def __init__(self, d):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.W_q, self.W_k, self.W_v, self.W_o = (nn.Linear(d, d) for _ in range(4))
        self.W_1, self.W_2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        h = self.norm1(x)
        scores = self.W_q(h) @ self.W_k(h).swapaxes(-1, -2) / math.sqrt(h.shape[-1])
        x = x + self.W_o(scores.softmax(axis=-1) @ self.W_v(h))
        return x + self.W_2(self.W_1(self.norm2(x)).gelu())


class TinyLM(nn.Module):
    def __init__(self, vocab=11, d=8, n_layers=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n_layers))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def lm_loss(n_layers=4):
    mt.manual_seed(0)
    model = TinyLM(n_layers=n_layers)
    ids = np.arange(12).reshape(2, 6) % 11
    logits = model(ids)
    return mt.cross_entropy(logits.reshape(-1, 11), ids.reshape(-1)), model


def test_modules_become_clusters_and_ops_go_to_the_module_that_made_them():
    loss, model = lm_loss(n_layers=2)
    layout = plan_layout(loss, model, collapse=False)
    graph = viz.draw(loss, params=model, layout=layout)
    assert "subgraph cluster_layers.0 {" in graph.source.replace('"', "")
    assert "subgraph cluster_layers.0.W_q {" in graph.source.replace('"', "")
    assert "cluster_layers {" not in graph.source.replace('"', "")  # a container: no box
    modules = {layout.modules[id(t)] for t in layout.order
               if t.op is not None and t.op.name == "softmax"}
    assert modules == {"layers.0", "layers.1"}  # made in the block's forward
    weight = model.layers[1].W_q.weight
    assert layout.names[id(weight)] == "layers.1.W_q.weight"
    # Inside the cluster labelled layers.1.W_q the node says the rest; its tooltip all.
    node = nodes(graph)[graph.node_ids[id(weight)]]
    assert f"weight  {tuple(weight.shape)}" in node and 'tooltip="layers.1.W_q.weight"' in node
    residual = [layout.modules[id(t)] for t in layout.order
                if t.op is not None and t.op.name == "add"]
    # The block's forward makes both its residual adds: they sit in the block.
    assert sorted(residual) == ["layers.0", "layers.0", "layers.1", "layers.1"]


def test_collapse_folds_named_modules_into_one_box():
    loss, model = lm_loss(n_layers=2)
    full = viz.draw(loss, params=model, collapse=False)
    folded = viz.draw(loss, params=model, collapse=["layers.0"])
    boxes = [a for n, a in nodes(folded).items() if n.startswith("m")]
    assert len(boxes) == 1 and attr(boxes[0], "label").startswith("layers.0\\l")
    assert "layers.0.W_q.weight" not in folded.source
    assert "layers.1.W_q.weight" in folded.source
    assert len(nodes(folded)) < len(nodes(full))
    every = viz.draw(loss, params=model, collapse=True)
    labels = sorted(attr(a, "label").split("\\l")[0] for n, a in nodes(every).items()
                    if n.startswith("m"))
    assert labels == ["embed", "head", "layers.0", "layers.1"]


def test_highlight_reaches_into_a_folded_module():
    loss, model = lm_loss(n_layers=2)
    graph = viz.draw(loss, params=model, collapse=True, highlight=model.layers[0].W_q.weight)
    attrs = nodes(graph)
    lit_boxes = {attr(attrs[n], "label").split("\\l")[0] for n in graph.highlighted
                 if n.startswith("m")}
    assert lit_boxes == {"layers.0", "layers.1", "head"}  # embed comes before W_q


def test_graphs_over_max_nodes_fold_by_default_and_say_so():
    loss, model = lm_loss(n_layers=4)
    graph = viz.draw(loss, params=model)
    assert plan_layout(loss, model).folded
    assert "max_nodes=150" in graph.source and "collapse=False" in graph.source
    assert "expand=[&#x27;layers.0&#x27;]" in graph.source and "depth=1" in graph.source
    small = viz.draw(loss, params=model, max_nodes=10_000)
    assert not plan_layout(loss, model, max_nodes=10_000).folded
    assert "max_nodes" not in small.source
    unnamed = viz.draw(loss)
    assert "pass params=model" in unnamed.source


def test_a_four_layer_language_model_renders_to_svg(tmp_path):
    # How long it takes is measured in tests/bench/bench_draw.py, not asserted here.
    loss, model = lm_loss(n_layers=4)
    n_nodes = {}
    for collapse in (None, False):
        options = {"params": model, "collapse": collapse,
                   "highlight": model.layers[0].W_q.weight}
        path = viz.render(loss, tmp_path / f"lm-{collapse}.svg", **options)
        source = viz.draw(loss, **options).source
        assert_svg_shows(path.read_text(), source)
        n_nodes[collapse] = len(headlines(source))
    assert 5 < n_nodes[None] < n_nodes[False] / 4     # folded layers, then every op and tensor


def test_decoder_lm_from_transformer_renders(tmp_path):
    transformer = pytest.importorskip("transformer")
    if not hasattr(transformer, "DecoderLM"):
        pytest.skip("transformer.DecoderLM is not available")
    mt.manual_seed(0)
    model = transformer.DecoderLM(transformer.LMConfig.gpt2(vocab=16, d_model=16, n_heads=2,
                                                            n_layers=4, d_ff=32, max_len=16))
    ids = np.arange(16).reshape(2, 8) % 16
    loss = mt.cross_entropy(model(ids).reshape(-1, 16), ids.reshape(-1))
    path = viz.render(loss, tmp_path / "decoder.svg", params=model)
    assert_svg_shows(path.read_text(), viz.draw(loss, params=model).source)


# --------------------------------------------------------------------------- errors


def test_bad_arguments_get_clear_errors():
    loss, t = attention_loss()
    stranger = mt.randn(2, 2, requires_grad=True, name="stranger")
    with pytest.raises(ValueError,
                       match=r"draw: highlight=stranger \(2, 2\) is not a tensor of the graph"):
        viz.draw(loss, highlight=stranger)
    with pytest.raises(TypeError, match="draw: expected the Tensor whose graph to draw, got list"):
        viz.draw([loss])
    with pytest.raises(ValueError, match=r"draw: show=\['colour'\] is not one of"):
        viz.draw(loss, show=("shape", "colour"))
    with pytest.raises(TypeError, match="params must be a Module or a mapping"):
        viz.draw(loss, params=[t["W_q"]])
    lm, model = lm_loss(n_layers=1)
    with pytest.raises(ValueError, match=r"collapse=\['layers.7'\] names no module.*layers.0"):
        viz.draw(lm, params=model, collapse=["layers.7"])


def test_params_as_a_mapping_names_tensors():
    loss, t = attention_loss()
    graph = viz.draw(loss, params={"query weight": t["W_q"]})
    assert "query weight" in nodes(graph)[graph.node_ids[id(t["W_q"])]]


# --------------------------------------------------------------------------- rendering


def test_render_writes_svg_and_dot_source(tmp_path):
    loss, t = attention_loss()
    path = viz.render(loss, tmp_path / "deep" / "attention.svg", highlight=t["W_q"],
                      source=True)           # the source beside it only when asked
    source = (tmp_path / "deep" / "attention.dot").read_text()
    assert source.startswith("digraph") and source == viz.draw(loss, highlight=t["W_q"]).source
    assert path.read_text().lstrip().startswith("<?xml")
    assert_svg_shows(path.read_text(), source)


def test_jupyter_display_is_inline_svg():
    loss, _ = attention_loss()
    graph = viz.draw(loss)
    bundle = graph._repr_mimebundle_()
    assert_svg_shows(bundle["image/svg+xml"], graph.source)
    assert_svg_shows(graph._repr_svg_(), graph.source)


def test_no_engine_at_all_writes_the_source_then_says_how_to_install(tmp_path, monkeypatch):
    # Neither system `dot` on PATH nor the bundled graphviz-pure (as if uninstalled).
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    monkeypatch.setattr("viz.engine.bundled_path", lambda: None)
    loss, _ = attention_loss()
    with pytest.raises(DotNotFoundError) as error:
        viz.render(loss, tmp_path / "g.svg")
    message = str(error.value)
    assert message.startswith("render: no Graphviz layout engine could run")
    for command in ("pip install graphviz-pure", "apt-get install graphviz",
                    "brew install graphviz", "conda install", "MICROTENSOR_DOT"):
        assert command in message
    assert str(tmp_path / "g.svg.dot") in message      # never a g.dot of the user's
    assert (tmp_path / "g.svg.dot").read_text().startswith("digraph")
    assert not (tmp_path / "g.svg").exists()

    graph = viz.draw(loss)
    with pytest.raises(DotNotFoundError, match="apt-get install graphviz"):
        graph.render(tmp_path / "h")
    assert (tmp_path / "h").read_text().startswith("digraph")
    with pytest.raises(DotNotFoundError, match="Graph display"):
        graph._repr_svg_()


def test_cli_example_writes_the_attention_picture(tmp_path, capsys):
    from viz.__main__ import main
    assert main(["example", "--out", str(tmp_path)]) == 0
    svg = (tmp_path / "attention_backprop.svg").read_text()
    assert "softmax" in svg and "W_q" in svg and HIGHLIGHT in svg
    assert f"(laid out by {viz.find_engine().label})" in capsys.readouterr().out


def test_cli_example_without_any_engine_fails_clearly(tmp_path, monkeypatch, capsys):
    from viz.__main__ import main
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    monkeypatch.setattr("viz.engine.bundled_path", lambda: None)
    assert main(["example", "--out", str(tmp_path)]) == 1  # the clear error, no crash
    assert (tmp_path / "attention_backprop.dot").exists()
    assert "no Graphviz layout engine could run" in capsys.readouterr().err


def test_committed_example_picture_shows_the_current_drawing():
    # `python -m viz example --out viz/assets` rewrites both files when this fails.
    from viz.examples import attention_picture
    assets = Path(viz.__file__).parent / "assets"
    current, committed = attention_picture().source, (assets / "attention_backprop.dot").read_text()
    assert headlines(committed) == headlines(current)   # values may differ in the last bits
    assert len(headlines(current)) > 10 and arrows(committed) == arrows(current)
    text = (assets / "attention_backprop.svg").read_text()
    assert_svg_shows(text, committed)
    assert "W_q" in text and "softmax" in text and HIGHLIGHT in text


def test_legend_puts_a_key_under_the_title_and_still_lays_out():
    loss, t = attention_loss()
    graph = viz.draw(loss, highlight=t["W_q"], title="attention", legend=True)
    for words in ("values: blue &lt; 0 &lt; red", "gradients: purple &lt; 0 &lt; green",
                  "a folded module", "dashed edge: a constant input"):
        assert words in graph.source
    assert graph.source.index("attention") < graph.source.index("values: blue")
    svg = viz.graph.to_svg(graph)
    assert_svg_shows(svg, graph.source)
    assert "values: blue" in "".join(ET.fromstring(svg).itertext())
    assert "values: blue" not in viz.draw(loss).source          # off by default
