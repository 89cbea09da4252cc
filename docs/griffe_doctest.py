"""A griffe extension for the API reference (mkdocs.yml): a docstring's `>>>` examples
become Python code blocks, their output included, instead of Markdown quotes."""
from __future__ import annotations

import griffe


def fence_examples(text: str) -> str:
    """Wrap each run of `>>>`/`...` lines and the output lines after them in a fence."""
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
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


class DoctestBlocks(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_examples(obj.docstring.value)
