"""The HTML player in headless Chromium: keys and buttons move the highlight through the
backward pass in the engine's order, and the page fetches nothing from the network; with
either layout engine, inline in a notebook's iframe, and whatever the tensors are called."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
from microtensor.autograd import backward_steps
from viz.examples import attention_example
from viz.layout import plan_layout
from viz.player import play, write_player

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
_require = require   # the name test_docs_site.py imports


def find_chromium() -> str | None:
    """$MICROTENSOR_CHROMIUM (a path or a program name) when set, else the first of
    CHROMIUM_NAMES on PATH; None when none is there."""
    named = os.environ.get("MICROTENSOR_CHROMIUM")
    found = (shutil.which(name) for name in ([named] if named else CHROMIUM_NAMES))
    return next(filter(None, found), None)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "playwright is not installed")
    chromium_path = find_chromium()
    require(chromium_path is not None,
            f"no Chromium: none of {', '.join(CHROMIUM_NAMES)} is on PATH "
            "(or set MICROTENSOR_CHROMIUM to one)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url, viewport=None):
    """A page at `viewport` (1280x800 by default) that records its errors (uncaught and
    console) and every request it makes: (page, errors, requests)."""
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 800})
    errors, requests = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    return page, errors, requests


def expected_nodes() -> list:
    """The node each step should light, from a twin graph run through the engine."""
    twin, _ = attention_example()
    layout = plan_layout(twin)
    return [layout.step_node(step) for step in backward_steps(twin)]


@pytest.fixture(scope="module", params=["system", "bundled"])
def engine(request):
    """The page laid out by Graphviz's `dot` (where installed) and by graphviz-pure."""
    if request.param == "system":
        require(shutil.which("dot") is not None, "Graphviz's `dot` is not installed")
    return request.param


def test_player_steps_through_backward_in_engine_order(browser, tmp_path, engine):
    loss, _ = attention_example()
    path = write_player(loss, tmp_path / "attention.html", title="attention", engine=engine)
    order = expected_nodes()
    n = len(order)

    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())

    def current():
        return page.eval_on_selector_all("g.node.current", "els => els.map(e => e.id)")

    def visited():
        return set(page.eval_on_selector_all("g.node.visited", "els => els.map(e => e.id)"))

    assert page.inner_text("#counter") == f"1 / {n}"
    assert current() == [order[0]]
    for k in range(1, n):
        if k % 2:
            page.keyboard.press("ArrowRight")
        else:
            page.click("#next")
        assert page.inner_text("#counter") == f"{k + 1} / {n}"
        assert current() == [order[k]]
        assert visited() == set(order[:k]) - {order[k]}
    assert page.is_disabled("#next")
    page.keyboard.press("ArrowRight")  # past the end: stays on the last step
    assert page.inner_text("#counter") == f"{n} / {n}"

    for k in range(n - 2, -1, -1):
        page.keyboard.press("ArrowLeft")
        assert page.inner_text("#counter") == f"{k + 1} / {n}"
        assert current() == [order[k]]
    assert page.is_disabled("#prev")
    page.click("#next")
    assert current() == [order[1]]

    # The panel shows the current step's rule and numbers.
    softmax = next(k for k, step in enumerate(backward_steps(attention_example()[0]))
                   if step.node is not None and step.node.name == "softmax")
    for _ in range(softmax - 1):
        page.keyboard.press("ArrowRight")
    assert page.inner_text("#rule") == "dx = y * (g - sum(g * y, axis))"
    assert "softmax" in page.inner_text("#step-title")
    assert "gradient arriving at" in page.inner_text("#numbers")

    assert not errors
    assert all(url.startswith("file://") for url in requests), requests
    page.close()


def test_player_works_inline_in_a_notebook_iframe(browser, tmp_path):
    # What Jupyter shows for viz.play(loss): the page inside <iframe srcdoc=...>.
    order = expected_nodes()
    host = tmp_path / "notebook.html"
    host.write_text("<!DOCTYPE html><meta charset='utf-8'><h1>notebook</h1>"
                    + play(attention_example()[0])._repr_html_(), encoding="utf-8")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(host.as_uri())
    frame = page.frame_locator("iframe")
    counter = frame.locator("#counter")
    assert counter.inner_text() == f"1 / {len(order)}"
    frame.locator("#next").click()
    assert counter.inner_text() == f"2 / {len(order)}"
    frame.locator("#graph").click()            # focus inside the frame; then the keys work
    page.keyboard.press("ArrowRight")
    assert counter.inner_text() == f"3 / {len(order)}"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert counter.inner_text() == f"1 / {len(order)}"
    assert frame.locator("g.node.current").get_attribute("id") == order[0]
    assert not errors
    page.close()


NASTY_NAMES = ["</script><script>window.pwned=1</script>", "<img src=x onerror=window.pwned=2>",
               '"><svg onload=window.pwned=3>', "back\\slash\\N {braces} & &amp;",
               "\u202eRTL עברית العربية", "emoji 🦜👩‍🔬", "苹果 line\nbreak", "\x00\x1b ctrl"]


def load_named_player(browser, folder: Path, names: list[str], kind: str):
    """Write and open a player whose tensors, parameters, modules and title carry
    `names` (8 of them); step through it; return (page, step titles seen, errors)."""
    X = mt.randn(2, 3, name=names[0])
    W = mt.randn(3, 2, requires_grad=True, name=names[1])
    b = mt.randn(2, requires_grad=True, name=names[2])
    loss = ((X @ W + b).softmax(axis=-1) * 2.0).sum()
    params = {f"{names[3]}.{names[4]}": W, f"{names[5]}.{names[6]}!": b}
    path = write_player(loss, folder / "names.html", params=params, engine=kind,
                        title=names[7] + names[0])
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(path.as_uri())
    steps = int(page.get_attribute("body", "data-steps"))
    seen = set()
    for _ in range(steps):
        seen.add(page.text_content("#step-title"))
        page.keyboard.press("ArrowRight")
    return page, seen, errors


def assert_nothing_injected(page, errors):
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("document.querySelectorAll('img, iframe, svg svg, object, embed, "
                         "[onload], [onerror], [onclick]').length") == 0
    assert page.evaluate("document.scripts.length") == 2      # the step data and the player
    assert not errors, errors


def test_nasty_names_load_in_the_player_with_nothing_injected(browser, tmp_path, engine):
    page, seen, errors = load_named_player(browser, tmp_path, NASTY_NAMES, engine)
    assert_nothing_injected(page, errors)
    assert f"leaf {NASTY_NAMES[3]}.{NASTY_NAMES[4]}: its gradient is complete" in seen, seen
    assert NASTY_NAMES[0] in page.inner_text("h1")
    graph_text = page.inner_text("#graph")
    assert "苹果" in graph_text and "🦜" in graph_text and "עברית" in graph_text
    page.close()


NAMES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16) | st.sampled_from(
    NASTY_NAMES)


@settings(max_examples=4)   # per engine
@given(st.lists(NAMES, min_size=8, max_size=8))
def test_any_name_loads_in_the_player_with_nothing_injected(browser, engine, names):
    with tempfile.TemporaryDirectory() as folder:
        page, seen, errors = load_named_player(browser, Path(folder), names, engine)
        assert_nothing_injected(page, errors)
        assert len(seen) > 1
        page.close()
