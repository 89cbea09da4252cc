"""What every lesson shares: where pictures go, how numbers are printed, and how claims
are checked (the heatmaps they draw are `viz.heatmap`'s).

A lesson *checks* each claim it makes with `check(...)`: if the numbers disagree with the
claim, the lesson stops with a `LessonCheckError` that says which claim failed and why.

    >>> check(abs(0.1 + 0.2 - 0.3) < 1e-9, "floats add up", "0.1 + 0.2 = 0.30000000000000004")
"""
from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

Echo = Callable[[str], None]


class LessonCheckError(AssertionError):
    """A lesson's claim did not hold for the numbers it computed."""


def check(ok, claim: str, detail: str = "", echo: Echo | None = print) -> None:
    """Raise LessonCheckError('check failed: claim (detail)') unless `ok`; else echo
    '✓ claim (detail)' (`echo=None`: say nothing)."""
    if not bool(ok):
        raise LessonCheckError(f"check failed: {claim}" + (f" ({detail})" if detail else ""))
    if echo is not None:
        echo(f"  ✓ {claim}" + (f"  ({detail})" if detail else ""))


class EchoStream:
    """A file-like object that hands each complete line to `echo` (for viz.step_through)."""

    def __init__(self, echo: Echo):
        self.echo, self.pending = echo, ""

    def write(self, text: str) -> int:
        """Take text as a file would; each complete line goes to `echo`."""
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self.echo(line)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: lines go out as they complete."""


def step_and_play(build: Callable, path, *, step: bool, html: bool, echo: Echo,
                  title: str) -> list:
    """The lesson's optional extras, on a fresh graph from `build()` (a scalar loss) each:
    --step walks its backward pass, pausing between steps; --html writes the step-through
    page to `path`. Returns the files written."""
    import viz  # the lessons' parent package

    files = []
    if step:
        heading(echo, "the backward pass, step by step (Enter: next, q: run to the end)")
        viz.step_through(build(), pause=True, file=EchoStream(echo))
    if html:
        page = viz.write_player(build(), path, title=title)
        echo(f"step-through player (open in a browser): {page}  ({laid_out_by()})")
        files.append(page)
    return files


def laid_out_by() -> str:
    """'laid out by system dot' (or 'bundled graphviz-pure'): which engine drew the graphs."""
    import viz

    return f"laid out by {viz.find_engine().label}"


def no_player(name: str, step: bool, html: bool, echo: Echo) -> None:
    """Say so when --step or --html is asked of a lesson that has no backward graph."""
    if step or html:
        echo(f"(the {name} lesson has no backward pass to step through; --step and --html "
             f"apply to backprop, softmax, self-attention, qkv and multi-head)")


def output_dir(name: str, out_dir=None) -> Path:
    """The directory a lesson writes to (created): `out_dir`, or ./lesson-output/NAME/."""
    path = Path(out_dir) if out_dir is not None else Path("lesson-output") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def fmt(values, precision: int = 4) -> str:
    """A compact one-line (or small block) rendering of numbers: [1.1, 0.2, 0.5]."""
    array = np.asarray(getattr(values, "data", values), dtype=np.float64)
    if array.ndim == 0:
        return f"{float(array):.{precision}g}"
    return np.array2string(array, precision=precision, separator=", ", suppress_small=True,
                           max_line_width=100, floatmode="maxprec")


def pad(text: str, width: int) -> str:
    """Left-justify `text` to `width` terminal columns (a CJK character takes two)."""
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - columns)


def matrix_rows(matrix, labels: Sequence[str]) -> str:
    """A labelled square matrix (rows and columns named by `labels`), 3 decimals."""
    lines = ["        " + "".join(pad(str(label), 8) for label in labels).rstrip()]
    for label, row in zip(labels, np.asarray(matrix)):
        lines.append("  " + pad(str(label), 6) + "".join(pad(f"{w:.3f}", 8) for w in row))
    return "\n".join(line.rstrip() for line in lines)


def heading(echo: Echo, title: str) -> None:
    """A section title in the terminal: a blank line, then '── title ────'."""
    echo("")
    echo(f"── {title} " + "─" * max(0, 70 - len(title)))


def table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    """Fixed-width text table; numbers are formatted with 4 significant digits."""
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return f"{value:.4g}"
        return str(value)
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
