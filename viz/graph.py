"""Draw the graph behind a tensor: tensors, the ops between them, and how gradients flow.

    >>> import microtensor as mt, viz
    >>> W = mt.randn(3, 2, requires_grad=True, name="W")
    >>> loss = (mt.randn(4, 3) @ W).softmax().sum()
    >>> graph = viz.draw(loss, highlight=W)     # a graphviz.Digraph; shows inline in Jupyter
    >>> viz.render(graph, "out/softmax.svg")    # laid out by viz.engine.find_engine()

Tensor nodes show a name, shape and dtype, then the values and (after backward) the
gradient: small tensors as heatmaps, large ones as statistics. Before backward a gradient
reads "grad: pending", never zero. Op nodes show the op and its derivative rule. Edges run
from each input to the op that used it, so a tensor used three times has three outgoing
edges: the three gradient contributions that backward adds up. Pass the recorded steps of a
backward pass (`steps=list(backward_steps(loss))`) to also see every intermediate gradient
and each contribution's norm on its edge.

Fused nodes (a model's fast path runs attention as one node) are drawn as their textbook
form, and the title says so; `textbook=False` draws the graph as it ran (`viz.fused`).

Modules: with `params=model`, nodes are grouped into one cluster per module and modules
can be folded into one box each; `viz.layout` says which module each tensor belongs to.
"""
from __future__ import annotations

import re
from pathlib import Path

import graphviz
import numpy as np

from microtensor.errors import op_error
from microtensor.files import check_writable
from microtensor.tensor import Tensor

from .boxes import Box, FedBack, box_node, gradient_flow
from .engine import (
    DotFailedError,
    DotNotFoundError,
    find_engine,
    source_saved,
    write_atomic,
)
from .fused import as_drawn, fused_label
from .labels import (
    GRAD_PALETTE,
    MAX_NAME,
    MAX_TITLE,
    VALUE_PALETTE,
    as_grid,
    diverging,
    dot_string,
    escape,
    fmt,
    format_config,
    hex_colour,
    norm,
    pad_width,
    printable,
    room_for,
    shorten,
    stats,
    text_colour,
    wrap,
)
from .layout import DEFAULT_MAX_NODES, Layout, plan_layout

__all__ = ["DotNotFoundError", "Graph", "draw", "render", "to_svg"]

HIGHLIGHT = "#e6550d"   # the route from the root to the highlighted tensor(s)
DIM = "#c4c4c4"         # everything off that route
OP_FILL, TENSOR_BORDER, PARAM_FILL = "#fff4d6", "#555555", "#eef5ff"
VALUE_PALETTE_HEX = [hex_colour(c) for c in VALUE_PALETTE]
GRAD_PALETTE_HEX = [hex_colour(c) for c in GRAD_PALETTE]
SHOW_ITEMS = ("shape", "values", "grad")



class Graph(graphviz.Digraph):
    """A `graphviz.Digraph` laid out by `viz.engine.find_engine()` (system `dot` or the
    bundled graphviz-pure), never by the `graphviz` package's own call of `dot`: it shows
    as SVG inline in Jupyter, and `pipe()`/`render()` work without system Graphviz.
    `node_ids` maps id(tensor) to its node's name, `cluster_ids` a module path to its
    cluster's id."""

    node_ids: dict
    cluster_ids: dict
    highlighted: set

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        return {"image/svg+xml": self._repr_svg_()}

    def _repr_svg_(self) -> str:
        return to_svg(self, "Graph display")

    def pipe(self, format: str | None = None, *args, engine=None, encoding: str | None = None,
             **kwargs):
        """The laid-out graph as bytes (str with `encoding`); `engine` as in find_engine."""
        output = find_engine(engine, where="Graph.pipe").run(
            self.source, format or self.format, "Graph.pipe")
        return output.decode(encoding) if encoding else output

    def render(self, filename=None, directory=None, *args, format: str | None = None,
               engine=None, **kwargs) -> str:
        """Save the source to `filename` (in `directory`), then write `filename.FORMAT`
        beside it; returns that path. The source is saved first, so an error still leaves
        the graph on disk."""
        source_path = Path(self.save(filename, directory=directory))
        chosen = find_engine(engine, where="Graph.render", source_path=source_path)
        format = format or self.format
        target = source_path.with_name(f"{source_path.name}.{format}")
        write_atomic(target, chosen.run(self.source, format, "Graph.render"), "Graph.render")
        return str(target)


# --------------------------------------------------------------------------- labels


def _grid_rows(grid, palette, dimmed, columns) -> str:
    scale = float(np.max(np.abs(grid[np.isfinite(grid)]))) if np.isfinite(grid).any() else 0.0
    rows = []
    for row in grid:
        cells = "".join(
            f'<TD BGCOLOR="{diverging(v, scale, palette, 0.7 if dimmed else 0.0)}">'
            f'<FONT POINT-SIZE="9" COLOR="{text_colour(v, scale, dimmed)}">{escape(fmt(v))}'
            f'</FONT></TD>' for v in row.astype(np.float64))
        pad = columns - len(row)
        rows.append(f"<TR>{cells}{'<TD></TD>' * pad}</TR>")
    return "".join(rows)


def _text_row(text: str, columns: int, size: int = 10, bold: bool = False,
              dimmed: bool = False) -> str:
    body = f"<B>{escape(text)}</B>" if bold else escape(text)
    colour = DIM if dimmed else "#000000"
    width = pad_width(text, size, bold)
    width = f' WIDTH="{width + 4}"' if width else ""   # + CELLPADDING on both sides
    return (f'<TR><TD COLSPAN="{columns}" BORDER="0" ALIGN="LEFT"{width}>'
            f'<FONT POINT-SIZE="{size}" COLOR="{colour}">{body}</FONT></TD></TR>')


def _tensor_label(tensor, name: str, show, grad, grad_state, fan_out, dimmed, lit,
                  border: str) -> str:
    values_grid = as_grid(tensor.data) if "values" in show else None
    grad_grid = as_grid(grad) if grad is not None and "grad" in show else None
    columns = max([1] + [g.shape[1] for g in (values_grid, grad_grid) if g is not None])
    header = shorten(name)         # the tooltip and the player hold the whole name
    if "shape" in show:
        header = f"{header}  {tuple(tensor.shape)} {tensor.dtype}".strip()
    rows = [_text_row(header, columns, 11, True, dimmed)]
    if "values" in show:
        if values_grid is not None and tensor.dtype.kind in "fciub":
            rows.append(_grid_rows(values_grid, VALUE_PALETTE, dimmed, columns))
        else:
            rows.append(_text_row(stats(tensor.data), columns, 9, dimmed=dimmed))
    if "grad" in show:
        if grad_grid is not None:
            rows.append(_text_row("grad", columns, 9, dimmed=dimmed))
            rows.append(_grid_rows(grad_grid, GRAD_PALETTE, dimmed, columns))
        elif grad is not None:
            rows.append(_text_row(f"grad: {stats(grad)}", columns, 9, dimmed=dimmed))
        elif grad_state:
            rows.append(_text_row(f"grad: {grad_state}", columns, 9, dimmed=dimmed))
    if fan_out > 1 and tensor.requires_grad:
        rows.append(_text_row(f"used {fan_out} times: gradients add", columns, 9, dimmed=dimmed))
    return (f'<<TABLE BORDER="{3 if lit else 1}" CELLBORDER="0" CELLSPACING="1" '
            f'CELLPADDING="2" COLOR="{border}">{"".join(rows)}</TABLE>>')


def _op_label(node) -> tuple[str, dict]:
    """The op node's label (name, config, derivative rule) and the node attributes that
    make room for characters the layout engine cannot measure."""
    config = format_config(node.config)
    head = f"{node.name} ({config})" if config else node.name
    rule = wrap(printable(node.rule))
    fused = fused_label(node)            # drawn as it ran (textbook=False): say it is fused
    if fused is not None:
        rule = [fused] + rule
    lines = [f"<B>{escape(node.name)}</B>" + (f" ({escape(config)})" if config else "")]
    lines += [f'<FONT POINT-SIZE="9">{escape(line)}</FONT>' for line in rule]
    return "<" + "<BR/>".join(lines) + ">", room_for([(head, 10, True)]
                                                      + [(line, 9, False) for line in rule])


LEGEND = (
    (f'BGCOLOR="{VALUE_PALETTE_HEX[0]}"', f'BGCOLOR="{VALUE_PALETTE_HEX[1]}"',
     "values: blue < 0 < red"),
    (f'BGCOLOR="{GRAD_PALETTE_HEX[0]}"', f'BGCOLOR="{GRAD_PALETTE_HEX[1]}"',
     "gradients: purple < 0 < green ('grad: pending' before backward)"),
    (f'BGCOLOR="{OP_FILL}"', f'BGCOLOR="{OP_FILL}"', "an op, with its derivative rule"),
    (f'BGCOLOR="{PARAM_FILL}"', f'BGCOLOR="{PARAM_FILL}"', "a parameter (a leaf that learns)"),
    (f'BGCOLOR="{HIGHLIGHT}"', f'BGCOLOR="{HIGHLIGHT}"',
     "the route back to the highlighted tensor (highlight=)"),
    ('BGCOLOR="#e8e8f4"', 'BGCOLOR="#e8e8f4"', "a folded module (depth=, expand=)"),
    ("", "", "|g| on an edge: the norm of the gradient sent back along it (steps=)"),
    ("", "", "dashed edge: a constant input, no gradient flows back"),
)


def _title_with_key(title_lines) -> str:
    """The title, then the key: a row per mark, two swatch cells and what it means."""
    rows = [f'<TR><TD COLSPAN="3">{escape(line)}</TD></TR>' for line in title_lines]
    for left, right, text in LEGEND:
        swatches = "".join(f'<TD {fill} BORDER="1" WIDTH="14" HEIGHT="10"></TD>' if fill
                           else '<TD WIDTH="14"></TD>' for fill in (left, right))
        rows.append(f'<TR>{swatches}<TD ALIGN="LEFT"><FONT POINT-SIZE="10">{escape(text)}'
                    f'</FONT></TD></TR>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>>")


def text_label(lines, size: int = 10) -> str:
    """Plain lines of text (user-supplied or not) as an HTML-like label: escaped, so
    nothing in them is read as markup, and with room for characters the engine cannot
    measure (a title with → or √, a module called 苹果)."""
    rows = []
    for line in lines:
        width = pad_width(line, size)
        width = f' WIDTH="{width}"' if width else ""
        rows.append(f'<TR><TD{width}>{escape(line)}</TD></TR>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">'
            + "".join(rows) + "</TABLE>>")


def _grad_state(tensor, recorded: bool) -> str | None:
    """What to say when a tensor has no gradient to show."""
    if not tensor.requires_grad:
        return None  # a constant: nothing will ever arrive
    if tensor.op is not None and tensor.op.backward is None and not recorded:
        return "used and freed (pass steps= to keep it)"
    return "pending"


# --------------------------------------------------------------------------- draw


def computed_from(order: list[Tensor], targets) -> list[Tensor]:
    """The tensors of `order` (a `topological_order`, root first) computed from any of
    `targets`, inputs before their users: the route the gradient takes back to them."""
    reached = {id(t) for t in targets}
    route = []
    for tensor in reversed(order):
        if tensor.op is not None and any(id(i) in reached for i in tensor.op.inputs
                                         if isinstance(i, Tensor)):
            reached.add(id(tensor))
            route.append(tensor)
    return route


def draw(root: Tensor, *, highlight=None, params=None, show=SHOW_ITEMS, rankdir: str = "BT",
         max_nodes: int = DEFAULT_MAX_NODES, collapse=None, depth: int | None = None,
         expand=None, steps=None, title: str | None = None,
         layout: Layout | None = None, textbook: bool = True,
         legend: bool = False) -> Graph:
    """The graph behind `root` as a `graphviz.Digraph` (shows inline in Jupyter).

    highlight: a tensor or several; every path from root to them is coloured, the rest
        dimmed (the route their gradient takes).
    params: a Module (or mapping name -> Tensor) naming parameters and grouping modules;
        other tensors are named by where they come from ("blocks.1.ffn output").
    show: any of "shape", "values", "grad".  rankdir: "BT" puts the loss at the top.
    depth: draw modules this many levels deep, each deeper module as one box showing its
        name, its parameter shapes and how many ops it holds.  expand: module paths to
        keep open (["blocks.0"]: one open block, the rest folded).
    collapse: True, or module paths like ["layers.0"], to draw modules as one box; by
        default modules fold when the graph has more than `max_nodes` nodes, and the
        title says how to open them.
    steps: the recorded `backward_steps` of this graph; shows intermediate gradients
        and each contribution's norm on its edge.
    layout: a `viz.layout.plan_layout(root, ...)` made already (drawing then uses it).
    textbook: draw each fused node (attention as one `self_attention` node, say) as its
        textbook form, matmul, scale, mask, softmax, matmul (`viz.fused.as_drawn`); the
        title says which were opened. textbook=False draws the graph as it ran, each fused
        node labelled "fused" with the name of its textbook form.
    legend: add a key under the title: what the colours, boxes and edge marks mean.

    >>> from viz.examples import decoder_lm_example
    >>> loss, model = decoder_lm_example(n_layers=2)          # a DecoderLM and its loss
    >>> graph = viz.draw(loss, params=model, expand=["blocks.0"])
    """
    show = _checked_show(root, show)
    fused_note, opened = "", False
    if layout is None:
        layout, fused_note, opened = _planned_layout(root, params, collapse, max_nodes,
                                                     depth, expand, steps, textbook)
    targets = _highlight_targets(highlight, layout, opened=opened)
    on_path = {id(t) for t in targets} | {id(t) for t in computed_from(layout.order, targets)}
    look = _Look(layout, on_path, bool(targets), {id(s.tensor): s for s in (steps or ())},
                 show)

    title = shorten(title, MAX_TITLE) if title else title
    title_lines = [line for x in (title, fused_note, layout.note) if x
                   for line in str(x).split("\n")]
    graph = _new_graph(layout, rankdir, title_lines, legend)
    clusters = _place_nodes(graph, look)
    _emit_clusters(graph, clusters, layout, look.dim)
    _emit_edges(graph, look)
    return graph


def _checked_show(root, show) -> tuple:
    """`show` as a tuple of items, once root is a Tensor and every item is known."""
    if not isinstance(root, Tensor):
        raise op_error("draw", f"expected the Tensor whose graph to draw, got "
                       f"{type(root).__name__}", TypeError, "pass e.g. draw(loss)")
    show = (show,) if isinstance(show, str) else tuple(show)
    unknown = [s for s in show if s not in SHOW_ITEMS]
    if unknown:
        raise op_error("draw", f"show={unknown} is not one of {SHOW_ITEMS}")
    return show


def _planned_layout(root, params, collapse, max_nodes, depth, expand, steps,
                    textbook) -> tuple[Layout, str, bool]:
    """The layout of the graph to draw, the title's note on its fused nodes, and whether
    they were opened into their textbook forms."""
    if textbook and steps and any(s.node is not None and s.node.reference is not None
                                  for s in steps):
        # The steps were recorded on the graph as it ran (backward_steps(loss)), so
        # their gradients belong to its fused nodes: draw that graph.
        textbook = False
    root, fused_note = as_drawn(root, textbook)
    layout = plan_layout(root, params, collapse, max_nodes, depth, expand)
    return layout, fused_note, bool(fused_note) and textbook


def _new_graph(layout: Layout, rankdir: str, title_lines: list, legend: bool) -> Graph:
    """An empty `Graph` with the drawing's attributes and its title (and key)."""
    graph = Graph(name="backward", graph_attr={
        "rankdir": rankdir, "fontname": "Helvetica", "fontsize": "12",
        "nodesep": "0.25", "ranksep": "0.35", "labelloc": "t"},
        node_attr={"fontname": "Helvetica", "fontsize": "10"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9", "arrowsize": "0.7"})
    if layout.paths:
        # Rank the whole graph at once, not cluster by cluster: modules then stack in
        # forward order along one axis instead of spreading side by side.
        graph.attr(newrank="true", nodesep="0.15", ranksep="0.2")
    if title_lines or legend:
        graph.attr(label=_title_with_key(title_lines) if legend else text_label(title_lines, 12))
    graph.node_ids = {id(t): layout.tensor_node(k) for k, t in enumerate(layout.order)}
    graph.highlighted = set()
    graph.cluster_ids = {}           # module path -> the id of its cluster in the SVG
    return graph


def _place_nodes(graph: Graph, look: _Look) -> dict:
    """Every tensor and op node, and every folded box, as {module path: [(node id,
    attributes)]}: the cluster each goes into. Lit nodes go into `graph.highlighted`."""
    layout, clusters, boxes = look.layout, {}, {}
    for k, tensor in enumerate(layout.order):
        fold = layout.fold_of(k)
        if fold is not None:
            boxes.setdefault(fold, Box()).count(tensor, look)
            continue
        nodes = [(f"t{k}", _tensor_node(tensor, k, look))]
        if tensor.op is not None:
            nodes.append((f"op{k}", _op_node(tensor, k, look)))
        for node_id, (attrs, lit) in nodes:
            clusters.setdefault(layout.modules[id(tensor)] or "", []).append((node_id, attrs))
            if lit:
                graph.highlighted.add(node_id)
    for j, path in enumerate(layout.folded):
        if path in boxes:
            attrs, lit = box_node(path, boxes[path], look, f"m{j}")
            clusters.setdefault(path.rpartition(".")[0], []).append((f"m{j}", attrs))
            if lit:
                graph.highlighted.add(f"m{j}")
    return clusters


def _highlight_targets(highlight, layout: Layout, opened: bool) -> list[Tensor]:
    """`highlight` as a list of tensors of the drawn graph, or an error naming the one
    that is not (`opened`: fused nodes were opened, so their tensors are new ones)."""
    targets = [] if highlight is None else (
        [highlight] if isinstance(highlight, Tensor) else list(highlight))
    for target in targets:
        if not isinstance(target, Tensor) or id(target) not in layout.index:
            what = (f"{target.name or 'tensor'} {tuple(target.shape)}"
                    if isinstance(target, Tensor) else f"{type(target).__name__}")
            hint = "highlight a tensor the root was computed from, e.g. a weight"
            if opened:
                hint += (" (fused nodes are drawn opened, as new tensors: highlight a "
                         "parameter, or pass textbook=False)")
            raise op_error("draw", f"highlight={what} is not a tensor of the graph behind "
                           f"root", ValueError, hint)
    return targets


class _Look:
    """What decides how each node is drawn: the route to the highlighted tensors (lit),
    everything off it dimmed when there is a highlight, the recorded steps, `show`."""

    def __init__(self, layout: Layout, on_path: set, dim: bool, recorded: dict, show):
        self.layout, self.on_path, self.dim, self.recorded, self.show = (
            layout, on_path, dim, recorded, show)
        self.op_on_path = {k for k, t in enumerate(layout.order) if t.op is not None and any(
            id(i) in on_path for i in t.op.inputs if isinstance(i, Tensor))}
        self.fan_out = {}
        for tensor in layout.order:
            for inp in (tensor.op.inputs if tensor.op else ()):
                if isinstance(inp, Tensor):
                    self.fan_out[id(inp)] = self.fan_out.get(id(inp), 0) + 1
        self.flow, self.crossing = gradient_flow(layout, recorded) if (
            layout.folded and recorded) else ({}, {})

    def colour(self, lit: bool, normal: str) -> str:
        """The one rule for outlines, edges and text: lit, else dimmed, else `normal`."""
        return HIGHLIGHT if lit else (DIM if self.dim else normal)

    def emphasis(self, lit: bool, fill: str, normal: str, dimmed_fill: str = "#f6f6f6"
                 ) -> dict:
        """A node's outline colour and width, fill and text colour."""
        dimmed = self.dim and not lit
        return {"color": self.colour(lit, normal), "penwidth": "2.5" if lit else "1",
                "fillcolor": dimmed_fill if dimmed else fill,
                "fontcolor": DIM if dimmed else "black"}


def _tensor_node(tensor, k: int, look: _Look) -> tuple[dict, bool]:
    lit = id(tensor) in look.on_path
    step = look.recorded.get(id(tensor))
    grad = step.grad_out if step is not None else tensor.grad
    state = None if grad is not None else _grad_state(tensor, bool(look.recorded))
    is_param = tensor.op is None and tensor.requires_grad
    name = look.layout.label_of(tensor)
    # Inside a module's box the path is its label: the node says the rest ("weight").
    cluster = look.layout.modules[id(tensor)] or ""
    while cluster in look.layout.containers:
        cluster = cluster.rpartition(".")[0]
    plain = re.fullmatch(r"[\w.]+", cluster, re.ASCII)   # odd names are shown whole
    short = name[len(cluster) + 1:] if plain and name[len(cluster):len(cluster) + 1] in (
        ".", " ") and name.startswith(cluster) else name
    attrs = look.emphasis(lit, PARAM_FILL if is_param else "white", TENSOR_BORDER, "white")
    del attrs["fontcolor"]   # the label's own rows carry their colours
    attrs.update(shape="none", margin="0", style="filled", id=f"t{k}",
                 tooltip=dot_string(name),
                 label=_tensor_label(tensor, short, look.show, grad, state,
                                     look.fan_out.get(id(tensor), 0), look.dim and not lit,
                                     lit, look.colour(lit, TENSOR_BORDER)))
    return attrs, lit


def _op_node(tensor, k: int, look: _Look) -> tuple[dict, bool]:
    lit = k in look.op_on_path
    label, room = _op_label(tensor.op)
    return dict(label=label, **room, shape="box", style="rounded,filled", id=f"op{k}",
                tooltip=dot_string(tensor.op.rule),
                **look.emphasis(lit, OP_FILL, "#8a6d1f")), lit


def _emit_clusters(graph, clusters, layout, dim):
    """Nested `cluster_` subgraphs, one per module path (containers skipped), in forward
    order, each added to its parent after its own children."""
    bodies, every = {}, set()
    for path in clusters:
        while path:
            if path not in layout.containers:
                every.add(path)
            path = path.rpartition(".")[0]
    in_order = [path for path in layout.paths if path in every]   # never a set's order
    for number, path in enumerate(in_order):
        # Module paths come from attribute names: any text. The subgraph's name keeps to
        # a plain identifier; the label is escaped.
        name = f"cluster_{path}" if re.fullmatch(r"[\w.]+", path, re.ASCII) and len(
            path) <= MAX_NAME else f"cluster_module{number}"
        bodies[path] = Graph(name=name, graph_attr={
            "label": text_label([shorten(path)]), "style": "rounded,dashed",
            "color": DIM if dim else "#9090b0", "fontcolor": "#666688", "fontsize": "10",
            "labeljust": "l", "id": f"c{number}"})
        graph.cluster_ids[path] = f"c{number}"
    for path, nodes in clusters.items():
        while path in layout.containers:
            path = path.rpartition(".")[0]
        target = bodies[path] if path else graph
        for node_id, attrs in nodes:
            target.node(node_id, **attrs)
    for path in sorted(in_order, key=lambda p: -p.count(".")):  # children before parents
        parent = layout.cluster_parent(path)
        (bodies[parent] if parent else graph).subgraph(bodies[path])


def _emit_edges(graph, look: _Look):
    """One edge from each input to the op that used it, and from each op to its output;
    edges into, out of and between folded boxes are drawn once each. With recorded steps
    an edge is labelled with the norm of the gradient that flowed back along it (into a
    box: everything the box sent to the tensors at the edge's tail)."""
    layout, seen, into_box = look.layout, set(), {}
    fed_back = FedBack(layout)
    for (sender, receiver), sent in look.crossing.items():
        if sender is not None:
            edge = (layout.tensor_node(layout.index[receiver]),
                    f"m{layout.folded.index(sender)}")
            into_box[edge] = into_box.get(edge, 0.0) + norm(sent) ** 2
    for k, tensor in enumerate(layout.order):
        node = tensor.op
        if node is None:
            continue
        op_id, out_id = layout.op_node(k), layout.tensor_node(k)
        step = look.recorded.get(id(tensor))
        edges = [(op_id, out_id, k in look.op_on_path, None, True)]   # + the input tensor
        for position, inp in enumerate(node.inputs):
            if not isinstance(inp, Tensor):
                continue
            tail = layout.tensor_node(layout.index[id(inp)])
            sent = step.grads_in[position] if step is not None else None
            size = np.sqrt(into_box[(tail, op_id)]) if (tail, op_id) in into_box else (
                None if sent is None else norm(sent))
            label = None if size is None else f"|g| {fmt(size)}"
            edges.append((tail, op_id, id(inp) in look.on_path, label, inp.requires_grad,
                          inp))
        for tail, head, lit, label, carries_grad, *tail_tensor in edges:
            folded_edge = tail.startswith("m") or head.startswith("m")
            if tail == head or (folded_edge and (tail, head) in seen):
                continue  # inside one folded box, or a duplicate edge into/out of a box
            seen.add((tail, head))
            attrs = {"color": look.colour(lit, "#555555"), "penwidth": "2.5" if lit else "1"}
            if not carries_grad:
                attrs["style"] = "dashed"  # a constant input: no gradient flows back here
            if label:
                attrs.update(label=label, fontcolor=look.colour(lit, "#333333"))
            if tail_tensor and head.startswith("m") and fed_back(
                    tail_tensor[0], layout.folded[int(head[1:])]):
                attrs["constraint"] = "false"
            graph.edge(tail, head, **attrs)


# --------------------------------------------------------------------------- render


# The formats a picture's extension selects when no format= is given.
PICTURE_FORMATS = ("svg", "png", "pdf", "jpg", "jpeg", "gif", "bmp", "ps", "eps", "webp")


def render(graph_or_root, path, format: str | None = None, *, engine=None,
           source: bool = False, **draw_kwargs) -> Path:
    """Write the drawing to `path` (e.g. "out/graph.svg"); returns the path.

    Accepts a drawn graph or a tensor (drawn with `draw_kwargs`). The format is `format`,
    else the path's extension (.svg, .png, .pdf, ...; svg for any other). A path ending
    in `.dot` or `.gv` gets the graph's DOT source, laid out by nothing. The layout engine
    is `viz.engine.find_engine(engine)`: MICROTENSOR_DOT or `engine=` if given, else
    Graphviz's `dot` if installed, else the bundled graphviz-pure.

    render writes only `path`, unless `source=True`: then it also writes the DOT source
    beside the picture as `graph.dot` (replacing a file of that name: you asked for it).
    When no engine can run or the engine fails, the source is saved as `path` + ".dot"
    (`graph.svg.dot`, never a file of yours) and the error says so. Missing folders are
    created; a symlink is written through (docs/reference.md, "Files you write").

    >>> viz.render(loss, "out/loss.svg", highlight=W_q)
    >>> viz.render(loss, "out/loss.dot")      # the DOT source only
    """
    path = Path(path)
    check_writable(path, "render", "graph.svg")    # before drawing and laying out
    graph = graph_or_root if isinstance(graph_or_root, graphviz.Digraph) else draw(
        graph_or_root, **draw_kwargs)
    extension = path.suffix.lower().lstrip(".")
    if format is None and extension in ("dot", "gv"):
        write_atomic(path, graph.source, "render")
        return path
    format = format or (extension if extension in PICTURE_FORMATS else "svg")
    source_path = path.with_suffix(".dot") if source else path.with_name(path.name + ".dot")
    try:
        picture = find_engine(engine, where="render").run(graph.source, format, "render")
    except (DotNotFoundError, DotFailedError) as error:
        write_atomic(source_path, graph.source, "render")   # keep the graph, and say where
        raise source_saved(error, source_path) from None
    write_atomic(path, picture, "render")
    if source:
        write_atomic(source_path, graph.source, "render")
    return path


def to_svg(graph: graphviz.Digraph, where: str = "render", engine=None) -> str:
    """The SVG text of a drawn graph, laid out by `find_engine(engine)`."""
    return find_engine(engine, where=where).run(graph.source, "svg", where).decode("utf-8")
