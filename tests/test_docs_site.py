"""The documentation site builds in strict mode (a broken link or a missing reference fails
it), offline, and works in Chromium: pages load with no console error and no request
leaving the machine, a lesson page's embedded player steps with its buttons, and search
finds pages. The lessons run into notebooks as the site is built (docs/hooks.py), so a
lesson that fails its checks fails this build too."""
from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_browser import _require, browser  # noqa: F401  (the shared Chromium fixture)

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ("http://127.0.0.1", "data:", "about:", "blob:")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built from this checkout into a fresh folder and served on localhost."""
    try:
        import mkdocs  # noqa: F401
        import mkdocs_jupyter  # noqa: F401
    except ImportError as error:
        _require(False, f"the docs tools are not installed ({error}): pip install -e '.[test]'")
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MICROTENSOR_DOCS_FRESH": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(folder)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1800, check=False)   # its stderr, below, says why
    assert built.returncode == 0, built.stderr[-4000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def open_page(browser, url):  # noqa: F811
    """A page at 1280x800 that records console errors and every request off the machine."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors, external = [], []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: request.url.startswith(LOCAL)
            or external.append(request.url))
    page.goto(url)
    page.wait_for_load_state("networkidle")
    return page, errors, external


@pytest.mark.parametrize("path", ["", "lessons/backprop/", "lessons/scaling/", "viz/",
                                  "api/transformer/", "performance/"])
def test_pages_load_offline_with_no_console_error(browser, site, path):  # noqa: F811
    page, errors, external = open_page(browser, f"{site}/{path}")
    assert page.locator("article h1, article h2").count() > 0
    assert not errors, errors
    assert not external, external
    page.close()


def test_a_lesson_page_shows_its_checks_pictures_and_a_player_that_steps(browser,  # noqa: F811
                                                                       site):
    page, errors, external = open_page(browser, f"{site}/lessons/backprop/")
    text = page.inner_text("article")
    assert "✓" in text and "check failed" not in text
    assert page.locator("article svg").count() > 0            # the pictures, inline
    player = page.frame_locator("iframe").first
    total = int(player.locator("#counter").inner_text().split("/")[1])
    assert player.locator("#counter").inner_text() == f"1 / {total}"
    player.locator("#next").click()
    player.locator("#next").click()
    assert player.locator("#counter").inner_text() == f"3 / {total}"
    player.locator("#prev").click()
    assert player.locator("#counter").inner_text() == f"2 / {total}"
    assert not errors and not external, (errors, external)
    page.close()


def test_search_finds_pages(browser, site):  # noqa: F811
    page, errors, external = open_page(browser, site)
    page.click(".md-search__input")
    page.keyboard.type("softmax", delay=20)
    page.wait_for_selector(".md-search-result__item", timeout=15_000)
    titles = page.locator(".md-search-result__item").all_inner_texts()
    assert any("Softmax" in title or "softmax" in title for title in titles), titles
    assert not errors and not external, (errors, external)
    page.close()


def test_the_api_reference_shows_a_primitives_derivative_rule(browser, site):  # noqa: F811
    page, _, _ = open_page(browser, f"{site}/api/microtensor/")
    assert "Derivative rule: dx = y * (g - sum(g * y, axis))" in page.inner_text("article")
    page.close()
