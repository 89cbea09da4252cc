"""Where a drawing puts each op: in the module whose `forward` made it (recorded when the op
ran, never guessed), the loss outside every module. The same graph gives the same DOT text
in every process, and drawing grows linearly with the graph."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
import viz
from microtensor import nn
from microtensor.autograd import topological_order

ROOT = Path(__file__).resolve().parents[1]
NODE_LINE = re.compile(r"^\s*((?:t|op|m)\d+) \[")
CLUSTER_OPEN = re.compile(r'^\s*subgraph "?cluster_([^"\s]+)"? \{')


def clusters_of(source: str) -> dict:
    """{node id: the innermost cluster's module path ("" outside every cluster)}, read
    from the DOT text's nesting of `subgraph cluster_...` blocks."""
    stack, placed = [""], {}
    for line in source.splitlines():
        opened = CLUSTER_OPEN.match(line)
        if opened:
            stack.append(opened[1])
        elif line.strip() == "}":
            stack.pop()
        elif NODE_LINE.match(line):
            placed[NODE_LINE.match(line)[1]] = stack[-1]
    return placed


def node_of(graph, tensor, kind="op") -> str:
    """The DOT id of `tensor` (kind "t") or of the op that made it (kind "op")."""
    return graph.node_ids[id(tensor)].replace("t", kind, 1)


def test_the_loss_of_a_decoder_lm_is_drawn_outside_the_model_and_a_blocks_ops_inside_it():
    pytest.importorskip("transformer")
    from transformer import DecoderLM, LMConfig

    mt.manual_seed(0)
    model = DecoderLM(LMConfig.gpt2(50, d_model=16, n_heads=2, n_layers=2, max_len=8))
    ids = mt.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with mt.fast_paths(False):          # every op of the textbook forward, one node each
        loss = F.cross_entropy(model(ids), ids)
    graph = viz.draw(loss, params=model, collapse=False)
    placed = clusters_of(graph.source)
    assert placed[node_of(graph, loss)] == ""               # the loss: in no cluster
    assert placed[node_of(graph, loss, "t")] == ""
    # Every op made while blocks.1's forward ran sits in blocks.1's cluster or one inside.
    block = model.blocks[1]
    made_in_block = [t for t in topological_order(loss) if t.op is not None
                     and any(m is block for m in t.op.modules)]
    assert len(made_in_block) > 20
    for tensor in made_in_block:
        where = placed[node_of(graph, tensor)]
        assert where == "blocks.1" or where.startswith("blocks.1."), (tensor.op.name, where)
    # Its two residual adds are the block's own, not its sub-modules'.
    adds = [placed[node_of(graph, t)] for t in made_in_block if t.op.name == "add"
            and t.op.modules[-1] is block]
    assert adds == ["blocks.1", "blocks.1"]


def test_the_loss_stays_outside_the_model_in_the_default_fast_mode_too():
    pytest.importorskip("transformer")
    from viz.examples import decoder_lm_example

    loss, model = decoder_lm_example(2, d_model=16)
    graph = viz.draw(loss, params=model, expand=["head"])
    placed = clusters_of(graph.source)
    loss_ops = [node for node, where in placed.items() if node.startswith("op") and
                'label=<<B>cross_entropy' in graph.source.split(f"\t{node} [", 1)[1][:40]]
    assert loss_ops and all(placed[node] == "" for node in loss_ops)
    # The player's first step names the loss, not "head output".
    first = viz.player.player_page(loss, params=model).split('"name":"', 1)[1].split('"')[0]
    assert first.startswith("cross_entropy"), first


def test_a_sequentials_relu_is_drawn_in_its_own_module_and_the_loss_outside():
    mt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, targets = mt.randn(5, 3), mt.tensor([0, 1, 1, 0, 1])
    hidden = model[0](x)
    relu_out = model[1](hidden)
    loss = F.cross_entropy(model[2](relu_out), targets)
    placed = clusters_of(viz.draw(loss, params=model).source)
    graph = viz.draw(loss, params=model)
    assert placed[node_of(graph, relu_out)] == "1"          # ReLU: its own cluster, "1"
    assert placed[node_of(graph, hidden)] == "0"
    assert placed[node_of(graph, loss)] == ""               # cross_entropy: outside
    assert "cluster_1 {" in graph.source.replace('"', "")


def test_the_dot_source_is_the_same_whatever_the_string_hash_seed():
    pytest.importorskip("transformer")
    script = textwrap.dedent("""
        import viz
        from viz.examples import decoder_lm_example
        loss, model = decoder_lm_example(2, d_model=16)
        for options in ({}, {"collapse": False}, {"expand": ["blocks.0"]}, {"depth": 1}):
            print(viz.draw(loss, params=model, **options).source)
        print(viz.player.player_page(loss, params=model, engine=None)[-20000:])
    """)
    sources = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        sources.append(subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
    assert len(sources[0]) > 10_000
    assert sources[0] == sources[1] == sources[2]


def chain(n_layers: int):
    mt.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(n_layers)])
    return model(mt.randn(3, 2)).sum(), model


def calls_to_draw(n_layers: int, **options) -> int:
    """How many Python function calls drawing a chain of n Linear layers takes."""
    loss, model = chain(n_layers)
    count = 0

    def tally(frame, event, arg):
        nonlocal count
        count += event == "call"

    sys.setprofile(tally)
    try:
        viz.draw(loss, params=model, **options)
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("options", [{}, {"collapse": False}, {"depth": 0}])
def test_drawing_grows_linearly_with_the_number_of_layers(options):
    # Calls, not seconds: 4x the layers may cost 4x the calls (plus slack), not 16x.
    small, large = calls_to_draw(50, **options), calls_to_draw(200, **options)
    assert large < 4.6 * small, (small, large)


def box_labels(graph) -> dict:
    """{module path: [label lines]} for every folded box in the DOT text."""
    found = {}
    for line in graph.source.splitlines():
        match = re.match(r'\s*m\d+ \[label="(.*?)(?<!\\)"', line)
        if match:
            lines = match[1].split("\\l")
            found[lines[0]] = lines[1:]
    return found


def number_after(text: str, word: str) -> float:
    return float(re.search(rf"{word} ([-\d.e+]+)", text)[1])


def test_folded_blocks_show_the_gradient_arriving_and_leaving_and_their_parameters():
    pytest.importorskip("transformer")
    from microtensor.autograd import backward_steps
    from viz.examples import decoder_lm_example

    loss, model = decoder_lm_example(4, d_model=16)
    steps = list(backward_steps(loss))
    graph = viz.draw(loss, params=model, steps=steps)
    boxes = box_labels(graph)
    flows = {path: next(line for line in lines if line.startswith("|g| arriving"))
             for path, lines in boxes.items() if path.startswith("blocks.")}
    assert sorted(flows) == [f"blocks.{i}" for i in range(4)]
    # What leaves a block is what arrives at the one below it: one residual stream.
    for upper, lower in ((1, 0), (2, 1), (3, 2)):
        assert number_after(flows[f"blocks.{upper}"], "leaving") == pytest.approx(
            number_after(flows[f"blocks.{lower}"], "arriving"), rel=1e-2)
    # What arrives at the top block is the gradient of its output, from the steps.
    top = model.blocks[3]
    output = next(s for s in steps if s.node is not None and s.node.modules
                  and s.node.modules[-1] is top and s.node.name == "add")
    assert number_after(flows["blocks.3"], "arriving") == pytest.approx(
        float(np.linalg.norm(output.grad_out)), rel=1e-2)
    # Each block's parameters, grouped by the module that owns them, with their norm.
    ffn = model.blocks[2].ffn
    expected = np.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2))
                           for p in ffn.parameters()))
    line = next(line for line in boxes["blocks.2"] if line.startswith("ffn:"))
    assert number_after(line, r"\|g\|") == pytest.approx(expected, rel=1e-2)
    # The edges between boxes carry the norm that flowed along them.
    assert len(re.findall(r"m\d+ -> m\d+ \[.*label=\"\|g\| ", graph.source)) >= 4


def test_a_box_with_nothing_recorded_shows_no_flow_and_the_parameter_grads_after_backward():
    loss, model = chain(6)
    loss.backward()
    boxes = box_labels(viz.draw(loss, params=model, collapse=True))
    assert not any("arriving" in line for lines in boxes.values() for line in lines)
    assert any("|g|" in line for line in boxes["3"])
