"""Issue 29, the writing side, for the drawings: what viz.render and write_player write, and
names that once broke a tooltip or system `dot`. The rules shared with every writer (a
read-only folder, symlinks, permissions, missing folders) and the bounded-probe helpers
are in test_hostile_write.py.

render's rule for the DOT source: render writes only the path it is given. A `.dot` or
`.gv` path gets the source; `source=True` also writes `NAME.dot` beside the picture; when
no layout engine runs or it fails, the source is saved as `NAME.svg.dot` (never a file of
yours). write_player saves it as `NAME.html.dot` in that case.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import xml.etree.ElementTree as ET

import pytest
from conftest import require
from test_hostile_write import _time_limit, beside, probe, shared_dir  # noqa: F401 (fixtures)

import microtensor as mt
import viz
from viz import labels
from viz.engine import DotFailedError, DotNotFoundError
from viz.graph import to_svg

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX files: modes and links")

HAS_DOT = shutil.which("dot") is not None
XLINK = "{http://www.w3.org/1999/xlink}title"


def small_loss(name: str = "w"):
    w = mt.tensor([1.0, -2.0], requires_grad=True, name=name)
    return (w * 2).sum(), w


def no_engine(monkeypatch, tmp_path):
    """Neither system `dot` on PATH nor the bundled graphviz-pure (as if uninstalled)."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    monkeypatch.setattr("viz.engine.bundled_path", lambda: None)


def laid_out_nodes(svg: str) -> list:
    """The node ids a Graphviz SVG shows (each node's <g> has its id as <title>), sorted."""
    svg_ns = "{http://www.w3.org/2000/svg}"
    return sorted(group.find(f"{svg_ns}title").text
                  for group in ET.fromstring(svg).iter(f"{svg_ns}g")
                  if group.get("class") == "node")


@pytest.fixture(params=["system", "bundled"])
def engine(request) -> str:
    """Each layout engine; the system one needs Graphviz's `dot` (a failure under CI)."""
    if request.param == "system":
        require(HAS_DOT, "Graphviz's `dot` is not installed (apt-get install graphviz)")
    return request.param


# --------------------------------------------------------------------- 24: overwritten files
def test_24_render_leaves_the_users_own_dot_file_alone(tmp_path):
    (tmp_path / "x.dot").write_text("my own graph")
    loss, _ = small_loss()
    assert viz.render(loss, tmp_path / "x.svg") == tmp_path / "x.svg"
    assert (tmp_path / "x.dot").read_text() == "my own graph"
    assert beside(tmp_path) == ["x.dot", "x.svg"]
    drawn = laid_out_nodes((tmp_path / "x.svg").read_text())
    assert len(drawn) == 5 and drawn == laid_out_nodes(to_svg(viz.draw(loss)))  # 3 tensors, 2 ops


def test_24_render_writes_the_source_beside_the_picture_only_when_asked(tmp_path):
    loss, _ = small_loss()
    viz.render(loss, tmp_path / "x.svg", source=True)
    assert (tmp_path / "x.dot").read_text().startswith("digraph")
    assert beside(tmp_path) == ["x.dot", "x.svg"]


def test_24_render_to_a_dot_path_writes_dot_and_the_extension_picks_the_format(tmp_path):
    loss, _ = small_loss()
    viz.render(loss, tmp_path / "y.dot")
    viz.render(loss, tmp_path / "y.gv")
    assert (tmp_path / "y.dot").read_text().startswith("digraph backward {")
    assert (tmp_path / "y.gv").read_text() == (tmp_path / "y.dot").read_text()
    viz.render(loss, tmp_path / "y.png")
    assert (tmp_path / "y.png").read_bytes().startswith(b"\x89PNG")
    assert beside(tmp_path) == ["y.dot", "y.gv", "y.png"]


def test_24_rendering_to_a_folder_is_our_error_and_leaves_nothing(tmp_path):
    (tmp_path / "adir.svg").mkdir()
    loss, _ = small_loss()
    with pytest.raises(IsADirectoryError, match=r"render: '.*adir\.svg' is a folder\. Give a "
                                                r"file name"):
        viz.render(loss, tmp_path / "adir.svg", source=True)
    with pytest.raises(IsADirectoryError, match=r"write_player: '.*adir\.svg' is a folder"):
        viz.write_player(loss, tmp_path / "adir.svg")
    assert beside(tmp_path) == ["adir.svg"] and beside(tmp_path / "adir.svg") == []


def test_24_without_an_engine_the_source_is_saved_under_the_pictures_name(tmp_path,
                                                                           monkeypatch):
    (tmp_path / "x.dot").write_text("my own graph")
    (tmp_path / "p.dot").write_text("my own graph")
    no_engine(monkeypatch, tmp_path)
    loss, w = small_loss()
    with pytest.raises(DotNotFoundError) as error:
        viz.render(loss, tmp_path / "x.svg")
    assert str(error.value).startswith("render: no Graphviz layout engine could run")
    assert str(error.value).endswith(f"The graph source was written to {tmp_path / 'x.svg.dot'}.")
    with pytest.raises(DotNotFoundError, match=re.escape(str(tmp_path / "p.html.dot"))):
        viz.write_player(loss, tmp_path / "p.html")
    assert (tmp_path / "x.svg.dot").read_text().startswith("digraph")
    assert (tmp_path / "p.html.dot").read_text().startswith("digraph")
    assert (tmp_path / "x.dot").read_text() == (tmp_path / "p.dot").read_text() == "my own graph"
    assert w.grad is None


def test_24_a_failing_engine_keeps_the_source_too(tmp_path):
    loss, _ = small_loss()
    with pytest.raises(DotFailedError, match=r"The graph source was written to .*x\.nope\.dot"):
        viz.render(loss, tmp_path / "x.nope", format="nope", engine="bundled")
    assert beside(tmp_path) == ["x.nope.dot"]


# --------------------------------------------------------------------- the shared rules
def test_19_render_and_write_player_name_the_target_not_a_temporary(tmp_path, monkeypatch):
    # The read-only folder itself is probed unprivileged in test_hostile_write.py; here a
    # write that fails midway (a full disk) names the target too.
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    loss, _ = small_loss()
    monkeypatch.setattr("microtensor.files.os.fsync", full)
    with pytest.raises(OSError, match=r"^render: cannot write '.*g\.svg' \(No space left on "
                                      r"device\)\. Free some space"):
        viz.render(loss, tmp_path / "g.svg")
    assert beside(tmp_path) == []


def test_22_render_to_a_symlink_writes_through_it(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "g.svg").symlink_to("pictures/real.svg")
    (tmp_path / "p.html").symlink_to("pictures/real.html")
    loss, _ = small_loss()
    viz.render(loss, tmp_path / "g.svg")
    viz.write_player(loss, tmp_path / "p.html")
    assert os.readlink(tmp_path / "g.svg") == "pictures/real.svg"
    assert laid_out_nodes((tmp_path / "pictures" / "real.svg").read_text()) == \
        laid_out_nodes(to_svg(viz.draw(loss)))
    assert (tmp_path / "pictures" / "real.html").read_text().startswith("<!DOCTYPE html>")
    assert beside(tmp_path) == ["g.svg", "p.html", "pictures"]


def test_25_render_keeps_the_pictures_mode_and_refuses_a_read_only_one(tmp_path):
    loss, w = small_loss()
    path = viz.render(loss, tmp_path / "g.svg")
    path.chmod(0o600)
    viz.render(loss, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    page = viz.write_player(loss, tmp_path / "p.html")
    page.chmod(0o444)
    w.grad = None
    loss, w = small_loss()
    with pytest.raises(PermissionError, match=r"write_player: '.*p\.html' is read-only"):
        viz.write_player(loss, page)
    assert w.grad is None                          # refused before backward ran


def test_every_viz_writer_creates_missing_folders(tmp_path):
    loss, _ = small_loss()
    viz.render(loss, tmp_path / "a" / "g.svg")
    viz.write_player(loss, tmp_path / "b" / "c" / "p.html")
    assert (tmp_path / "a" / "g.svg").is_file() and (tmp_path / "b" / "c" / "p.html").is_file()


# --------------------------------------------------------------------- also: names
def tooltips(svg: str) -> list[str]:
    """Every tooltip of an SVG, as a browser reads it (entities decoded once)."""
    return [element.get(XLINK) for element in ET.fromstring(svg).iter()
            if element.get(XLINK) is not None]


def test_a_name_that_looks_escaped_shows_as_written_in_its_tooltip(engine):
    loss, _ = small_loss("&lt;&amp;")
    svg = to_svg(viz.draw(loss), engine=engine)
    assert "&lt;&amp;" in tooltips(svg)
    assert "<&" not in tooltips(svg)
    loss, _ = small_loss("a & b <c>")
    assert "a & b <c>" in tooltips(to_svg(viz.draw(loss), engine=engine))


class Escaped(mt.nn.Module):
    """A model whose one layer is called `&lt;`."""

    def __init__(self):
        super().__init__()
        setattr(self, "&lt;", mt.nn.Linear(2, 2))

    def forward(self, x):
        return getattr(self, "&lt;")(x)


def test_a_name_that_looks_escaped_shows_as_written_in_a_folded_box(engine):
    model = Escaped()
    loss = model(mt.randn(1, 2)).sum()
    svg = to_svg(viz.draw(loss, params=model, collapse=True), engine=engine)
    texts = [element.text for element in ET.fromstring(svg).iter() if element.text]
    assert "&lt;" in texts and "<" not in texts


def test_names_past_the_limit_of_system_dot_draw_cut_and_stay_whole_in_the_player(
        shared_dir):  # noqa: F811  (the fixture imported above)
    require(HAS_DOT, "Graphviz's `dot` is not installed (apt-get install graphviz)")
    name = "start" + "x" * 20_000 + "end"
    done = probe("""
        name = "start" + "x" * 20_000 + "end"
        folder = sys.argv[1]
        w = mt.randn(2, requires_grad=True, name=name)
        layer = mt.nn.Linear(2, 2)
        setattr(layer, "m" * 20_000, mt.nn.Linear(2, 2))
        loss = (getattr(layer, "m" * 20_000)(layer(w.reshape(1, 2))) * 2).sum()
        viz.render(viz.draw(loss, params=layer, title="t" * 50_000),
                   os.path.join(folder, "g.svg"), engine="system")
        loss = (w * 2).sum()
        viz.write_player(loss, os.path.join(folder, "p.html"), engine="system")
        print("drawn")
    """, shared_dir)
    assert done.stdout.strip().endswith("drawn")
    svg = (shared_dir / "g.svg").read_text()
    text = "".join(ET.fromstring(svg).itertext())
    assert "start" in text and "end" in text and "x" * (labels.MAX_NAME + 1) not in text
    long_tips = [tip for tip in tooltips(svg) if tip.startswith("start")]
    assert long_tips and all(len(tip) == labels.MAX_TOOLTIP for tip in long_tips)
    page = (shared_dir / "p.html").read_text()
    data = json.loads(re.search(r'id="steps">(.*?)</script>', page, re.DOTALL)[1])
    assert name in {step["name"] for step in data["steps"]}
