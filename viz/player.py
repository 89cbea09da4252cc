"""An HTML page that steps through a backward pass: one self-contained file.

The page holds the drawn graph as inline SVG and every `BackwardStep` as embedded JSON.
Next/previous buttons (or the arrow keys) move through the steps in the engine's own
order: the current node is outlined, nodes already done are marked, and a side panel
shows the op's derivative rule, the gradient that arrived and what went to each input.
Nothing is fetched: no scripts, fonts or styles from the network, so the file works
offline and can be mailed around.

    >>> import viz
    >>> viz.write_player(loss, "out/backprop.html", params=model, title="attention")
    PosixPath('out/backprop.html')
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from microtensor.autograd import BackwardStep, backward_steps
from microtensor.errors import op_error
from microtensor.tensor import Tensor

from .graph import draw, require_dot, to_svg
from .labels import summary
from .layout import DEFAULT_MAX_NODES, Layout


def step_record(step: BackwardStep, layout: Layout, max_values: int = 64) -> dict:
    """One step as JSON-ready data: the node it acts at, the op, its rule, the numbers."""
    k = layout.index[id(step.tensor)]
    record = {
        "node": layout.step_node(step),
        "tensor": layout.tensor_node(k),
        "name": layout.describe(step.tensor),
        "grad_out": summary(step.grad_out, max_values),
    }
    if step.node is None:
        record.update(kind="leaf", op="leaf", rule=f"{layout.label_of(step.tensor)}.grad += g")
        record["sends"] = []
        return record
    config = {key: value for key, value in (step.node.config or {}).items()
              if isinstance(value, (int, float, str)) and value is not False}
    record.update(kind="op", op=step.node.name, rule=step.node.rule,
                  config=", ".join(f"{key}={value!r}" for key, value in config.items()))
    record["sends"] = [
        {"to": layout.describe(inp), "node": layout.tensor_node(layout.index[id(inp)]),
         **summary(sent, max_values)}
        for inp, sent in zip(step.node.inputs, step.grads_in)
        if isinstance(inp, Tensor) and sent is not None]
    return record


def _inline_svg(svg: str) -> str:
    """Graphviz's SVG without the XML prolog, DOCTYPE and comments (it goes inside HTML)."""
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    return svg.strip()


def _json_for_script(data) -> str:
    """JSON that cannot close its <script> element early (no raw <, > or &)."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return (Path(__file__).parent / "assets" / name).read_text(encoding="utf-8")


def player_html(svg: str, steps: list[dict], title: str) -> str:
    """The whole page as one string: CSS, SVG, step data and script inlined."""
    data = {"title": title, "steps": steps}
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
        f"<style>\n{_asset('player.css')}\n</style>\n</head>\n<body>\n"
        f"<header><h1>{html.escape(title)}</h1>\n"
        "<nav><button id=\"prev\" type=\"button\" title=\"previous step (←)\">◀ prev</button>"
        "<span id=\"counter\" aria-live=\"polite\">0 / 0</span>"
        "<button id=\"next\" type=\"button\" title=\"next step (→)\">next ▶</button></nav>"
        "<span class=\"hint\">arrow keys ← → step; the outlined node is the current one, "
        "marked nodes are done</span></header>\n"
        f"<main><div id=\"graph\">{_inline_svg(svg)}</div>\n"
        "<aside id=\"panel\"><h2 id=\"step-title\"></h2><pre id=\"rule\"></pre>"
        "<div id=\"numbers\"></div></aside></main>\n"
        f"<script type=\"application/json\" id=\"steps\">{_json_for_script(data)}</script>\n"
        f"<script>\n{_asset('player.js')}\n</script>\n</body>\n</html>\n")


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename over `path`: a crash
    never leaves a half-written page."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes it 0600; pages are for sharing
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_player(root: Tensor, path, *, params=None, title: str | None = None, grad=None,
                 collapse=None, max_nodes: int = DEFAULT_MAX_NODES,
                 max_values: int = 64) -> Path:
    """Run the backward pass of `root` and write a step-through page to `path`.

    Like `root.backward()`, this fills the leaves' `.grad` (call it instead of backward,
    not after). Needs Graphviz's `dot` to lay out the graph; without it, nothing is run
    and one error says how to install it. Returns the path written.

    >>> viz.write_player(loss, "backprop.html", title="softmax attention")
    """
    if not isinstance(root, Tensor):
        raise op_error("write_player", f"expected the Tensor to backpropagate from, got "
                       f"{type(root).__name__}", TypeError, "pass e.g. write_player(loss, path)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = draw(root, params=params, show=("shape", "values"), collapse=collapse,
                 max_nodes=max_nodes)
    if not root.requires_grad:
        # Let the engine word this error, before any file is written.
        next(backward_steps(root, grad))
    # Check `dot` before running backward: a failure must not consume the graph.
    require_dot("write_player", _save_source(graph, path))
    svg = to_svg(graph, "write_player")
    layout = graph.layout
    records = [step_record(step, layout, max_values)
               for step in backward_steps(root, grad)]
    write_atomic(path, player_html(svg, records, title or "backward pass, step by step"))
    return path


def _save_source(graph, path: Path) -> Path | None:
    """Keep the .dot source next to the page only when `dot` is missing (for the error)."""
    if shutil.which("dot") is not None:
        return None
    source = path.with_suffix(".dot")
    source.write_text(graph.source, encoding="utf-8")
    return source
