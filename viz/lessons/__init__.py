"""Lessons: every claim of the Transformer notes, shown, computed and checked.

Each lesson is one literate source, `viz/lessons/NAME.lesson.py`: cells of English prose
(quoting the notes' Chinese beside its English), code, and the checks of every claim it
makes (a failed claim raises `LessonCheckError`); see `viz.lessons.literate`. It computes
with microtensor (and the `transformer` package), writes pictures to `out_dir` (default
./lesson-output/NAME/), and its last cell sets `numbers`, what it checked.

    >>> from viz import lessons
    >>> [name for name, _ in lessons.catalog()][:3]
    ['architecture', 'self-attention', 'qkv']
    >>> numbers = lessons.run("softmax", out_dir="/tmp/softmax")

From the shell: `python -m viz lessons` lists them, `python -m viz lesson NAME` runs one,
`--notebook` writes it as a notebook whose cells are the source's.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from microtensor.errors import op_error

from .common import LessonCheckError

HERE = Path(__file__).resolve().parent


@dataclass
class Lesson:
    """A literate lesson: its name, one-line summary and source file."""

    NAME: str
    SUMMARY: str
    path: Path

    def run(self, out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
        """Run the lesson's cells, narrating through `echo`; returns the numbers it checked."""
        from .literate import run_lesson

        return run_lesson(self.path, echo, out_dir=out_dir, step=step, html=html)["numbers"]


def _summary(path: Path) -> str:
    """The value of `SUMMARY = "..."` in a lesson's source, read without running it."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SUMMARY":
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} sets no SUMMARY")


# Syllabus order: the model as a whole, then attention piece by piece, then training.
# Each name's source is viz/lessons/<file>.lesson.py.
_MODULES = {
    "architecture": "architecture",
    "self-attention": "self_attention",
    "qkv": "qkv",
    "kv-cache": "kv_cache",
    "scaling": "scaling",
    "multi-head": "multi_head",
    "positional-encoding": "positional_encoding",
    "rope": "rope",
    "backprop": "backprop",
    "softmax": "softmax",
    "residuals": "residuals",
    "attribution": "attribution",
}


def names() -> list[str]:
    """Lesson names in syllabus order."""
    return list(_MODULES)


def get(name: str) -> Lesson:
    """The lesson called `name`; an unknown name raises a ValueError listing all."""
    if name not in _MODULES:
        raise op_error("lesson", f"no lesson called {name!r}", ValueError,
                       "valid lessons: " + ", ".join(_MODULES)
                       + " (`python -m viz lessons` lists them with summaries)")
    source = HERE / f"{_MODULES[name]}.lesson.py"
    return Lesson(name, _summary(source), source)


def catalog() -> list[tuple[str, str]]:
    """(name, one-line summary) for every lesson, in syllabus order."""
    return [(name, get(name).SUMMARY) for name in _MODULES]


def run(name: str, out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    """Run one lesson; returns the numbers it checked."""
    return get(name).run(out_dir=out_dir, step=step, html=html, echo=echo)


__all__ = ["Lesson", "LessonCheckError", "catalog", "get", "names", "run"]
