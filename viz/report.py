"""The training monitor's report: one self-contained HTML page of plots.

Every picture is inline SVG (`viz.plots` for lines and histograms, `viz.heatmap` for
maps) and the page holds no script, font or link to fetch: it opens offline, from a file
or an e-mail, and shows the same inline in Jupyter (`Report._repr_html_`).

    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> monitor = viz.TrainingMonitor(model, opt)
    >>> for step in range(1, 6):
    ...     monitor.begin_step(step)
    ...     loss = (model(mt.randn(16, 4)) ** 2).mean()
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     _ = monitor.end_step(loss)
    >>> monitor.report().save("out/monitor.html")
    PosixPath('out/monitor.html')
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine import write_atomic
from .heatmap import heatmap_markup
from .labels import fmt
from .plots import histogram_markup, line_plot_markup

MAX_MAP_COLUMNS = 60     # the saturation map shows at most this many steps, evenly picked
MAX_PICKED_STEPS = 3     # histograms and attention maps: first, middle and last such step
ACTIVATION_OPS = ("tanh", "relu", "gelu", "sigmoid")

STYLE = """
.mt-report { font-family: sans-serif; color: #222; max-width: 1100px; }
.mt-report h1 { font-size: 1.5em; margin: 0.4em 0; }
.mt-report h2 { font-size: 1.15em; margin: 1.6em 0 0.3em; }
.mt-report p, .mt-report figcaption { max-width: 75ch; line-height: 1.4; }
.mt-report figcaption { color: #555; font-size: 0.9em; margin-top: 0.2em; }
.mt-report figure { margin: 0.6em 0 1.2em; overflow-x: auto; }
.mt-report .pictures { display: flex; flex-wrap: wrap; gap: 12px; }
.mt-report .alarm { background: #fde8e8; border: 1px solid #d62728; padding: 0.6em 1em; }
.mt-report .calm { background: #eef6ee; border: 1px solid #2ca02c; padding: 0.6em 1em; }
.mt-report table { border-collapse: collapse; font-size: 0.9em; }
.mt-report th, .mt-report td { border-bottom: 1px solid #ddd; padding: 2px 10px;
                               text-align: right; }
.mt-report th:first-child, .mt-report td:first-child { text-align: left; }
"""


@dataclass
class Section:
    """One part of a report: a heading, its pictures or text (`body`, HTML) and a
    caption that says how to read it."""
    heading: str
    body: str
    caption: str = ""


class Report:
    """An HTML page of `sections` under `title`: `html()` is the whole document,
    `save(path)` writes it, and Jupyter shows it inline (`_repr_html_`)."""

    def __init__(self, title: str, sections: list[Section]):
        self.title, self.sections = title, sections

    def fragment(self) -> str:
        """The report as one `<div>` with its own scoped style, for embedding."""
        parts = [f'<div class="mt-report"><style>{STYLE}</style>',
                 f"<h1>{html.escape(self.title)}</h1>"]
        for section in self.sections:
            parts.append(f"<h2>{html.escape(section.heading)}</h2>")
            parts.append(f"<figure>{section.body}")
            if section.caption:
                parts.append(f"<figcaption>{section.caption}</figcaption>")
            parts.append("</figure>")
        parts.append("</div>")
        return "\n".join(parts)

    def html(self) -> str:
        """The whole page: a document that needs nothing else to show."""
        return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>{html.escape(self.title)}</title></head>\n<body>\n"
                f"{self.fragment()}\n</body></html>\n")

    def save(self, path) -> Path:
        """Write the page to `path` (atomically, folders created); returns the path."""
        path = Path(path)
        write_atomic(path, self.html(), "Report.save")
        return path

    def _repr_html_(self) -> str:
        return self.fragment()


def monitor_report(monitor, title: str = "Training monitor") -> Report:
    """The report of a `TrainingMonitor`'s history: the loss, gradient norms per layer,
    update-to-data ratios, histograms, the saturation map and attention entropies."""
    history = monitor.history
    if not history:
        return Report(title, [Section("Nothing recorded yet", "<p>No step has ended. Call "
                                      "<code>begin_step()</code> and <code>end_step(loss)"
                                      "</code> around each training step.</p>")])
    return Report(title, [summary(monitor), loss_section(history),
                          gradient_section(monitor), update_section(monitor),
                          *histogram_sections(monitor), saturation_section(monitor),
                          attention_section(monitor), last_step_table(monitor)])


# ---------------------------------------------------------------------- sections
def summary(monitor) -> Section:
    """The steps recorded and the first non-finite value, or that there was none."""
    history = monitor.history
    steps = f"{len(history)} steps recorded ({history[0].step} to {history[-1].step})"
    if monitor.non_finite is None:
        body = f'<p class="calm">{steps}. No NaN or inf appeared.</p>'
    else:
        body = (f'<p class="alarm">{steps}. <b>First non-finite value:</b> '
                f"{html.escape(str(monitor.non_finite))}.</p>")
    return Section("Summary", body)


def loss_section(history) -> Section:
    """The loss at each recorded step."""
    steps = [record.step for record in history]
    losses = [math.nan if record.loss is None else record.loss for record in history]
    return Section("Loss", line_plot_markup({"loss": (steps, losses)}, title="loss",
                                            y_label="loss", height=240))


def gradient_section(monitor) -> Section:
    """The gradient norm of each layer over the steps, on a log scale."""
    layers: dict[str, list] = {}
    for index, record in enumerate(monitor.history):
        for layer, value in monitor.layer_grad_norms(record).items():
            layers.setdefault(layer, [math.nan] * len(monitor.history))[index] = value
    steps = [record.step for record in monitor.history]
    picture = line_plot_markup({layer: (steps, values) for layer, values in layers.items()},
                               title="gradient norm per layer", y_label="||grad||",
                               log_y=True)
    return Section("Gradient norm per layer", picture,
                   "The norm of all of a layer's parameter gradients together, before any "
                   "clipping, on a log scale. Lines that fall apart by decades from the "
                   "last layer to the first mean the gradient vanishes (or, rising, "
                   "explodes) on its way down the network.")


def update_section(monitor) -> Section:
    """log10(||Δw|| / ||w||) of each weight matrix over the steps, with the 1e-3 guide."""
    matrices = [name for name, param in monitor.parameters if param.ndim >= 2]
    steps = [record.step for record in monitor.history]
    series = {name: (steps, [record.update_ratio.get(name, math.nan)
                             for record in monitor.history]) for name in matrices}
    picture = line_plot_markup(series, title="update-to-data ratio per parameter",
                               y_label="log10 ||Δw|| / ||w||", guide=-3,
                               guide_label="1e-3")
    return Section("Update-to-data ratio", picture,
                   "How much each step changes a weight matrix, next to its size (log10; "
                   "biases and norm scales are left out). The dashed line at -3 (updates "
                   "a thousandth of the weights) is the lecture's rule of thumb: far below "
                   "it a layer learns too slowly, far above it too fast for its size.")


def histogram_sections(monitor) -> list[Section]:
    """Output and gradient histograms of every watched module at a few chosen steps."""
    kept = [record for record in monitor.history if record.activation_histograms]
    if not kept:
        return [Section("Histograms", "<p>No histograms were kept: give the monitor "
                        "<code>histogram_steps</code> that it records.</p>")]
    chosen = pick(kept, MAX_PICKED_STEPS)
    outputs, gradients = [], []
    for record in chosen:
        # Activation functions and whole layers have different shapes (a ReLU's spike at
        # 0 would flatten a layer's bell): each gets its own plot.
        for group, names in grouped_by_kind(monitor, record).items():
            outputs.append(histogram_markup(
                {name: record.activation_histograms[name] for name in names
                 if name in record.activation_histograms},
                title=f"{group} at step {record.step}", width=420))
            gradients.append(histogram_markup(
                {name: record.gradient_histograms[name] for name in names
                 if name in record.gradient_histograms},
                title=f"gradients at the {group} at step {record.step}", x_label="gradient",
                width=420))
    return [Section("Activation histograms", f'<div class="pictures">{"".join(outputs)}</div>',
                    "The distribution of each watched module's output. A tanh layer "
                    "piled up at -1 and 1 is saturated; a ReLU's spike at 0 is its "
                    "inactive units."),
            Section("Gradient histograms", f'<div class="pictures">{"".join(gradients)}</div>',
                    "The gradient arriving at each module's output. Layers whose "
                    "distributions have very different widths learn at different speeds.")]


def grouped_by_kind(monitor, record) -> dict[str, list[str]]:
    """The watched modules of `record` in watching order, activation functions (tanh,
    ReLU, GELU, sigmoid outputs) apart from the rest."""
    groups: dict[str, list[str]] = {}
    for name, _ in monitor.watched:
        stats = record.modules.get(name)
        if stats is not None:
            group = "activations" if stats.kind in ACTIVATION_OPS else "layer outputs"
            groups.setdefault(group, []).append(name)
    return groups


def saturation_section(monitor) -> Section:
    """A map of the fraction saturated, modules by steps."""
    names = [name for name, _ in monitor.watched
             if any(name in record.modules and record.modules[name].saturated is not None
                    for record in monitor.history)]
    if not names:
        return Section("Saturation map", "<p>No tanh, ReLU or GELU module was watched.</p>")
    columns = pick(monitor.history, MAX_MAP_COLUMNS)
    matrix = np.array([[_saturation(record, name) for record in columns] for name in names])
    every = max(1, len(columns) // 10)
    labels = [str(record.step) if i % every == 0 else "" for i, record in enumerate(columns)]
    picture = heatmap_markup(matrix, title=f"fraction saturated (darkest: "
                             f"{fmt(float(matrix.max(initial=0)))})", row_labels=names,
                             col_labels=labels, cell=14)
    return Section("Saturation map", picture,
                   "For tanh, the fraction of outputs with |y| > 0.97 (where less than 6% "
                   "of the gradient passes); for ReLU and GELU, the fraction of dead units "
                   "(output or gradient exactly 0 for the whole batch). Columns are "
                   "steps.")


def attention_section(monitor) -> Section:
    """Heatmaps of attention entropy, layers by heads, at a few steps."""
    kept = [record for record in monitor.history if record.attention_entropy]
    if not kept:
        return Section("Attention entropy", "<p>The model has no attention module.</p>")
    pictures = []
    for record in pick(kept, MAX_PICKED_STEPS):
        names = list(record.attention_entropy)
        matrix = np.array([record.attention_entropy[name] for name in names])
        pictures.append(heatmap_markup(matrix, title=f"step {record.step}", row_labels=names,
                                       col_labels=[f"head {h}" for h in
                                                   range(matrix.shape[1])], cell=44))
    return Section("Attention entropy", f'<div class="pictures">{"".join(pictures)}</div>',
                   "The mean entropy (nats) of each head's attention weights over the "
                   "queries of the batch's first sequences. 0: every query looks at one "
                   "key; ln(T): it spreads evenly over T keys.")


def last_step_table(monitor) -> Section:
    """Every watched module's numbers at the last recorded step."""
    record = monitor.history[-1]
    rows = [("<tr><th>module</th><th>op</th><th>mean</th><th>std</th><th>saturated</th>"
            "<th>grad rms</th></tr>")]
    for name, _ in monitor.watched:
        stats = record.modules.get(name)
        if stats is None:
            continue
        numbers = [stats.mean, stats.std, stats.saturated, stats.grad_rms]
        cells = [name, stats.kind] + ["" if n is None else fmt(n) for n in numbers]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
                    + "</tr>")
    return Section(f"Modules at step {record.step}", f"<table>{''.join(rows)}</table>")


def pick(items: list, count: int) -> list:
    """At most `count` of `items`, evenly spread, the first and the last included."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def _saturation(record, name: str) -> float:
    stats = record.modules.get(name)
    return 0.0 if stats is None or stats.saturated is None else stats.saturated
