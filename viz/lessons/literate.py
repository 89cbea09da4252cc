"""A lesson's one source: a Python file of cells in Jupytext's percent format.

    # %% [markdown]
    # ## Why divide by √d_k
    # Prose in Markdown, one comment line per line.

    # %%
    scores = q @ k.T / math.sqrt(d_k)
    check(abs(scores.var() - 1) < 0.15, "scaled, var(q·k/√d_k) ≈ 1")

Why this format: the source stays a Python file (it runs with `python FILE`, lints and
diffs as code); each `# %%` line starts a cell, `# %% [markdown]` a prose cell; Jupyter
(with jupytext), VS Code and PyCharm open it as a notebook as it is; and reading it takes
the thirty lines below, so nothing is needed at run time. MyST Markdown reads better as
prose but is no longer a program.

From the one source:
- `run_lesson` runs the cells in the terminal: prose printed as narration, code executed,
  every `check` printing its ✓ line (a failed claim raises `LessonCheckError`);
- `notebook` makes a Jupyter notebook, one cell per cell, so that a learner edits a cell
  and re-runs from there; the docs site renders that notebook as a page.

The first code cell, tagged `parameters` (as papermill does), sets `out_dir`, `step` and
`html`; the terminal overrides them. The last cell sets `numbers`: what the lesson checked.
"""
from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .common import EchoStream, heading

CELL = re.compile(r"^# %%(?P<rest>.*)$")


@dataclass
class Cell:
    """One cell of a lesson's source: prose or code, its tags, and where it starts."""

    kind: str            # "markdown" or "code"
    source: str          # markdown without its "# " prefixes; code as written
    tags: tuple = ()
    line: int = 1        # where the cell's text starts in the file (for tracebacks)


def read_cells(path) -> list[Cell]:
    """The cells of a percent-format file. Lines before the first `# %%` (the file's
    docstring and header) are no cell."""
    cells, lines, kind, tags, start = [], None, None, (), 0

    def close():
        if lines is not None:
            text = "\n".join(lines)
            first = start + len(text) - len(text.lstrip("\n"))   # skip leading blank lines
            text = text.strip("\n")
            if kind == "markdown":
                text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                 for line in text.splitlines())
            if text.strip():
                cells.append(Cell(kind, text, tags, first))

    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        header = CELL.match(line)
        if header:
            close()
            rest = header["rest"]
            kind = "markdown" if "[markdown]" in rest else "code"
            tags = tuple(re.findall(r'"([^"]+)"', rest.partition("tags=")[2]))
            lines, start = [], number + 1
        elif lines is not None:
            lines.append(line)
    close()
    return cells


def narrate(markdown: str, echo) -> None:
    """A prose cell in the terminal: headings as rules, the rest as written."""
    for line in markdown.splitlines():
        title = re.match(r"^#+\s+(.*)$", line)
        if title:
            heading(echo, title[1])
        else:
            echo(line)


def run_lesson(path, echo=print, **parameters) -> dict:
    """Run the lesson at `path` cell by cell, narrating through `echo`; `parameters`
    (out_dir, step, html) override the parameters cell. Returns the namespace the cells
    ran in (its `numbers` is what the lesson checked)."""
    if echo is print:          # print would write to the stream it feeds: to the terminal
        echo = lambda line, terminal=sys.stdout: terminal.write(line + "\n")
    namespace = {"__name__": "__lesson__", "__file__": str(path)}
    stream = EchoStream(echo)
    with contextlib.redirect_stdout(stream):
        for cell in read_cells(path):
            if cell.kind == "markdown":
                narrate(cell.source, echo)
                echo("")
                continue
            # Padded to its place in the file, so a traceback names the file's own line.
            code = compile("\n" * (cell.line - 1) + cell.source, str(path), "exec")
            exec(code, namespace)                   # noqa: S102 (the lesson's own code)
            if "parameters" in cell.tags:
                namespace.update({k: v for k, v in parameters.items() if v is not None})
    if stream.pending:
        echo(stream.pending)
    return namespace


def notebook(path, title: str, summary: str) -> dict:
    """The lesson as a Jupyter notebook (nbformat 4 JSON): a title cell, then one notebook
    cell per source cell."""
    intro = (f"# Lesson: {title}\n\n**{summary}**\n\nEach cell can be changed and run "
             f"again. The source is `{Path(path).name}`; `python -m viz lesson {title}` runs "
             f"it in the terminal.")
    cells = [_cell("markdown", intro)]
    cells += [_cell(cell.kind, cell.source, cell.tags) for cell in read_cells(path)]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 4,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"},
                         "language_info": {"name": "python"}}}


def _cell(kind: str, source: str, tags: tuple = ()) -> dict:
    cell = {"cell_type": kind, "metadata": {"tags": list(tags)} if tags else {},
            "source": source.splitlines(True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell
