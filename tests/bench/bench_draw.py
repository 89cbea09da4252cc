"""Time to draw and render the loss graph of the 4-layer reference DecoderLM, and to lay
out that graph and the backprop lesson's graph with each engine that runs here (system
`dot`, the bundled graphviz-pure).

    python tests/bench/bench_draw.py
"""
import re
import tempfile
import time

from common import emit
from reference import CONFIG, batch

import microtensor as mt
import microtensor.functional as F
import viz
from microtensor.autograd import backward_steps
from transformer import DecoderLM
from viz.engine import available_engines


def backprop_lesson_graph():
    """The picture of `python -m viz lesson backprop` (the README's)."""
    from viz.lessons import backprop

    loss, t, _ = backprop.fresh_graph()
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
    mt.manual_seed(0)
    model = DecoderLM(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"], c["d_ff"],
                      max_len=c["seq"])
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
    return emit("draw", results)


if __name__ == "__main__":
    run()
