"""viz.engine: which program lays out the graphs (system `dot` or the bundled graphviz-pure),
that every drawing path works with either, and that both draw the same graph."""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import require
from hypothesis import given
from hypothesis import strategies as st

import microtensor as mt
import viz
from viz import engine as engines
from viz.engine import DotNotFoundError, find_engine
from viz.examples import attention_example
from viz.graph import to_svg
from viz.labels import printable, text_width
from viz.layout import plan_layout

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
HAS_DOT = shutil.which("dot") is not None


def require_system_dot():
    require(HAS_DOT, "Graphviz's `dot` is not installed (apt-get install graphviz)")


@pytest.fixture(scope="module", params=["system", "bundled"])
def engine(request):
    """Each test using this runs once per engine; `system` needs Graphviz's `dot`."""
    if request.param == "system":
        require_system_dot()
    return find_engine(request.param)


def no_dot_env(tmp_path) -> dict:
    """An environment whose PATH has no `dot` (nor anything else), the project importable."""
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "MICROTENSOR_DOT"}
    env.update(PATH=str(empty), PYTHONPATH=str(ROOT))
    return env


def titles(svg: str) -> tuple[set, set]:
    """The (node names, edge names) of a Graphviz SVG, read from each group's <title>."""
    nodes, edges = set(), set()
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        if group.get("class") == "node":
            nodes.add(title.text)
        elif group.get("class") == "edge":
            edges.add(title.text)
    return nodes, edges


# --------------------------------------------------------------------------- choosing


def test_bundled_engine_is_found_from_its_package_not_from_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    found = find_engine()
    assert found.kind == "bundled" and found.label == "bundled graphviz-pure"
    listed = [Path(f.locate()).resolve() for f in importlib.metadata.files("graphviz-pure")]
    assert Path(found.path) in listed


def test_order_explicit_then_environment_then_system_then_bundled(tmp_path, monkeypatch):
    require_system_dot()
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    assert find_engine().kind == "system"                      # dot on PATH wins
    monkeypatch.setenv("MICROTENSOR_DOT", "bundled")
    assert find_engine().kind == "bundled"                     # the variable beats PATH
    assert find_engine("system").kind == "system"              # the argument beats both
    monkeypatch.setenv("MICROTENSOR_DOT", engines.bundled_path())
    assert find_engine().kind == "bundled"                     # a path to a program
    monkeypatch.setenv("MICROTENSOR_DOT", shutil.which("dot"))
    assert find_engine().path == shutil.which("dot")


def test_a_dot_that_does_not_run_is_skipped(tmp_path, monkeypatch):
    # Like a `dot` that is a stub or a broken install: the bundled engine takes over.
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    assert find_engine().kind == "bundled"


def test_a_wrong_choice_says_what_to_do(monkeypatch):
    monkeypatch.setenv("MICROTENSOR_DOT", "/no/such/dot")
    with pytest.raises(DotNotFoundError, match=r"render: the layout program '/no/such/dot' "
                                               r"\(from engine= or MICROTENSOR_DOT\)"):
        viz.render(attention_example()[0], "/tmp/never-written.svg")
    with pytest.raises(DotNotFoundError, match="'system' or 'bundled'"):
        find_engine("/no/such/dot")


def test_a_format_the_engine_cannot_write_is_one_clear_error(tmp_path):
    loss, _ = attention_example()
    with pytest.raises(engines.DotFailedError, match=r"render: bundled graphviz-pure .* failed"
                                                     r".*pdf.*MICROTENSOR_DOT=system"):
        viz.render(loss, tmp_path / "g.pdf", format="pdf", engine="bundled")
    assert not (tmp_path / "g.pdf").exists()
    png = viz.render(loss, tmp_path / "g.png", format="png", engine="bundled")
    assert png.read_bytes().startswith(b"\x89PNG")


# --------------------------------------------------------------------------- every path


def test_every_drawing_path_works_without_system_dot(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    loss, tensors = attention_example()
    graph = viz.draw(loss, highlight=tensors["W_q"])
    # Every path lays out the same nodes and edges, every tensor of the graph among them.
    expected = titles(to_svg(graph, engine="bundled"))
    assert {f"t{k}" for k in range(len(plan_layout(loss).order))} <= expected[0]
    assert titles(graph._repr_mimebundle_()["image/svg+xml"]) == expected   # Jupyter display
    assert graph.pipe(format="svg").startswith(b"<?xml")
    assert titles(graph.pipe(format="svg").decode()) == expected
    rendered = graph.render(tmp_path / "g", format="svg")
    assert Path(rendered).name == "g.svg" and titles(Path(rendered).read_text()) == expected
    assert titles(viz.render(graph, tmp_path / "r.svg").read_text()) == expected
    page = viz.write_player(loss, tmp_path / "p.html").read_text(encoding="utf-8")
    assert titles(page[page.index("<svg"):page.index("</svg>") + 6]) == expected
    assert "W_q" in page
    assert 'srcdoc="&lt;!DOCTYPE html&gt;' in viz.play(attention_example()[0])._repr_html_()


@pytest.mark.parametrize("hide_dot", [False, True], ids=["system-dot", "dot-hidden"])
def test_main_job_in_a_fresh_process(tmp_path, hide_dot):
    """`python -m viz lesson backprop --html`, with Graphviz on PATH and with it hidden."""
    if hide_dot:
        env, expected = no_dot_env(tmp_path), "bundled graphviz-pure"
    else:
        require_system_dot()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("MICROTENSOR_DOT", None)
        expected = "system dot"
    done = subprocess.run([sys.executable, "-m", "viz", "lesson", "backprop", "--html",
                           "--out", str(tmp_path / "out")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    for name in ("backprop-graph.svg", "backprop.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert f"laid out by {expected}" in done.stdout
    assert "Warning" not in done.stderr and "non-ASCII" not in done.stderr


# --------------------------------------------------------------------------- same drawing


def test_both_engines_draw_the_same_nodes_and_edges_for_every_lesson(tmp_path, monkeypatch):
    require_system_dot()
    from viz import lessons

    drawn = {}
    for kind in ("system", "bundled"):
        monkeypatch.setenv("MICROTENSOR_DOT", kind)
        for name in lessons.names():
            lessons.run(name, out_dir=tmp_path / kind / name, html=True, echo=lambda line: None)
        for path in sorted((tmp_path / kind).rglob("*")):
            text = path.read_text(encoding="utf-8") if path.suffix in (".svg", ".html") else ""
            if "Generated by graphviz" in text or 'class="node"' in text:
                if path.suffix == ".html":   # the player: its graph is inline
                    text = text[text.index("<svg"):text.index("</svg>") + 6]
                drawn.setdefault(path.relative_to(tmp_path / kind), {})[kind] = text
    assert Path("backprop/backprop-graph.svg") in drawn and Path("backprop/backprop.html") in drawn
    for relative, by_engine in drawn.items():
        system_nodes, system_edges = titles(by_engine["system"])
        bundled_nodes, bundled_edges = titles(by_engine["bundled"])
        assert system_nodes and system_nodes == bundled_nodes, relative
        assert system_edges == bundled_edges, relative


# --------------------------------------------------------------------------- any text


def cjk_loss():
    mt.manual_seed(0)
    X = mt.randn(3, 4, name="X_苹果")
    W = mt.randn(4, 2, requires_grad=True, name="苹果苹果苹果苹果")
    return (X @ W).softmax(axis=-1).sum(), W


def test_non_ascii_labels_fit_and_no_warning_reaches_the_user(engine, capfd):
    loss, W = cjk_loss()
    graph = viz.draw(loss, highlight=W, show=(), title="loss → softmax → √d_k 中文标题")
    svg = to_svg(graph, engine=engine)
    assert "Warning" not in capfd.readouterr().err
    node = graph.node_ids[id(W)]
    group = next(g for g in ET.fromstring(svg).iter(f"{SVG}g")
                 if g.get("class") == "node" and g.find(f"{SVG}title").text == node)
    xs = [float(point.split(",")[0]) for polygon in group.iter(f"{SVG}polygon")
          for point in polygon.get("points").split()]
    # Eight CJK characters in bold 11 pt are at least 8 em wide in any font.
    assert max(xs) - min(xs) >= 8 * 11
    assert text_width("苹果苹果苹果苹果", 11, bold=True) >= 8 * 11


NASTY = ["<b>bold</b>", "</script><script>window.pwned=1</script>", '"quoted" & \'single\'',
         "{braces} [x] |pipe|", "back\\slash\\n\\N\\G\\", "line\nbreak\ttab\r",
         "\u202eRTL override עברית العربية", "emoji 🦜👩‍🔬", "<img src=x onerror=alert(1)>",
         "&amp; &lt; &#60;", "-- <!-- comment -->", "\x00\x1b[31m\x7f", "]] > ]]>", ""]
NAMES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24) | st.sampled_from(NASTY)


def draw_named(names: list[str], title: str):
    """A small graph whose tensors, parameter, module and title carry the given names."""
    X = mt.randn(2, 3, name=names[0])
    W = mt.randn(3, 2, requires_grad=True, name=names[1])
    b = mt.randn(2, requires_grad=True)
    loss = ((X @ W + b).softmax(axis=-1) * 2.0).sum()
    return loss, W, {f"{names[2]}.{names[1]}": W, names[0] + "b": b}, title


@given(st.lists(NAMES, min_size=3, max_size=3), NAMES)
def test_any_name_draws_with_both_engines(engine, names, title):
    loss, W, params, title = draw_named(names, title)
    graph = viz.draw(loss, highlight=W, params=params, title=title)
    expected = {f"t{k}" for k in range(len(plan_layout(loss, params).order))}
    notes = io.StringIO()
    with contextlib.redirect_stderr(notes):
        svg = to_svg(graph, engine=engine)
    assert notes.getvalue() == ""
    root = ET.fromstring(svg)                                   # well-formed XML
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert tags <= {"svg", "g", "title", "polygon", "ellipse", "path", "polyline",
                    "text", "a"}, tags                          # nothing injected
    nodes, _ = titles(svg)
    assert expected <= nodes
    text = "".join("".join(root.itertext()).split())
    for name in (names[1], title):
        assert "".join(printable(name).split()) in text
