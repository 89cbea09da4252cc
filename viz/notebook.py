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

import inspect
import json
from pathlib import Path

from .engine import write_atomic


def _markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip().splitlines(True)}


def _code(text: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": text.strip().splitlines(True)}


def lesson_notebook(name: str) -> dict:
    """The notebook (nbformat 4 JSON) for lesson `name`."""
    from . import lessons  # imports `transformer`: only when a lesson is asked for

    module = lessons.get(name)
    if isinstance(module, lessons.Lesson):
        from .lessons.literate import notebook

        book = notebook(module.path, name, module.SUMMARY)
        book["cells"].append(_markdown("Its pictures, inline (a step-through player: click "
                                       "into it, then ←/→ or the buttons)."))
        book["cells"].append(_code("from viz.notebook import show\n\nshow(numbers[\"files\"])"))
        return book
    # A lesson that imports step_and_play has a step-through player for --html to write.
    html = hasattr(module, "step_and_play") or name == "backprop"
    about = inspect.getdoc(module) or ""
    cells = [
        _markdown(f"# Lesson: {name}\n\n**{module.SUMMARY}**\n\n{about}\n\n"
                  f"Generated from `{module.__name__}` (`python -m viz lesson {name} "
                  f"--notebook`); edit the module, not this notebook, and regenerate it."),
        _markdown("Run the lesson: it narrates, computes, and checks every claim it makes "
                  "(a failed check stops it with the claim and the numbers)."),
        _code(f"from viz import lessons\n\n"
              f"numbers = lessons.run({name!r}, html={html})  # pictures: lesson-output/{name}/"),
        _markdown("Its pictures, inline" + (" (the step-through player: click into it, "
                                            "then ←/→ or the buttons)" if html else "")
                  + ". `numbers` holds what the lesson checked."),
        _code("from viz.notebook import show\n\nshow(numbers[\"files\"])"),
    ]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 4,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"},
                         "language_info": {"name": "python"}}}


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
