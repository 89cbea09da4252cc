"""A matrix drawn as a heatmap in plain SVG (no plotting library needed), in the same
colours as the graphs' value heatmaps (`labels.VALUE_PALETTE`): blue for negative, red
for positive, white at zero.

    >>> import tempfile, pathlib
    >>> path = heatmap_svg(np.eye(3), pathlib.Path(tempfile.mkdtemp()) / "eye.svg",
    ...                    title="identity", row_labels="abc")
    >>> path.read_text().count("<rect")      # the background and nine cells
    10
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from microtensor.errors import op_error

from .engine import write_atomic
from .labels import VALUE_PALETTE, diverging, text_width


def heatmap_svg(matrix, path, *, title: str = "", row_labels: Sequence[str] | None = None,
                col_labels: Sequence[str] | None = None, cell: int = 36,
                annotate: bool | None = None) -> Path:
    """Write `matrix` (2-D) as an SVG heatmap, scaled by its largest magnitude. Small
    matrices get their values written in the cells. Returns the path written."""
    path = Path(path)
    write_atomic(path, heatmap_markup(matrix, title=title, row_labels=row_labels,
                                      col_labels=col_labels, cell=cell, annotate=annotate))
    return path


def heatmap_markup(matrix, *, title: str = "", row_labels: Sequence[str] | None = None,
                   col_labels: Sequence[str] | None = None, cell: int = 36,
                   annotate: bool | None = None) -> str:
    """The SVG text that `heatmap_svg` writes, for pages that inline their pictures.

    >>> heatmap_markup(np.eye(2)).count("<rect")     # the background and four cells
    5
    """
    matrix = np.asarray(getattr(matrix, "data", matrix), dtype=np.float64)
    if matrix.ndim != 2:
        raise op_error("heatmap_svg", f"expected a 2-D matrix, got shape {matrix.shape}")
    rows, cols = matrix.shape
    if annotate is None:
        annotate = rows * cols <= 400 and cell >= 30
    scale = float(np.max(np.abs(matrix), initial=0)) or 1.0
    left = round(14 + max((text_width(s, 12) for s in row_labels or ()), default=0))
    top = 34 + (18 if col_labels else 0)
    width = round(max(left + cols * cell + 10, text_width(title, 14) + 20))
    height = top + rows * cell + 10
    col_size = min(12, int(cell * 0.6))

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'font-family="sans-serif" font-size="12">'),
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="10" y="18" font-size="14">{html.escape(title)}</text>']
    for j, label in enumerate(col_labels or []):
        parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 6}" '
                     f'font-size="{col_size}" text-anchor="middle">'
                     f'{html.escape(str(label))}</text>')
    for i in range(rows):
        if row_labels:
            parts.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" '
                         f'text-anchor="end">{html.escape(str(row_labels[i]))}</text>')
        for j in range(cols):
            value = matrix[i, j]
            x, y = left + j * cell, top + i * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                         f'fill="{diverging(value, scale, VALUE_PALETTE)}" stroke="#ddd" '
                         f'stroke-width="0.5"><title>[{i},{j}] = {value:.4g}</title></rect>')
            if annotate:
                parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" '
                             f'text-anchor="middle" font-size="10">{value:.2f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
