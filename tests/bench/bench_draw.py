"""Time to draw and render the loss graph of the 4-layer reference DecoderLM.

    python tests/bench/bench_draw.py
"""
import shutil
import tempfile
import time

from common import emit
from reference import CONFIG, batch

import microtensor as mt
import microtensor.functional as F
import viz
from transformer import DecoderLM


def run() -> dict:
    c = CONFIG
    mt.manual_seed(0)
    model = DecoderLM(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"], c["d_ff"],
                      max_len=c["seq"])
    ids, targets = batch(c)
    loss = F.cross_entropy(model(ids), targets)
    results = {}
    for label, collapse in (("folded", True), ("unfolded", None)):
        start = time.perf_counter()
        graph = viz.draw(loss, params=model, collapse=collapse, max_nodes=10_000)
        drawn = time.perf_counter()
        if shutil.which("dot"):
            with tempfile.TemporaryDirectory() as folder:
                viz.render(graph, f"{folder}/loss.svg")
        results[label] = {"draw_s": drawn - start,
                          "render_s": time.perf_counter() - drawn if shutil.which("dot")
                          else None}
    return emit("draw", results)


if __name__ == "__main__":
    run()
