"""A griffe extension for the API reference (mkdocs.yml):

- an op made by `microtensor.autograd.primitive` shows its docstring as Python sees it,
  which ends with the op's derivative rule (griffe reads source, where the rule is still
  an argument of the decorator);
- a docstring's `>>>` examples become Python code blocks, their output included, instead
  of Markdown quotes, and indexing in prose (`x[i][j]`) is not read as a link.
"""
from __future__ import annotations

import importlib

import griffe


def fence_examples(text: str) -> str:
    """Wrap each run of `>>>`/`...` lines and the output lines after them in a fence."""
    out, inside = [], False
    for line in text.splitlines():
        starts = line.lstrip().startswith((">>>", "... ")) or line.strip() == "..."
        if starts and not inside:
            out.append("```python")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line.strip() if inside else line)
    if inside:
        out.append("```")
    return "\n".join(out)


def escape_indexing(text: str) -> str:
    """`x[index[i][j]][j]` in prose would read as Markdown reference links: escape the
    `][` outside code spans and fences (the page then shows the brackets as written)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            spans = line.split("`")
            line = "`".join(span.replace("][", "]\\[") if i % 2 == 0 else span
                            for i, span in enumerate(spans))
        out.append(line)
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_function(self, *, func, **kwargs) -> None:
        if any("primitive" in str(decorator.value) for decorator in func.decorators):
            runtime = getattr(importlib.import_module(func.module.path), func.name, None)
            if getattr(runtime, "__doc__", None):
                func.docstring = griffe.Docstring(runtime.__doc__, parent=func)

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = escape_indexing(fence_examples(obj.docstring.value))
