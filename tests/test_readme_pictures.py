"""The README's pictures still show what the current code draws.

Each picture the README shows (or names under viz/assets) is drawn by a function in
`viz.pictures.PICTURES`; `python -m viz.pictures` regenerates them all. Layout engines
differ in their SVG bytes, so the test compares the committed .dot source with the
current drawing: the same nodes, with the same names and op labels, and the same edges.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from viz.pictures import ASSETS, PICTURES, regenerate

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHOWN = sorted(set(re.findall(r"viz/assets/([\w-]+)\.svg", README)))
NODE = re.compile(r"^\s*(\w+) \[(?:label=)?(.*)$", re.MULTILINE)
EDGE = re.compile(r"^\s*(\w+) -> (\w+)", re.MULTILINE)
SVG = "{http://www.w3.org/2000/svg}"


def structure(dot: str) -> tuple[dict, set]:
    """{node id: its bold headline (a tensor's name, an op's name)}, {(from, to)}."""
    nodes = {}
    for node_id, rest in NODE.findall(dot):
        if node_id in ("graph", "node", "edge"):
            continue
        bold = re.search(r"<B>(.*?)</B>", rest)
        nodes[node_id] = bold.group(1) if bold else None
    return nodes, set(EDGE.findall(dot))


def test_the_readme_shows_pictures_and_each_has_a_drawing_function():
    assert "backprop-graph" in SHOWN
    assert set(SHOWN) <= set(PICTURES), f"no function draws {set(SHOWN) - set(PICTURES)}"


@pytest.mark.parametrize("name", SHOWN)
def test_a_readme_picture_matches_the_current_drawing(name):
    committed = (ASSETS / f"{name}.dot").read_text(encoding="utf-8")
    nodes, edges = structure(PICTURES[name]().source)
    committed_nodes, committed_edges = structure(committed)
    assert len(nodes) > 5 and edges
    assert (committed_nodes, committed_edges) == (nodes, edges), (
        f"viz/assets/{name}.svg is out of date: run `python -m viz.pictures`")


def test_regenerating_writes_every_picture_and_its_source(tmp_path):
    written = regenerate(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.svg" for n in PICTURES)
    for path in written:
        source = path.with_suffix(".dot").read_text(encoding="utf-8")
        assert structure(source) == structure(PICTURES[path.stem]().source)
        # the picture is that source laid out: Graphviz titles each node's <g> by its id
        svg = ET.fromstring(path.read_text(encoding="utf-8"))
        shown = {group.find(f"{SVG}title").text for group in svg.iter(f"{SVG}g")
                 if group.get("class") == "node"}
        assert shown == set(structure(source)[0]), path.name


def test_a_changed_drawing_is_noticed():
    nodes, edges = structure((ASSETS / "backprop-graph.dot").read_text(encoding="utf-8"))
    renamed = (ASSETS / "backprop-graph.dot").read_text(encoding="utf-8").replace(
        "<B>softmax", "<B>softmin")
    assert structure(renamed) != (nodes, edges)
