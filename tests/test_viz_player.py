"""viz.player: one self-contained HTML page per backward pass (the browser test drives it)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import microtensor as mt
import viz
from microtensor.autograd import backward_steps
from viz.engine import DotNotFoundError
from viz.examples import attention_example
from viz.player import write_player


def embedded_steps(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="steps">(.*?)</script>', page, re.DOTALL)
    return json.loads(found[1])


def test_page_holds_the_graph_and_every_backward_step_in_engine_order(tmp_path):
    loss, tensors = attention_example()
    path = write_player(loss, tmp_path / "attention.html", title="attention head")
    page = path.read_text(encoding="utf-8")
    data = embedded_steps(page)

    twin, _ = attention_example()
    expected = [(s.node.name if s.node else "leaf") for s in backward_steps(twin)]
    assert [s["op"] for s in data["steps"]] == expected
    assert data["title"] == "attention head" and "<title>attention head</title>" in page
    ids_in_svg = set(re.findall(r'<g id="([a-z]+\d+)" class="node"', page))
    assert {s["node"] for s in data["steps"]} <= ids_in_svg
    softmax = next(s for s in data["steps"] if s["op"] == "softmax")
    assert softmax["rule"] == "dx = y * (g - sum(g * y, axis))"
    assert softmax["node"].startswith("op") and softmax["config"] == "axis=-1"
    leaf = next(s for s in data["steps"] if s["name"] == "W_q")
    assert leaf["kind"] == "leaf" and leaf["rule"] == "W_q.grad += g"
    np.testing.assert_allclose(leaf["grad_out"]["values"], tensors["W_q"].grad, rtol=1e-3)
    for control in ('id="prev"', 'id="next"', 'id="counter"', "ArrowRight", "ArrowLeft"):
        assert control in page
    # It ran the real backward pass.
    assert tensors["W_q"].grad is not None


def test_page_is_self_contained(tmp_path):
    path = write_player(attention_example()[0], tmp_path / "p.html")
    page = path.read_text(encoding="utf-8")
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert not re.search(r"<script[^>]+src=|<link|@import|url\(|<img|<iframe", page)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing


def test_names_cannot_break_out_of_the_page(tmp_path):
    W = mt.tensor([[1.0, -2.0]], requires_grad=True, name="</script><b>W & co")
    loss = (W * W).sum()
    page = write_player(loss, tmp_path / "p.html", title="<i>t</i>").read_text()
    assert page.count("</script>") == 2  # the data block and the player script
    assert "<i>t</i>" not in page
    assert any(s["name"] == "</script><b>W & co" for s in embedded_steps(page)["steps"])


def test_non_finite_gradients_still_give_valid_json(tmp_path):
    x = mt.tensor([0.0, 1.0], requires_grad=True, name="x")
    with np.errstate(divide="ignore"):
        loss = x.log().sum()  # d log(x)/dx at 0 is inf
        page = write_player(loss, tmp_path / "p.html").read_text()
    leaf = next(s for s in embedded_steps(page)["steps"] if s["name"] == "x")
    assert leaf["grad_out"]["values"][0] == "inf"


def test_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "p.html"
    path.write_text("previous page")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_player(attention_example()[0], path)
    assert path.read_text() == "previous page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.html"]  # no temp file left
    monkeypatch.undo()
    write_player(attention_example()[0], path)
    assert path.read_text().startswith("<!DOCTYPE html>")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0600


def test_no_engine_fails_clearly_and_leaves_the_graph_usable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    monkeypatch.setattr("viz.engine.bundled_path", lambda: None)
    loss, tensors = attention_example()
    with pytest.raises(DotNotFoundError) as error:
        write_player(loss, tmp_path / "p.html")
    assert str(error.value).startswith("write_player: no Graphviz layout engine could run")
    assert "pip install graphviz-pure" in str(error.value)
    assert "apt-get install graphviz" in str(error.value)
    assert str(tmp_path / "p.html.dot") in str(error.value)   # never a p.dot of the user's
    assert (tmp_path / "p.html.dot").exists() and not (tmp_path / "p.html").exists()
    assert tensors["W_q"].grad is None  # nothing ran: backward still works
    loss.backward()
    assert tensors["W_q"].grad is not None


def test_bad_input_gets_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="write_player: expected the Tensor to backpropagate"):
        viz.write_player([1.0], tmp_path / "p.html")
    with pytest.raises(RuntimeError, match="does not require grad"):
        viz.write_player(mt.ones(2).sum(), tmp_path / "p.html")
    assert not (tmp_path / "p.html").exists()


def test_folded_modules_start_folded_and_their_steps_name_the_module(tmp_path):
    from microtensor import nn
    mt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    loss = model(mt.randn(5, 3)).sum()
    page = write_player(loss, tmp_path / "p.html", params=model, collapse=["0"]).read_text()
    data = embedded_steps(page)
    assert data["folded"] == ["0"]                  # the page draws it as one box
    first_linear = [s for s in data["steps"] if s["name"].startswith("0.")]
    assert first_linear and {s["module"] for s in first_linear} == {"0"}
    # Laid out open, so the box opens in the page: every node of the module is there.
    assert {s["node"] for s in first_linear} <= set(data["nodes"])
    assert "0" in data["clusters"].values()
