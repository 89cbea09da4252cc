"""The player on a real model in headless Chromium, with geometry read from the DOM: the
current node stays legible and in view while stepping; zoom, pan, fit-all, folding and
search work from the keyboard and mouse; nothing logs an error. Screenshots of the first,
middle and last step land in the test's folder."""
from __future__ import annotations

import re

import pytest
from test_browser import browser  # noqa: F401  (the shared Chromium fixture)

from viz.examples import decoder_lm_example
from viz.player import write_player

pytest.importorskip("transformer")
VIEWPORT = {"width": 1280, "height": 800}


def open_player(browser, path):  # noqa: F811
    page = browser.new_page(viewport=VIEWPORT)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(path.as_uri())
    return page, errors


def rect(page, selector):
    return page.evaluate("""s => { const e = document.querySelector(s); if (!e) return null;
        const r = e.getBoundingClientRect();
        return {x: r.x, y: r.y, w: r.width, h: r.height}; }""", selector)


def current_label(page):
    """The current node's largest text: its size in pixels (font-size times the zoom)
    and its box on screen. For a folded box, the module's name."""
    return page.evaluate("""() => {
        const node = document.querySelector('.current');
        const texts = node.classList.contains('fold-box') ? [node.querySelector('text')]
                                                         : [...node.querySelectorAll('text')];
        let best = null;
        for (const t of texts) {
            const px = parseFloat(t.getAttribute('font-size')) * t.getScreenCTM().a;
            if (!best || px > best.px) {
                const r = t.getBoundingClientRect();
                best = {px: px, x: r.x, y: r.y, w: r.width, h: r.height};
            }
        }
        return best; }""")


def assert_legible(page, where=""):
    """The rule: the current node's text is 11 to 16 px high and inside the graph pane."""
    label, pane = current_label(page), rect(page, "#graph")
    assert 11 <= label["px"] <= 16, (where, position(page), label)
    assert inside(label, pane), (where, position(page), label, pane)


def total(page) -> int:
    return int(page.inner_text("#counter").split("/")[1])


def position(page) -> int:
    return int(page.inner_text("#counter").split("/")[0])


def inside(box, pane, slack=2):
    return (box["x"] >= pane["x"] - slack and box["y"] >= pane["y"] - slack and
            box["x"] + box["w"] <= pane["x"] + pane["w"] + slack and
            box["y"] + box["h"] <= pane["y"] + pane["h"] + slack)


@pytest.fixture(scope="module")
def open_model(tmp_path_factory):
    loss, model = decoder_lm_example(4)
    return write_player(loss, tmp_path_factory.mktemp("player") / "open.html", params=model,
                        collapse=False, title="4-layer DecoderLM, every block open")


@pytest.fixture(scope="module")
def folded_model(tmp_path_factory):
    loss, model = decoder_lm_example(4)
    return write_player(loss, tmp_path_factory.mktemp("player") / "folded.html",
                        params=model, title="4-layer DecoderLM")


def test_the_current_node_is_legible_and_in_view_at_every_step(browser, open_model,  # noqa: F811
                                                              tmp_path):
    page, errors = open_player(browser, open_model)
    n = total(page)
    assert n > 100                                    # every block open: every op a step
    for _ in range(20):
        assert_legible(page)
        page.keyboard.press("ArrowRight")
    # Screenshots at the first, middle and last step, for a person to look at.
    for name, target in (("first", 1), ("middle", n // 2), ("last", n)):
        while position(page) > target:
            page.keyboard.press("ArrowLeft")
        while position(page) < target:
            page.keyboard.press("ArrowRight")
        assert_legible(page, name)
        page.screenshot(path=str(tmp_path / f"player-{name}-step.png"))
    assert not errors, errors
    page.close()


def test_zoom_pan_and_fit_all(browser, open_model):  # noqa: F811
    page, errors = open_player(browser, open_model)
    pane = rect(page, "#graph")
    start = rect(page, "g.node.current")
    page.keyboard.press("+")
    bigger = rect(page, "g.node.current")
    assert bigger["w"] > 1.3 * start["w"]
    page.click("#zoom-out")
    assert abs(rect(page, "g.node.current")["w"] - start["w"]) < 2 + 0.01 * start["w"]
    page.mouse.move(pane["x"] + pane["w"] / 2, pane["y"] + pane["h"] / 2)
    page.mouse.wheel(0, -300)                         # wheel up: zoom in under the cursor
    assert rect(page, "g.node.current")["w"] > 1.3 * start["w"]
    page.mouse.wheel(0, 300)
    back = rect(page, "g.node.current")["w"]
    page.keyboard.down("Control")                     # a trackpad pinch: wheel + ctrlKey
    page.mouse.wheel(0, -40)
    page.keyboard.up("Control")
    assert rect(page, "g.node.current")["w"] > 1.3 * back
    page.mouse.wheel(0, 300)
    before = rect(page, "g.node.current")
    page.mouse.move(pane["x"] + 200, pane["y"] + 200)
    page.mouse.down()
    page.mouse.move(pane["x"] + 320, pane["y"] + 150, steps=5)
    page.mouse.up()
    after = rect(page, "g.node.current")
    assert abs(after["x"] - before["x"] - 120) < 3 and abs(after["y"] - before["y"] + 50) < 3
    page.keyboard.press("f")                          # fit all: the whole graph in the pane
    assert page.get_attribute("#fit", "aria-pressed") == "true"
    assert inside(rect(page, "#graph g.graph"), pane, slack=4)
    page.click("#fit")                                # and again: follow the current node
    assert page.get_attribute("#fit", "aria-pressed") == "false"
    assert_legible(page)
    page.keyboard.press("f")
    page.keyboard.press("ArrowRight")                 # a step leaves the overview
    assert page.get_attribute("#fit", "aria-pressed") == "false"
    assert_legible(page)
    assert not errors, errors
    page.close()


def test_folded_blocks_open_and_close_on_click_and_are_one_step(browser,  # noqa: F811
                                                                 folded_model):
    page, errors = open_player(browser, folded_model)
    steps = int(page.get_attribute("body", "data-steps"))
    folded_total = total(page)
    assert folded_total < steps / 5                   # each block is one step
    assert page.locator(".fold-box").count() >= 6
    # Step onto blocks.3: one step, whose panel says what flowed in and out.
    while "blocks.3 (folded)" not in page.inner_text("#step-title"):
        page.keyboard.press("ArrowRight")
    here = position(page)
    page.keyboard.press("ArrowRight")
    assert "blocks.2 (folded)" in page.inner_text("#step-title")
    assert position(page) == here + 1
    assert "gradient arriving at" in page.inner_text("#numbers")
    assert "sends to" in page.inner_text("#numbers")
    assert "blocks.2" in page.inner_text("#crumbs")
    # Open blocks.1 with a click on its box: its ops become steps.
    page.click("#fit")
    page.click('.fold-box[data-path="blocks.1"]')
    opened = total(page)
    assert opened > folded_total + 20 and page.locator('.fold-box[data-path="blocks.1"]'
                                                        ).count() == 0
    # Close it again with a click on the module's name in the graph.
    cluster = page.evaluate("""() => { for (const g of document.querySelectorAll('g.cluster'))
        if (g.querySelector('title').textContent === 'cluster_blocks.1') return g.id; }""")
    page.click(f"#{cluster} text")
    assert total(page) == folded_total
    # "step inside" opens the current folded block and stands on its first op.
    page.click("#fit")
    assert "blocks.2 (folded)" in page.inner_text("#step-title")
    page.keyboard.press("Enter")
    assert "(folded)" not in page.inner_text("#step-title")
    assert "blocks.2" in page.inner_text("#crumbs")
    assert total(page) > folded_total
    assert not errors, errors
    page.close()


def test_search_jumps_to_the_step_where_a_gradient_is_complete(browser,  # noqa: F811
                                                              folded_model):
    page, errors = open_player(browser, folded_model)
    page.click("#search")
    page.keyboard.type("blocks.0.self_attn.W_q.weight")
    page.keyboard.press("Enter")
    assert page.inner_text("#step-title") == (
        "leaf blocks.0.self_attn.W_q.weight: its gradient is complete")
    assert "blocks.0" in page.inner_text("#crumbs")
    assert_legible(page)
    page.fill("#search", "no such tensor")
    page.press("#search", "Enter")
    assert "no tensor called" in page.inner_text("#found")
    assert not errors, errors
    page.close()


def test_the_key_explains_the_marks_and_toggles(browser, folded_model, tmp_path):  # noqa: F811
    page, errors = open_player(browser, folded_model)
    assert page.is_visible("#key")
    for words in ("the current step", "its gradient is complete", "receives a gradient",
                  "blue < 0 < red", "purple < 0 < green", "a folded module"):
        assert words in page.inner_text("#key")
    page.screenshot(path=str(tmp_path / "player-key.png"))
    page.keyboard.press("k")
    assert not page.is_visible("#key")
    page.click("#key-button")
    assert page.is_visible("#key")
    assert not errors, errors
    page.close()


def test_search_ranks_parameters_first_cycles_on_enter_and_gives_the_keys_back(
        browser, folded_model):  # noqa: F811
    page, errors = open_player(browser, folded_model)
    page.click("#search")
    page.keyboard.type("W_q")
    page.keyboard.press("Enter")
    first = page.inner_text("#step-title")
    assert re.fullmatch(r"leaf blocks\.\d\.self_attn\.W_q\.weight: its gradient is complete",
                        first), first
    found = page.inner_text("#found")
    assert re.search(r": 1 of (\d+)", found) and int(re.search(r"of (\d+)", found)[1]) >= 8
    page.keyboard.press("Enter")                      # the next match
    assert ": 2 of " in page.inner_text("#found")
    second = page.inner_text("#step-title")
    assert second != first and "W_q" in second
    here = position(page)
    page.keyboard.press("ArrowRight")                 # the keys work right after a jump
    assert position(page) == here + 1
    page.click("#search")
    page.keyboard.press("Escape")                     # Esc leaves the search box
    page.keyboard.press("ArrowLeft")
    assert position(page) == here
    assert not errors, errors
    page.close()


def test_first_middle_and_last_step_are_legible_also_after_fit_all_and_a_search(
        browser, folded_model, tmp_path):  # noqa: F811
    page, errors = open_player(browser, folded_model)
    n = total(page)
    for name, target in (("first", 1), ("middle", n // 2), ("last", n)):
        while position(page) < target:
            page.keyboard.press("ArrowRight")
        assert_legible(page, name)
        page.screenshot(path=str(tmp_path / f"folded-{name}-step.png"))
    page.keyboard.press("f")
    page.click("#search")
    page.keyboard.type("tok_embed.weight")
    page.keyboard.press("Enter")
    assert page.get_attribute("#fit", "aria-pressed") == "false"
    assert_legible(page, "fit all, then a search")
    page.screenshot(path=str(tmp_path / "folded-after-search.png"))
    assert not errors, errors
    page.close()


def test_the_graph_fills_in_gradients_as_you_step(browser, open_model):  # noqa: F811
    page, errors = open_player(browser, open_model)
    badges = page.locator(".grad-badge")
    assert badges.count() == 1                        # the loss's own gradient, 1
    assert page.text_content(".grad-badge") == "|g| 1"
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert badges.count() >= 5
    page.keyboard.press("ArrowLeft")
    assert badges.count() < 6 and badges.count() >= 4
    assert not errors, errors
    page.close()
