"""The attention view and the attribution page in headless Chromium: they load with no
console error and no network request; heads are shown and hidden by their buttons, the
layer menu switches layers, hovering over a token keeps only its lines, and the line
counts are those the weights say. Works inline in a notebook's iframe. Screenshots land
in the test's folder (attention-*.png, attribution-*.png)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_attention_view import IDS, loaded_models
from test_attribution import IDS as ATTRIBUTION_IDS
from test_attribution import loaded_models as attribution_models
from test_browser import (
    browser,  # noqa: F401  (the shared Chromium fixture)
    open_page,
)

from viz.attention_view import MIN_WEIGHT, view_attention
from viz.attribution import integrated_gradients, saliency

TOKENS = ["The", " cat", " sat", " on", " the", " warm", " mat", "."]
VIEWPORT = {"width": 1100, "height": 800}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return loaded_models(tmp_path_factory.mktemp("hub"))


def expected_lines(view, layer, heads, query=None) -> int:
    """The lines the page should draw: weights of at least MIN_WEIGHT after the page's
    rounding to 4 decimals."""
    weights = np.round(view.weights[layer, sorted(heads)], 4)
    if query is not None:
        weights = weights[:, query]
    return int((weights >= MIN_WEIGHT).sum())


def line_heads(page) -> list:
    return page.eval_on_selector_all("line.attention-line",
                                     "lines => lines.map(l => Number(l.dataset.head))")


def shown_figures(page) -> list:
    return page.eval_on_selector_all(
        "figure.heatmap:not([hidden])",
        "figures => figures.map(f => [Number(f.dataset.layer), Number(f.dataset.head)])")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_attention_view_heads_and_layers_are_selectable(browser, loaded, tmp_path,  # noqa: F811
                                                        name):
    view = view_attention(loaded[name], IDS, tokens=TOKENS, title=f"{name}: attention")
    path = view.save(tmp_path / "attention.html")
    page, errors, requests = open_page(browser, path.as_uri(), VIEWPORT)
    heads = set(range(view.n_heads))

    assert sorted(set(line_heads(page))) == sorted(heads)
    assert len(line_heads(page)) == expected_lines(view, 0, heads)
    assert shown_figures(page) == [[0, h] for h in sorted(heads)]
    assert page.inner_text("#status").startswith("blocks.0.self_attn: heads 0, 1, 2, 3")
    page.screenshot(path=str(tmp_path / f"attention-{name}-all-heads.png"), full_page=True)

    # a head's button hides its lines and its heatmap, and shows them again
    page.click('button.head[data-head="1"]')
    assert 1 not in line_heads(page) and len(line_heads(page)) == \
        expected_lines(view, 0, heads - {1})
    assert [0, 1] not in shown_figures(page)
    assert page.get_attribute('button.head[data-head="1"]', "aria-pressed") == "false"
    page.click('button.head[data-head="1"]')
    assert 1 in line_heads(page)

    # one head alone, in the last layer
    page.click("#none")
    assert line_heads(page) == [] and shown_figures(page) == []
    page.click('button.head[data-head="2"]')
    last = view.n_layers - 1
    page.select_option("#layer", str(last))
    assert set(line_heads(page)) == {2}
    assert len(line_heads(page)) == expected_lines(view, last, {2})
    assert shown_figures(page) == [[last, 2]]
    page.screenshot(path=str(tmp_path / f"attention-{name}-layer{last}-head2.png"),
                    full_page=True)

    # hovering over a query token keeps its lines only
    page.click("#all")
    page.hover('text.token.query[data-index="5"]')
    queries = page.eval_on_selector_all("line.attention-line",
                                        "lines => lines.map(l => Number(l.dataset.query))")
    assert set(queries) == {5} and len(queries) == expected_lines(view, last, heads, query=5)
    page.screenshot(path=str(tmp_path / f"attention-{name}-hover.png"))
    page.mouse.move(1, 1)
    assert len(line_heads(page)) == expected_lines(view, last, heads)

    assert not errors, errors
    assert requests == [path.as_uri()], requests
    page.close()


def test_attention_view_works_inline_in_a_notebook_iframe(browser, loaded, tmp_path):  # noqa: F811
    view = view_attention(loaded["gpt2"], IDS, tokens=TOKENS)
    host = tmp_path / "notebook.html"
    host.write_text("<!DOCTYPE html><meta charset='utf-8'><h1>notebook</h1>"
                    + view._repr_html_(), encoding="utf-8")
    page, errors, requests = open_page(browser, host.as_uri(), VIEWPORT)
    frame = page.frame_locator("iframe")
    assert frame.locator("line.attention-line").count() == \
        expected_lines(view, 0, set(range(4)))
    frame.locator('button.head[data-head="0"]').click()
    assert frame.locator('line.attention-line[data-head="0"]').count() == 0
    page.screenshot(path=str(tmp_path / "attention-notebook.png"))
    assert not errors, errors
    assert requests == [host.as_uri()], requests
    page.close()


@pytest.fixture(scope="module")
def attribution_loaded(tmp_path_factory):
    return attribution_models(tmp_path_factory)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_attribution_page_loads_and_shows_every_token(browser, attribution_loaded,  # noqa: F811
                                                      tmp_path, name):
    model, ids = attribution_loaded[name], ATTRIBUTION_IDS
    tokens = [*TOKENS[:-1], " and", " slept", "."]
    baseline = None if name == "gpt2" else model.tok_embed(np.zeros((1, len(ids)), int)).data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = integrated_gradients(model, ids, target=7, position=6, tokens=tokens,
                                      baseline=baseline)
    path = result.save(tmp_path / f"attribution-{name}.html")
    page, errors, requests = open_page(browser, path.as_uri(), VIEWPORT)
    boxes = page.eval_on_selector_all(
        "span.token", "spans => spans.map(s => [s.textContent, getComputedStyle(s)"
        ".backgroundColor])")
    assert [text for text, _ in boxes] == [t.replace(" ", "␣") for t in tokens]
    strongest = result.ranked()[0]
    assert boxes[strongest][1] in ("rgb(33, 102, 172)", "rgb(178, 24, 43)")
    assert boxes[7][1] == "rgb(255, 255, 255)"      # after the position: exactly zero
    assert page.inner_text(".completeness").startswith("✓")
    page.screenshot(path=str(tmp_path / f"attribution-{name}.png"))
    saliency(model, ids, target=7, position=6, tokens=tokens).save(tmp_path / "saliency.html")
    page.goto((tmp_path / "saliency.html").as_uri())
    page.screenshot(path=str(tmp_path / f"attribution-{name}-saliency.png"))
    assert not errors, errors
    assert all(url.startswith("file://") for url in requests) and len(requests) == 2
    page.close()
