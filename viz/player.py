"""An HTML page that steps through a backward pass: one self-contained file.

The page holds the drawn graph as inline SVG and every `BackwardStep` as embedded JSON.
Next/previous buttons (or the arrow keys) move through the steps in the engine's own
order: the current node is outlined, nodes already done are marked, and a side panel
shows the op's derivative rule, the gradient that arrived and what went to each input.
The view follows the current node at a readable size (zoom, pan and "fit all" as well).
For a model the graph is laid out with every module open and the modules `draw` would
fold start folded in the page: a folded block is one step, and opens or closes on click,
so folding never needs a second layout. A search box jumps to the step where a named
tensor's gradient is complete. Nothing is fetched: no scripts, fonts or styles from the
network, so the file works offline and can be mailed around.

    >>> import viz
    >>> viz.write_player(loss, "out/backprop.html", params=model, title="attention")
    PosixPath('out/backprop.html')
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from microtensor.autograd import BackwardStep, backward_steps
from microtensor.errors import op_error
from microtensor.files import check_writable
from microtensor.tensor import Tensor

from .engine import DotNotFoundError, find_engine, write_atomic
from .fused import as_drawn
from .graph import draw
from .labels import format_config, summary
from .layout import DEFAULT_MAX_NODES, Layout, plan_layout


def step_record(step: BackwardStep, layout: Layout, max_values: int = 64) -> dict:
    """One step as JSON-ready data: the node it acts at, the op, its rule, the numbers."""
    k = layout.index[id(step.tensor)]
    record = {
        "node": layout.step_node(step),
        "tensor": layout.tensor_node(k),
        "name": layout.describe(step.tensor),
        "grad_out": summary(step.grad_out, max_values),
        "module": layout.modules[id(step.tensor)] or "",
        # What a search finds first: 0 a parameter, 1 a tensor its user named, 2 the rest.
        "rank": 0 if step.node is None and layout.names.get(id(step.tensor)) else
                1 if step.tensor.name else 2,
    }
    if step.node is None:
        record.update(kind="leaf", op="leaf", rule=f"{layout.label_of(step.tensor)}.grad += g")
        record["sends"] = []
        return record
    record.update(kind="op", op=step.node.name, rule=step.node.rule,
                  config=format_config(step.node.config))
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


# What the colours and marks mean; the "key" button or the k key shows and hides it.
KEY = (
    '<div id="key" aria-label="key"><b>key</b>'
    '<div><span class="mark now"></span>the current step</div>'
    '<div><span class="mark done"></span>done: its gradient is complete</div>'
    '<div><span class="mark gets"></span>receives a gradient from this step</div>'
    '<div><span class="badge">|g| 0.41</span>the norm of a complete gradient</div>'
    '<div><span class="cells values"></span>values: blue &lt; 0 &lt; red</div>'
    '<div><span class="cells grads"></span>gradients (panel): purple &lt; 0 &lt; green</div>'
    '<div><span class="mark constant"></span>dashed edge: a constant, no gradient</div>'
    '<div><span class="mark fold"></span>a folded module: click to open</div></div>')


def _asset(name: str) -> str:
    return (Path(__file__).parent / "assets" / name).read_text(encoding="utf-8")


def player_html(svg: str, steps: list[dict], title: str, folds: dict | None = None) -> str:
    """The whole page as one string: CSS, SVG, step data and script inlined. `folds`
    says which module each node and cluster stands for, and which start folded."""
    data = {"title": title, "steps": steps, **(folds or {})}
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
        f"<style>\n{_asset('player.css')}\n</style>\n</head>\n<body>\n"
        f"<header><h1>{html.escape(title)}</h1>\n"
        "<nav><button id=\"prev\" type=\"button\" title=\"previous step (←)\">◀ prev</button>"
        "<span id=\"counter\" aria-live=\"polite\">0 / 0</span>"
        "<button id=\"next\" type=\"button\" title=\"next step (→)\">next ▶</button>"
        "<button id=\"inside\" type=\"button\" title=\"open the folded module and step "
        "through it (Enter)\" disabled>step inside</button></nav>"
        "<nav><button id=\"zoom-out\" type=\"button\" title=\"zoom out (-)\">−</button>"
        "<button id=\"zoom-in\" type=\"button\" title=\"zoom in (+)\">+</button>"
        "<button id=\"fit\" type=\"button\" aria-pressed=\"false\" title=\"the whole "
        "graph; press again to follow the current step (f)\">fit all</button></nav>"
        "<input id=\"search\" type=\"search\" placeholder=\"find a tensor (/)\" "
        "title=\"jump to the step where this tensor's gradient is complete: parameters "
        "first; Enter again for the next match, Esc to leave\">"
        "<span id=\"found\" class=\"hint\"></span>"
        "<button id=\"key-button\" type=\"button\" aria-pressed=\"true\" title=\"what the "
        "colours and marks mean (k)\">key</button>"
        "<span class=\"hint\">← → step · wheel/pinch zoom · drag to pan · click a module's "
        "name to fold it, a folded box to open it</span></header>\n"
        "<div id=\"crumbs\" aria-label=\"where in the model\"></div>\n"
        f"<main><div id=\"graph\" tabindex=\"-1\">{_inline_svg(svg)}{KEY}</div>\n"
        "<aside id=\"panel\"><h2 id=\"step-title\"></h2><pre id=\"rule\"></pre>"
        "<div id=\"numbers\"></div></aside></main>\n"
        f"<script type=\"application/json\" id=\"steps\">{_json_for_script(data)}</script>\n"
        f"<script>\n{_asset('player.js')}\n</script>\n</body>\n</html>\n")


def player_page(root: Tensor, *, params=None, title: str | None = None, grad=None,
                collapse=None, depth: int | None = None, expand=None,
                max_nodes: int = DEFAULT_MAX_NODES, max_values: int = 64,
                engine=None, source_path: Path | None = None, where: str = "player_page",
                textbook: bool = True) -> str:
    """Run the backward pass of `root` and return the step-through page as one string.

    The graph is laid out with every module open; the modules that `draw` would fold
    (by `collapse`, `depth`, `expand` or past `max_nodes`) start folded in the page and
    open on click. The layout engine (`viz.engine.find_engine(engine)`) is found before
    backward runs: when none can run, nothing is run, the graph's source is saved to
    `source_path` (if given) and one error says how to get an engine. Fused nodes are
    drawn and stepped through as their textbook form unless `textbook=False`."""
    if not isinstance(root, Tensor):
        raise op_error(where, f"expected the Tensor to backpropagate from, got "
                       f"{type(root).__name__}", TypeError, f"pass e.g. {where}(loss, ...)")
    # Fused nodes are stepped through as their textbook form; the graph's title says so.
    root, note = as_drawn(root, textbook)
    plan = plan_layout(root, params, collapse, max_nodes, depth, expand)  # what starts folded
    layout = plan_layout(root, params, collapse=False)
    graph = draw(root, show=("shape", "values"), layout=layout, title=note or None)
    if not root.requires_grad:
        # Let the engine word this error, before any file is written.
        next(backward_steps(root, grad))
    try:
        chosen = find_engine(engine, where=where)
    except DotNotFoundError:
        if source_path is None:
            raise
        write_atomic(source_path, graph.source, where)   # keep the graph, and say where
        find_engine(engine, where=where, source_path=source_path)
        raise
    svg = chosen.run(graph.source, "svg", where).decode("utf-8")
    records = [step_record(step, layout, max_values) for step in backward_steps(root, grad)]
    return player_html(svg, records, title or "backward pass, step by step",
                       _fold_data(layout, graph.cluster_ids, plan.folded))


def _fold_data(layout: Layout, cluster_ids: dict, start_folded: list) -> dict:
    """What the page needs to fold modules: each node's module, each cluster's module."""
    nodes = {}
    for k, tensor in enumerate(layout.order):
        module = layout.modules[id(tensor)]
        if module:
            nodes[f"t{k}"] = module
            if tensor.op is not None:
                nodes[f"op{k}"] = module
    return {"nodes": nodes, "clusters": {cid: path for path, cid in cluster_ids.items()},
            "folded": list(start_folded)}


def write_player(root: Tensor, path, *, params=None, title: str | None = None, grad=None,
                 collapse=None, depth: int | None = None, expand=None,
                 max_nodes: int = DEFAULT_MAX_NODES, max_values: int = 64,
                 engine=None, textbook: bool = True) -> Path:
    """Run the backward pass of `root` and write a step-through page to `path`.

    Like `root.backward()`, this fills the leaves' `.grad` (call it instead of backward,
    not after). `collapse`, `depth`, `expand` and `max_nodes` say, as in `viz.draw`, which
    modules start folded; every one opens in the page. Fused nodes are stepped through as
    their textbook form (same leaves, same gradients) unless `textbook=False`. The graph
    is laid out by `viz.engine.find_engine(engine)` (system `dot` or the bundled
    graphviz-pure); when no engine runs, nothing is run, the DOT source is saved as
    `path` + ".dot" (`backprop.html.dot`, never a file of yours) and one error says how
    to get one. A target that cannot be written is refused before backward runs. Missing
    folders are created; a symlink is written through (docs/reference.md, "Files you
    write"). Returns the path written.

    >>> viz.write_player(loss, "backprop.html", title="softmax attention")
    """
    if not isinstance(root, Tensor):
        raise op_error("write_player", f"expected the Tensor to backpropagate from, got "
                       f"{type(root).__name__}", TypeError, "pass e.g. write_player(loss, path)")
    path = Path(path)
    check_writable(path, "write_player", "backprop.html")   # before backward fills .grad
    page = player_page(root, params=params, title=title, grad=grad, collapse=collapse,
                       depth=depth, expand=expand, max_nodes=max_nodes,
                       max_values=max_values, engine=engine,
                       source_path=path.with_name(path.name + ".dot"),
                       where="write_player", textbook=textbook)
    write_atomic(path, page, "write_player")
    return path


class Player:
    """A step-through page, shown inline in Jupyter: an <iframe> whose `srcdoc` is the
    whole self-contained page (buttons and ←/→ keys work once you click into it).

    >>> player = viz.play(loss)   # the last expression of a cell: shows the player
    >>> player.save("page.html")  # the same page as a file
    """

    def __init__(self, page: str, height: int = 640):
        self.html, self.height = page, height

    def _repr_html_(self) -> str:
        # srcdoc is an attribute: escaping the page (&, <, >, quotes) is all it takes. The
        # sandbox lets the page's own script run and nothing else (no same-origin access).
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
                f'sandbox="allow-scripts" title="backward pass, step by step" '
                f'style="width: 100%; height: {int(self.height)}px; border: 1px solid #ccc">'
                f'</iframe>')

    def save(self, path) -> Path:
        """Write the page to `path` (atomically); returns the path."""
        path = Path(path)
        write_atomic(path, self.html, "Player.save")
        return path


def play(root: Tensor, *, params=None, title: str | None = None, grad=None, collapse=None,
         depth: int | None = None, expand=None, max_nodes: int = DEFAULT_MAX_NODES,
         max_values: int = 64, engine=None, height: int = 640,
         textbook: bool = True) -> Player:
    """Run the backward pass of `root` and return the step-through player for Jupyter
    (what `write_player` writes to a file). Fills the leaves' `.grad` like backward.

    >>> viz.play(loss, title="attention")
    """
    return Player(player_page(root, params=params, title=title, grad=grad, collapse=collapse,
                              depth=depth, expand=expand, max_nodes=max_nodes,
                              max_values=max_values, engine=engine, where="play",
                              textbook=textbook), height)
