"""Graphs of whole models: folding by depth and expand, tensors named by where they come
from, and pictures whose shape comes from the layout (one axis, modules in forward order)
for 1 to 12 layers with default options."""
from __future__ import annotations

import re

import pytest

import microtensor as mt
import viz
from microtensor import nn
from microtensor.autograd import backward_steps
from viz.examples import attention_example, decoder_lm_example, decoder_lm_picture
from viz.graph import to_svg
from viz.layout import plan_layout

pytest.importorskip("transformer")

NODE = re.compile(r"^\s*(t\d+|op\d+|m\d+) \[(.*)\]$", re.MULTILINE)


def boxes(graph) -> dict:
    """{first line of a folded box's label: the whole label} from the DOT source."""
    found = {}
    for node_id, attrs in NODE.findall(graph.source):
        if node_id.startswith("m"):
            label = re.search(r'label="(.*?)(?<!\\)"', attrs)[1]
            found[label.split("\\l")[0]] = label
    return found


def picture_size(graph) -> tuple[float, float, int]:
    """Width and height (pt) of the laid-out SVG, and how many nodes it draws."""
    svg = to_svg(graph)
    width, height = map(float, re.search(r'width="([\d.]+)pt" height="([\d.]+)pt"', svg).groups())
    return width, height, svg.count('class="node"')


def test_depth_folds_modules_below_it_into_boxes_with_their_shapes_and_op_count():
    loss, model = decoder_lm_example(2, d_model=16)
    top = boxes(viz.draw(loss, params=model, depth=0))
    assert {"blocks.0", "blocks.1", "tok_embed", "head"} <= set(top)
    block = top["blocks.0"]
    ops = sum(1 for t in plan_layout(loss, model, collapse=False).order
              if t.op is not None and (plan_layout(loss, model, collapse=False).modules[id(t)]
                                       or "").startswith("blocks.0"))
    assert re.search(r"\d+ ops", block) and int(block.split("\\l")[1].split()[0]) >= ops
    assert "self_attn: 4×(16, 16), 4×(16,)" in block and "ffn: (16, 64)" in block
    one_level = boxes(viz.draw(loss, params=model, depth=1))
    assert {"blocks.0.self_attn", "blocks.0.ffn", "blocks.1.norm2"} <= set(one_level)
    assert "blocks.0" not in one_level


def test_expand_opens_one_block_and_folds_the_rest():
    loss, model = decoder_lm_example(4, d_model=16)
    graph = viz.draw(loss, params=model, expand=["blocks.0"])
    assert {"blocks.1", "blocks.2", "blocks.3"} <= set(boxes(graph))
    assert not any(name.startswith("blocks.0") for name in boxes(graph))
    assert "cluster_blocks.0.self_attn" in graph.source
    with pytest.raises(ValueError, match=r"expand=\['blocks.9'\] names no module"):
        viz.draw(loss, params=model, expand=["blocks.9"])
    with pytest.raises(ValueError, match="choose one way to fold"):
        viz.draw(loss, params=model, depth=1, collapse=True)


class Attention(nn.Module):
    """Attention that names its intermediate tensors, as the model's own attention may."""

    def __init__(self, d: int):
        super().__init__()
        self.W_q, self.W_k = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        scores = self.W_q(x) @ self.W_k(x).swapaxes(-1, -2)
        scores.name = "scores"
        weights = scores.softmax(axis=-1)
        weights.name = "weights"
        return weights @ x


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.self_attn, self.ffn = Attention(d), nn.Linear(d, d)

    def forward(self, x):
        x = x + self.self_attn(x)
        return x + self.ffn(x).relu()


def test_tensors_are_named_by_where_they_come_from_never_t_number():
    mt.manual_seed(0)
    model = nn.Module()
    model.blocks = nn.ModuleList(Block(4) for _ in range(2))
    x = mt.randn(3, 4)
    for block in model.blocks:
        x = block(x)
    loss = (x * x).sum()
    layout = plan_layout(loss, model, collapse=False)
    names = {layout.label_of(t) for t in layout.order}
    assert {"blocks.0.self_attn.weights", "blocks.1.self_attn.scores"} <= names
    assert "blocks.1.ffn output" in names and "blocks.0.self_attn output" in names
    computed = [layout.label_of(t) for t in layout.order if t.op is not None]
    assert not [n for n in computed if re.fullmatch(r"t\d+", n)], computed
    assert len(set(computed)) == len(computed)              # each names one tensor
    # The same names in the picture (its node headers and tooltips) and the stepper.
    graph = viz.draw(loss, params=model, collapse=False)
    assert 'tooltip="blocks.0.self_attn.weights"' in graph.source


def test_folded_blocks_read_as_a_chain_their_residual_adds_inside():
    loss, model = decoder_lm_example(3, d_model=16)
    graph = viz.draw(loss, params=model, collapse=True)
    ids = {first: node for node, attrs in NODE.findall(graph.source) if node.startswith("m")
           for first in [re.search(r'label="([^\\"]*)', attrs)[1]]}
    assert f'{ids["blocks.0"]} -> {ids["blocks.1"]}' in graph.source
    assert f'{ids["blocks.1"]} -> {ids["blocks.2"]}' in graph.source
    # A sum made outside both branches stays between their boxes.
    mt.manual_seed(0)
    branches = nn.Module()
    branches.left, branches.right = nn.Linear(3, 2), nn.Linear(3, 2)
    x = mt.randn(4, 3)
    both = (branches.left(x) + branches.right(x)).sum()
    layout = plan_layout(both, branches, collapse=True)
    assert layout.fold_of(1) is None                              # the add: drawn as op1


def lesson_area_per_node() -> float:
    loss, _ = attention_example()
    width, height, count = picture_size(viz.draw(loss, steps=list(backward_steps(loss))))
    return width * height / count


@pytest.mark.parametrize("n_layers", [1, 2, 4, 12])
def test_model_graphs_keep_their_shape_and_density_from_one_to_twelve_layers(n_layers):
    # Before the layout stacked modules in forward order the 2-layer model drew
    # 7,807 x 3,170 pt at 164k pt^2 a node, the 12-layer one 138k; lessons draw 35-58k.
    loss, model = decoder_lm_example(n_layers)
    graph = viz.draw(loss, params=model)
    width, height, count = picture_size(graph)
    assert 1 / 4 <= width / height <= 4, (width, height)
    assert width * height / count < 100_000, (width, height, count)
    assert width * height / count < 2.5 * lesson_area_per_node()
    if plan_layout(loss, model).folded:
        assert "expand=[&#x27;blocks.0&#x27;]" in graph.source   # the title says how to open


def test_the_readme_picture_folds_every_block():
    """(tests/test_readme_pictures.py checks the committed picture is this drawing.)"""
    assert len(boxes(decoder_lm_picture())) >= 6
