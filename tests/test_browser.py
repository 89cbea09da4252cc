"""The HTML player in headless Chromium: keys and buttons move the highlight through the
backward pass in the engine's order, and the page fetches nothing from the network."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from microtensor.autograd import backward_steps
from viz.examples import attention_example
from viz.layout import plan_layout
from viz.player import write_player

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _require(available: bool, reason: str):
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (required when CI is set)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _require(sync_playwright is not None, "playwright is not installed")
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed")
    _require(shutil.which("dot") is not None, "Graphviz `dot` is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def expected_nodes() -> list:
    """The node each step should light, from a twin graph run through the engine."""
    twin, _ = attention_example()
    layout = plan_layout(twin)
    return [layout.step_node(step) for step in backward_steps(twin)]


def test_player_steps_through_backward_in_engine_order(browser, tmp_path):
    loss, _ = attention_example()
    path = write_player(loss, tmp_path / "attention.html", title="attention")
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
