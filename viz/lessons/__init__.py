"""Lessons: every claim of the Transformer notes, shown, computed and checked.

Each lesson is one module with `NAME`, `SUMMARY` (one line) and
`run(out_dir=None, step=False, html=False, echo=print) -> dict`. It narrates what it does,
computes with microtensor (and the `transformer` package), writes pictures to `out_dir`
(default ./lesson-output/NAME/), checks every claim it makes (a failed claim raises
`LessonCheckError`), and returns the numbers it checked.

    >>> from viz import lessons
    >>> [name for name, _ in lessons.catalog()][:3]
    ['architecture', 'self-attention', 'qkv']
    >>> numbers = lessons.run("softmax", out_dir="/tmp/softmax")

From the shell: `python -m viz lessons` lists them, `python -m viz lesson NAME` runs one.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from microtensor.errors import op_error

from .common import LessonCheckError

# Syllabus order: the model as a whole, then attention piece by piece, then training.
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
}


def names() -> list[str]:
    """Lesson names in syllabus order."""
    return list(_MODULES)


def get(name: str) -> ModuleType:
    """The lesson module called `name`; an unknown name raises a ValueError listing all."""
    if name not in _MODULES:
        raise op_error("lesson", f"no lesson called {name!r}", ValueError,
                       "valid lessons: " + ", ".join(_MODULES)
                       + " (`python -m viz lessons` lists them with summaries)")
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    assert module.NAME == name, f"lesson module {module.__name__} names itself {module.NAME!r}"
    return module


def catalog() -> list[tuple[str, str]]:
    """(name, one-line summary) for every lesson, in syllabus order."""
    return [(name, get(name).SUMMARY) for name in _MODULES]


def run(name: str, out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    """Run one lesson; returns the numbers it checked."""
    return get(name).run(out_dir=out_dir, step=step, html=html, echo=echo)


__all__ = ["LessonCheckError", "catalog", "get", "names", "run"]
