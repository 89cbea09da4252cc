"""Line plots and histograms in plain SVG, for the training monitor's report.

Why not matplotlib: it is the ecosystem's plotting library, but the monitor's report
needs four kinds of picture (lines on a linear or log axis, a guide line, density
curves, heatmaps: `viz.heatmap`), and matplotlib would be the heaviest dependency of the
project. Measured here (Python 3.11, Linux x86-64, December 2026): matplotlib 3.11.2
brings nine packages besides NumPy (fontTools, Pillow, kiwisolver, contourpy, ...),
25 MB of wheels to download and 107 MB installed, and `import matplotlib.pyplot` takes
0.8-1.3 s (1.2-1.3 s with a cold font cache) against about 0.4 s for all of `viz`.
The three plot types below take about 250 lines, need nothing but the standard library
and NumPy, and write SVG that a page inlines as text (no files, no network), in the
same colours and fonts as the other pictures.

    >>> steps = np.arange(1, 51)
    >>> svg = line_plot_markup({"layer 0": (steps, 1 / steps), "layer 1": (steps, 2 / steps)},
    ...                        title="gradient norm", log_y=True)
    >>> svg.count("<polyline")
    2
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from .engine import write_atomic
from .labels import printable, text_width

# Ten distinguishable colours (Tableau's), then the same ten dashed, then dotted.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
DASHES = ("", "6 3", "2 2", "8 3 2 3")
FONT = 'font-family="sans-serif" font-size="11"'


def line_plot_markup(series: dict, *, title: str = "", x_label: str = "step",
                     y_label: str = "", log_y: bool = False, guide: float | None = None,
                     guide_label: str = "", width: int = 640, height: int = 300) -> str:
    """An SVG line plot of `series` ({name: (xs, ys)}), with a legend on the right.

    Non-finite points (and with `log_y`, values <= 0) break a line rather than bend it.
    `log_y` draws the y axis in decades (1e-3, 1e-2, ...). `guide` draws a dashed
    horizontal line at that y value, labelled `guide_label` (the update-to-data ratio's
    1e-3, say). Each line names its series when hovered.
    """
    lines = {name: _points(xs, ys, log_y) for name, (xs, ys) in series.items()}
    guide_y = None if guide is None else (math.log10(guide) if log_y else float(guide))
    drawn = [point for points in lines.values() for point in points if point is not None]
    xs = [x for x, _ in drawn]
    ys = [y for _, y in drawn] + ([] if guide_y is None else [guide_y])
    x_axis = _Axis(min(xs, default=0.0), max(xs, default=1.0), log=False)
    y_axis = _Axis(min(ys, default=0.0), max(ys, default=1.0), log=log_y)

    left, top, bottom = 70, 30, 44
    legend_width = max((text_width(printable(name), 11) for name in lines), default=0) + 44
    plot_right = width - 12
    total_width = round(width + legend_width)
    total_height = max(height, top + 16 * len(lines) + 10)
    plot_bottom = height - bottom

    def px(x):
        return left + (plot_right - left) * x_axis.fraction(x)

    def py(y):
        return plot_bottom - (plot_bottom - top) * y_axis.fraction(y)

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_width}" '
             f'height="{total_height}" {FONT}>'),
             f'<rect width="{total_width}" height="{total_height}" fill="white"/>',
             f'<text x="10" y="18" font-size="14">{_text(title)}</text>']
    parts += _axes(x_axis, y_axis, px, py, left, plot_right, top, plot_bottom)
    parts.append(f'<text x="{(left + plot_right) / 2}" y="{height - 6}" '
                 f'text-anchor="middle">{_text(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {(top + plot_bottom) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{_text(y_label)}</text>')
    if guide_y is not None:
        parts += _guide_markup(py(guide_y), guide_label, left, plot_right)
    for i, (name, points) in enumerate(lines.items()):
        parts += _series_markup(name, points, _style(i), px, py,
                                legend_x=width, legend_y=top + 16 * i + 8)
    parts.append("</svg>")
    return "\n".join(parts)


def histogram_markup(histograms: dict, *, title: str = "", x_label: str = "value",
                     width: int = 640, height: int = 300) -> str:
    """Histograms ({name: (counts, edges)}, as `np.histogram` returns them) drawn as
    density curves on one plot, one per name: the area under each is 1, so layers of
    different sizes compare, as in the lecture's per-layer histograms.

        >>> counts, edges = np.histogram(np.random.default_rng(0).normal(size=1000), 20)
        >>> histogram_markup({"layer 0": (counts, edges)}).count("<polyline")
        1
    """
    series = {}
    for name, (counts, edges) in histograms.items():
        counts, edges = np.asarray(counts, dtype=np.float64), np.asarray(edges, np.float64)
        widths = np.diff(edges)
        total = counts.sum()
        density = counts / (total * widths) if total else np.zeros_like(counts)
        series[name] = ((edges[:-1] + edges[1:]) / 2, density)
    return line_plot_markup(series, title=title, x_label=x_label, y_label="density",
                            width=width, height=height)


def line_plot_svg(series: dict, path, **options) -> Path:
    """Write `line_plot_markup(series, **options)` to `path` (an .svg); returns the path."""
    path = Path(path)
    write_atomic(path, line_plot_markup(series, **options), "line_plot_svg")
    return path


def histogram_svg(histograms: dict, path, **options) -> Path:
    """Write `histogram_markup(histograms, **options)` to `path`; returns the path."""
    path = Path(path)
    write_atomic(path, histogram_markup(histograms, **options), "histogram_svg")
    return path


# ---------------------------------------------------------------------- axes
class _Axis:
    """A value range mapped to [0, 1], with tick positions and labels: round numbers on
    a linear axis, whole decades on a log axis (whose values are already log10)."""

    def __init__(self, low: float, high: float, log: bool):
        self.log = log
        if high - low < 1e-12:                  # one value: give it room
            low, high = low - (0.5 if log else max(abs(low) * 0.1, 1.0)), high + (
                0.5 if log else max(abs(high) * 0.1, 1.0))
        if log:
            self.low, self.high = math.floor(low), math.ceil(high)
            step = max(1, math.ceil((self.high - self.low) / 8))
            self.ticks = list(range(self.low, self.high + 1, step))
        else:
            step = _nice_step((high - low) / 5)
            self.low, self.high = math.floor(low / step) * step, math.ceil(high / step) * step
            count = round((self.high - self.low) / step)
            self.ticks = [self.low + k * step for k in range(count + 1)]

    def fraction(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low)

    def label(self, tick: float) -> str:
        if self.log:
            return "1" if tick == 0 else f"1e{int(tick)}"
        return f"{tick:.6g}"


def _nice_step(rough: float) -> float:
    """1, 2 or 5 times a power of ten, at least `rough`."""
    power = 10 ** math.floor(math.log10(rough))
    return next(power * m for m in (1, 2, 5, 10) if power * m >= rough)


def _axes(x_axis, y_axis, px, py, left, right, top, bottom) -> list[str]:
    parts = [(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
             f'fill="none" stroke="#888"/>')]
    for tick in y_axis.ticks:
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#eee"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{y_axis.label(tick)}</text>')
    for tick in x_axis.ticks:
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" '
                     f'stroke="#888"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
                     f'{x_axis.label(tick)}</text>')
    return parts


# ---------------------------------------------------------------------- lines
def _points(xs, ys, log_y: bool) -> list:
    """(x, y) pairs with a None where the line must break: y not finite (or <= 0 on a
    log axis). On a log axis y becomes log10(y)."""
    points = []
    for x, y in zip(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)):
        if not (math.isfinite(x) and math.isfinite(y)) or (log_y and y <= 0):
            points.append(None)
        else:
            points.append((float(x), math.log10(y) if log_y else float(y)))
    return points


def _segments(points: list) -> list[list]:
    """The unbroken runs of `points` (split at the Nones)."""
    runs, run = [], []
    for point in points:
        if point is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(point)
    return runs + ([run] if run else [])


def _guide_markup(y: float, label: str, left: float, right: float) -> list[str]:
    """A dashed horizontal line across the plot at pixel height `y`, labelled at its left."""
    line = (f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#333" '
            f'stroke-dasharray="5 4"/>')
    # a white outline keeps the label legible where lines cross it
    text = (f'<text x="{left + 6}" y="{y - 4:.1f}" fill="#333" stroke="white" '
            f'stroke-width="3" paint-order="stroke">{_text(label)}</text>')
    return [line, text]


def _series_markup(name, points, style, px, py, legend_x, legend_y) -> list[str]:
    """One series: its unbroken runs as polylines (a lone point as a dot), each naming the
    series when hovered, and its legend entry at (legend_x, legend_y)."""
    colour, dash = style
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    parts = []
    for segment in _segments(points):
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in segment)
        if len(segment) == 1:
            parts.append(f'<circle cx="{px(segment[0][0]):.1f}" '
                         f'cy="{py(segment[0][1]):.1f}" r="2.5" fill="{colour}">'
                         f'<title>{_text(name)}</title></circle>')
        else:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                         f'stroke-width="1.5"{dash_attr}><title>{_text(name)}</title>'
                         f'</polyline>')
    parts.append(f'<line x1="{legend_x}" x2="{legend_x + 24}" y1="{legend_y}" '
                 f'y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
    parts.append(f'<text x="{legend_x + 30}" y="{legend_y + 4}">{_text(name)}</text>')
    return parts


def _style(index: int) -> tuple[str, str]:
    return PALETTE[index % len(PALETTE)], DASHES[(index // len(PALETTE)) % len(DASHES)]


def _text(text) -> str:
    return html.escape(printable(text))
