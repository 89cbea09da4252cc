"""What each attention head looks at, from one forward pass: a head view (the tokens on
both sides, a line from each query to each key it attends to, as opaque as the weight,
heads shown or hidden by clicking them) and one heatmap per head (`heatmap_markup`).

One self-contained page: the weights travel inside it as JSON, the heatmaps as inline
SVG, the script is its own; nothing is fetched, so it cannot go blank when a CDN is
unreachable. Inline in Jupyter (an iframe holding the page) and as a file.

The weights come from the model itself: every module with a `last_weights` attribute
(`MultiHeadAttention`) keeps the weights of its last call, (B, heads, Tq, Tk). A graph
tensor on the textbook path, a constant on the fast paths; either is read as an array.

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.llama(vocab=16, d_model=16, n_heads=4, n_kv_heads=2,
    ...                               n_layers=2))
    >>> view = view_attention(lm, [3, 1, 4, 1, 5], tokens=list("abcde"))
    >>> view.weights.shape                   # (layers, heads, queries, keys)
    (2, 4, 5, 5)
    >>> view.save("attention.html").name
    'attention.html'
"""
from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import microtensor as mt
from microtensor.errors import op_error

from .attribution import one_sequence, token_strings, visible
from .engine import write_atomic
from .heatmap import heatmap_markup
from .labels import text_width

# Tableau's ten categorical colours: one per head, repeating after ten.
HEAD_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
MIN_WEIGHT = 0.005   # lighter lines are invisible anyway; not drawing them keeps pages fast
ROW_HEIGHT = 22      # pixels between tokens in the head view


def view_attention(model, ids, *, tokens=None, title: str = "attention") -> AttentionView:
    """Run `model` on one sequence `ids` (T,) or (1, T), without gradients or dropout,
    and gather the attention weights of every module that keeps `last_weights`, in the
    model's order (for a DecoderLM: one per block). `tokens` is a list of strings, one
    per id, or a tokenizer (anything with `decode`). Modules that do not run in this
    forward are left out (their `last_weights` are cleared first, so none is stale).

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=16, d_model=16, n_heads=2, n_layers=3))
    >>> view_attention(lm, [1, 2, 3]).layer_names
    ['blocks.0.self_attn', 'blocks.1.self_attn', 'blocks.2.self_attn']
    """
    where = "view_attention"
    ids = one_sequence(where, ids)
    attentions = [(name, module) for name, module in model.named_modules()
                  if "last_weights" in dir(module)]
    if not attentions:
        raise op_error(where, f"{type(model).__name__} has no module that keeps "
                       "`last_weights`", TypeError, "build the model's attention from "
                       "transformer.MultiHeadAttention")
    for _, module in attentions:
        module.last_weights = None
    with mt.no_grad(), mt.dropout_off():
        model(ids[None])
    ran = [(name, np.asarray(module.last_weights.data, dtype=np.float64)[0])
           for name, module in attentions if module.last_weights is not None]
    shapes = {weights.shape for _, weights in ran}
    if len(shapes) != 1:
        raise op_error(where, f"the attention weights have different shapes {sorted(shapes)}",
                       fix="draw self-attention of one sequence: every layer (heads, T, T)")
    return AttentionView(np.stack([weights for _, weights in ran]),
                         tokens=token_strings(tokens, ids, where),
                         layer_names=[name for name, _ in ran], title=title)


class AttentionView:
    """Attention weights (layers, heads, T, T) with their tokens, as a page: the head
    view of one layer at a time, its heads selectable, above that layer's heatmaps.
    Queries are rows (left in the head view), keys columns (right). Built by
    `view_attention` from a model, or from any array, PyTorch's included.

    `max_heatmap_cells` caps the heatmaps drawn into the page (a 12-layer, 12-head model
    on 64 tokens would need 590,000 cells); beyond it, the first layers get heatmaps and
    the page says so. `heatmap(layer, head)` draws any one as SVG.

    >>> view = AttentionView(np.full((1, 2, 3, 3), 1 / 3), tokens=["I", "am", "here"])
    >>> view.heatmap(0, 1).count("<rect")     # the background and nine cells
    10
    >>> page = view.to_html()                # inline in Jupyter as the last expression
    """

    def __init__(self, weights, tokens: Sequence[str] | None = None,
                 layer_names: Sequence[str] | None = None, title: str = "attention",
                 max_heatmap_cells: int = 100_000):
        where = "AttentionView"
        weights = np.asarray(getattr(weights, "data", weights), dtype=np.float64)
        shape = weights.shape
        if weights.ndim in (2, 3):   # one head's (T, T), or one layer's (heads, T, T)
            weights = weights.reshape((1,) * (4 - weights.ndim) + weights.shape)
        if weights.ndim != 4 or weights.shape[2] != weights.shape[3] or weights.size == 0:
            raise op_error(where, f"expected self-attention weights (layers, heads, T, T), "
                           f"(heads, T, T) or (T, T), got shape {shape}")
        if not np.isfinite(weights).all():
            raise op_error(where, "the weights hold NaN or inf")
        length = weights.shape[-1]
        self.weights = weights
        self.tokens = [str(t) for t in tokens] if tokens is not None else \
            [str(i) for i in range(length)]
        if len(self.tokens) != length:
            raise op_error(where, f"{len(self.tokens)} tokens for weights over {length}",
                           fix="give one token per position")
        self.layer_names = list(layer_names) if layer_names is not None else \
            [f"layer {i}" for i in range(len(weights))]
        if len(self.layer_names) != len(weights):
            raise op_error(where, f"{len(self.layer_names)} layer names for "
                           f"{len(weights)} layers")
        self.title = title
        self.max_heatmap_cells = max_heatmap_cells

    @property
    def n_layers(self) -> int:
        """How many layers' weights the view holds."""
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        """How many heads each layer has."""
        return self.weights.shape[1]

    def heatmap(self, layer: int, head: int) -> str:
        """One head's weights as an SVG heatmap: queries down, keys across."""
        length = self.weights.shape[-1]
        cell = _cell_size(length)
        keep = max(1, cell // 7)                 # characters that fit under a column
        labels = [visible(t) for t in self.tokens]
        return heatmap_markup(self.weights[layer, head],
                              title=f"{self.layer_names[layer]} · head {head}",
                              row_labels=[label[:12] for label in labels],
                              col_labels=[label[:keep] for label in labels], cell=cell,
                              annotate=False)

    def _heatmap_layers(self) -> int:
        """How many layers' heatmaps fit in `max_heatmap_cells`."""
        per_layer = self.n_heads * self.weights.shape[-1] ** 2
        return min(self.n_layers, max(0, self.max_heatmap_cells // per_layer))

    def to_html(self) -> str:
        """The whole page: controls, head view and heatmaps, with nothing to fetch."""
        drawn = self._heatmap_layers()
        figures = "\n".join(
            f'<figure class="heatmap" data-layer="{layer}" data-head="{head}">'
            f'{self.heatmap(layer, head)}</figure>'
            for layer in range(drawn) for head in range(self.n_heads))
        note = "" if drawn == self.n_layers else (
            f'<p class="note">Heatmaps for the first {drawn} of {self.n_layers} layers '
            f'(max_heatmap_cells={self.max_heatmap_cells}); view.heatmap(layer, head) '
            f'draws any other.</p>')
        labels = [visible(t) for t in self.tokens]
        data = {"tokens": labels, "layers": self.layer_names,
                "weights": np.round(self.weights, 4).tolist(),
                "colours": [HEAD_COLOURS[h % len(HEAD_COLOURS)] for h in range(self.n_heads)],
                "labelWidth": max(text_width(label, 13) for label in labels),
                "rowHeight": ROW_HEIGHT, "minWeight": MIN_WEIGHT}
        # JSON inside <script>: "<" escaped, so a token "</script>" cannot end the block
        payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
        options = "".join(f'<option value="{i}">{i}: {html.escape(name)}</option>'
                          for i, name in enumerate(self.layer_names))
        buttons = "".join(
            f'<button class="head" data-head="{h}" aria-pressed="true" '
            f'style="--colour: {HEAD_COLOURS[h % len(HEAD_COLOURS)]}">{h}</button>'
            for h in range(self.n_heads))
        return (_PAGE.replace("{title}", html.escape(self.title))
                .replace("{options}", options).replace("{buttons}", buttons)
                .replace("{figures}", figures).replace("{note}", note)
                .replace("{data}", payload))

    def _repr_html_(self) -> str:
        # The page has its own script, so Jupyter gets it in an iframe: srcdoc is an
        # attribute, escaping the page is all it takes, and the sandbox lets the page's
        # script run with no access to the notebook.
        length = self.weights.shape[-1]
        heatmap_height = 100 + length * _cell_size(length)
        height = int(np.clip(190 + length * ROW_HEIGHT + heatmap_height, 420, 900))
        return (f'<iframe srcdoc="{html.escape(self.to_html(), quote=True)}" '
                f'sandbox="allow-scripts" title="{html.escape(self.title)}" '
                f'style="width: 100%; height: {height}px; border: 1px solid #ccc"></iframe>')

    def save(self, path) -> Path:
        """Write the page to `path` (atomically); returns the path."""
        path = Path(path)
        write_atomic(path, self.to_html())
        return path

    def __repr__(self) -> str:
        return (f"<AttentionView {self.title!r}: {self.n_layers} layers × {self.n_heads} "
                f"heads over {self.weights.shape[-1]} tokens>")


def _cell_size(length: int) -> int:
    """A heatmap cell's side in pixels: the whole map about 360 px wide, cells 10 to 28."""
    return int(np.clip(360 // length, 10, 28))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
  body { font-family: sans-serif; font-size: 13px; margin: 16px; color: #222; }
  h1 { font-size: 17px; margin: 0 0 8px; }
  #controls { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
  button.head { border: 2px solid var(--colour); background: var(--colour); color: white;
                border-radius: 4px; min-width: 28px; cursor: pointer; font-weight: bold; }
  button.head[aria-pressed="false"] { background: white; color: var(--colour); }
  .hint, .note, #status { color: #666; }
  #head-view text { font-family: monospace; font-size: 13px; cursor: default; }
  #head-view text.focus { font-weight: bold; }
  #head-view line { pointer-events: none; }
  #heatmaps { display: flex; flex-wrap: wrap; gap: 8px; }
  figure.heatmap { margin: 0; }
  figure.heatmap[hidden] { display: none; }
</style></head>
<body>
<h1>{title}</h1>
<div id="controls">
  <label>Layer <select id="layer">{options}</select></label>
  <span>Heads {buttons} <button id="all">all</button> <button id="none">none</button></span>
  <span id="status"></span>
</div>
<p class="hint">Left: each token as a query; right: the tokens it attends to. A line's
opacity is the attention weight. Hover over a token to see only its lines; click a head
to show or hide it.</p>
<svg id="head-view" xmlns="http://www.w3.org/2000/svg"></svg>
<h2 style="font-size: 15px">Heatmaps (rows: queries, columns: keys)</h2>
{note}
<div id="heatmaps">
{figures}
</div>
<script type="application/json" id="attention-data">{data}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("attention-data").textContent);
const svg = document.getElementById("head-view");
const SVG = "http://www.w3.org/2000/svg";
const nHeads = data.colours.length, nTokens = data.tokens.length;
const shown = new Set(data.colours.map((_, h) => h));
let layer = 0;
let focus = null;   // {side: "query" | "key", index} while the pointer is on a token

// Geometry: queries right-aligned at leftX, keys left-aligned at rightX.
// (`top` is taken: it is the browser's window.top.)
const leftX = 8 + data.labelWidth, rightX = leftX + 260, topY = 16;
svg.setAttribute("width", rightX + data.labelWidth + 16);
svg.setAttribute("height", topY + nTokens * data.rowHeight + 8);
const rowY = i => topY + i * data.rowHeight + data.rowHeight / 2;

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The tokens are drawn once; the lines are redrawn (in a group under the tokens, so a
// token under the pointer is never replaced) whenever the layer, heads or focus change.
const lines = element("g", {id: "lines"});
svg.appendChild(lines);
const labels = [];
data.tokens.forEach((token, i) => {
  for (const side of ["query", "key"]) {
    const isQuery = side === "query";
    const label = element("text", {
      class: "token " + side, "data-index": i, y: rowY(i) + 4,
      x: isQuery ? leftX : rightX, "text-anchor": isQuery ? "end" : "start"}, token);
    label.addEventListener("mouseenter", () => { focus = {side, index: i}; draw(); });
    label.addEventListener("mouseleave", () => { focus = null; draw(); });
    labels.push(label);
    svg.appendChild(label);
  }
});

function draw() {
  lines.replaceChildren();
  let count = 0;
  for (const h of [...shown].sort((a, b) => a - b)) {
    const weights = data.weights[layer][h];
    for (let i = 0; i < nTokens; i++) {
      for (let j = 0; j < nTokens; j++) {
        const w = weights[i][j];
        if (w < data.minWeight) continue;
        if (focus && (focus.side === "query" ? i : j) !== focus.index) continue;
        lines.appendChild(element("line", {
          class: "attention-line", "data-head": h, "data-query": i, "data-key": j,
          x1: leftX + 6, y1: rowY(i), x2: rightX - 6, y2: rowY(j),
          stroke: data.colours[h], "stroke-width": 2, "stroke-opacity": w}));
        count++;
      }
    }
  }
  for (const label of labels) {
    const side = label.classList.contains("query") ? "query" : "key";
    label.classList.toggle("focus", focus !== null && focus.side === side &&
                                    focus.index === Number(label.dataset.index));
  }
  const heads = [...shown].sort((a, b) => a - b).join(", ") || "none";
  document.getElementById("status").textContent =
    `${data.layers[layer]}: heads ${heads}, ${count} lines`;
  for (const figure of document.querySelectorAll("figure.heatmap")) {
    figure.hidden = Number(figure.dataset.layer) !== layer ||
                    !shown.has(Number(figure.dataset.head));
  }
  for (const button of document.querySelectorAll("button.head")) {
    button.setAttribute("aria-pressed", shown.has(Number(button.dataset.head)));
  }
}

document.getElementById("layer").addEventListener("change", event => {
  layer = Number(event.target.value); draw();
});
for (const button of document.querySelectorAll("button.head")) {
  button.addEventListener("click", () => {
    const h = Number(button.dataset.head);
    if (shown.has(h)) shown.delete(h); else shown.add(h);
    draw();
  });
}
document.getElementById("all").addEventListener("click", () => {
  for (let h = 0; h < nHeads; h++) shown.add(h);
  draw();
});
document.getElementById("none").addEventListener("click", () => { shown.clear(); draw(); });
draw();
</script>
</body></html>
"""
