"""Lessons as Jupyter notebooks, generated from the lessons' sources (the one source).

`python -m viz lesson NAME --notebook` writes NAME.ipynb: one notebook cell per cell of the
lesson's literate source (`viz.lessons.literate`), then a cell that shows its pictures
inline, the step-through player included. A learner edits a cell and runs again from there.
Change the lesson's source and the notebook follows: regenerate it, nothing is copied.

    >>> from viz.notebook import write_notebook
    >>> write_notebook("backprop", "notebooks/backprop.ipynb")
    PosixPath('notebooks/backprop.ipynb')

`show(files)` is what the last cell calls: SVG pictures inline, HTML players as iframes.
"""
from __future__ import annotations

import json
from pathlib import Path

from .engine import write_atomic


def _markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip().splitlines(True)}


def _code(text: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": text.strip().splitlines(True)}


def lesson_notebook(name: str) -> dict:
    """The notebook (nbformat 4 JSON) for lesson `name`: its cells, then its pictures."""
    from . import lessons  # imports `transformer`: only when a lesson is asked for
    from .lessons.literate import notebook

    lesson = lessons.get(name)
    book = notebook(lesson.path, name, lesson.SUMMARY)
    book["cells"].append(_markdown("Its pictures, inline (a step-through player: click into "
                                   "it, then ←/→ or the buttons)."))
    book["cells"].append(_code('from viz.notebook import show\n\nshow(numbers["files"])'))
    return book


def write_notebook(name: str, path) -> Path:
    """Write lesson `name` as a notebook to `path` (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(lesson_notebook(name), indent=1, ensure_ascii=False) + "\n")
    return path


def show(files) -> None:
    """Display a lesson's files in Jupyter: SVG pictures inline, HTML pages (the
    step-through player) in an iframe; other files by name."""
    from IPython.display import SVG, display  # Jupyter's own; only called inside it

    from .player import Player

    for file in files:
        path = Path(file)
        if path.suffix == ".svg":
            display(SVG(filename=str(path)))
        elif path.suffix == ".html":
            display(Player(path.read_text(encoding="utf-8")))
        else:
            print(path)
