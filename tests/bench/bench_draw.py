"""Time to draw and render the loss graph of the 4-layer reference DecoderLM, and to lay
out that graph and the backprop lesson's graph with each engine that runs here (system
`dot`, the bundled graphviz-pure). Then a chain of 1000 `Linear(2, 2)` (2000 parameter
tensors, folded by default): seconds to draw and to render with each engine. Then the
player of a 12-layer, d_model 128 DecoderLM: seconds to write it, its size, and its time
to first paint in headless Chromium (when playwright and Chromium are installed).

    python tests/bench/bench_draw.py
"""
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from common import emit
from reference import CONFIG, batch, reference_model

import microtensor as mt
import microtensor.functional as F
import viz
from microtensor.autograd import backward_steps
from viz.engine import available_engines


def backprop_lesson_graph():
    """The picture of `python -m viz lesson backprop` (the README's)."""
    from viz.examples import backprop_example

    loss, t, _ = backprop_example()
    return viz.draw(loss, highlight=t["W_q"], steps=list(backward_steps(loss)))


def best_layout_time(engine, graph, repeats: int = 5) -> float:
    """The fastest of `repeats` layouts to SVG: the engine's own cost, least disturbed."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.run(graph.source, "svg")
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> dict:
    c = CONFIG
    model = reference_model(c)
    ids, targets = batch(c)
    loss = F.cross_entropy(model(ids), targets)
    results, graphs = {}, {"backprop lesson": backprop_lesson_graph()}
    for label, collapse in (("folded", True), ("unfolded", None)):
        start = time.perf_counter()
        graph = viz.draw(loss, params=model, collapse=collapse, max_nodes=10_000)
        drawn = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            viz.render(graph, f"{folder}/loss.svg")       # the engine find_engine picks
        results[label] = {"draw_s": drawn - start, "render_s": time.perf_counter() - drawn}
        graphs[f"4-layer DecoderLM, {label}"] = graph
    results["layout_s"] = {
        engine.label: {name: best_layout_time(engine, graph) for name, graph in graphs.items()}
        for engine in available_engines()}
    node = re.compile(r"^\s*(?:t|op|m)\d+ \[", re.MULTILINE)
    results["nodes"] = {name: len(node.findall(graph.source)) for name, graph in graphs.items()}
    results["chain of 1000 Linear(2, 2)"] = long_chain(1000)
    results["player, 12 layers, d_model 128"] = player_at_scale()
    return emit("draw", results)


def long_chain(n_layers: int) -> dict:
    """Draw the loss of a chain of `n_layers` Linear(2, 2) with params=model (each layer
    folded into a box, as by default at this size), then render it with each engine."""
    from microtensor import nn

    mt.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(n_layers)])
    loss = model(mt.randn(3, 2)).sum()
    start = time.perf_counter()
    graph = viz.draw(loss, params=model)
    result = {"draw_s": time.perf_counter() - start}
    for engine in available_engines():
        start = time.perf_counter()
        engine.run(graph.source, "svg")
        result[f"render_s ({engine.label})"] = time.perf_counter() - start
    return result


def player_at_scale(n_layers: int = 12, d_model: int = 128) -> dict:
    """Write the player of an n-layer DecoderLM (every node laid out, blocks folded in the
    page) and open it in Chromium: seconds to write, megabytes, milliseconds to first
    paint and until the script has shown the first step."""
    from viz.examples import decoder_lm_example

    loss, model = decoder_lm_example(n_layers, d_model=d_model)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = viz.write_player(loss, f"{folder}/player.html", params=model)
        result = {"write_s": time.perf_counter() - start,
                  "size_mb": os.path.getsize(path) / 1e6}
        result.update(first_paint(path))
    return result


def find_chromium() -> str | None:
    """As the browser tests find it: $MICROTENSOR_CHROMIUM, else the first browser of
    these names on PATH."""
    names = [os.environ["MICROTENSOR_CHROMIUM"]] if os.environ.get("MICROTENSOR_CHROMIUM") \
        else ["chromium", "chromium-browser", "google-chrome"]
    return next(filter(None, map(shutil.which, names)), None)


def first_paint(path) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"first_paint_ms": None}
    chromium = find_chromium()
    if chromium is None:
        return {"first_paint_ms": None}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        start = time.perf_counter()
        page.goto(Path(path).resolve().as_uri())
        page.wait_for_selector(".current", state="attached")
        ready_ms = (time.perf_counter() - start) * 1000
        paint = page.evaluate("""() => { const p = performance.getEntriesByName(
            'first-contentful-paint')[0] || performance.getEntriesByName('first-paint')[0];
            return p ? p.startTime : null; }""")
        browser.close()
    return {"first_paint_ms": paint, "first_step_shown_ms": ready_ms}


if __name__ == "__main__":
    run()
