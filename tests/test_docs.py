"""Docs that cannot drift: every Python block in README.md and docs/*.md runs, and where
a page shows its printed output (a plain ``` block right after it) the output is compared, numbers
within the precision shown. A block quoted from the source (marked
`<!-- source: path -->` just above it) must appear in that file word for word. A block
that cannot run here (it needs a network or a long training run) says so just above it,
`<!-- no-run: the reason -->`, one block at a time. Every `>>>` example in a docstring
runs too (test_docstrings.py).
"""
from __future__ import annotations

import contextlib
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]   # docs/lessons/ holds notebooks
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(source|no-run):\s*(.+?)\s*-->\s*$")
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass
class Block:
    language: str
    text: str
    line: int                    # where the block's first line is in the file
    marker: tuple | None         # ("source", path) or ("no-run", reason)
    output: str | None = None    # the plain block right after a python block
    page: str = "README.md"      # the file it is in, relative to the repository


def blocks(path: Path = README) -> list[Block]:
    """The fenced blocks of a Markdown file, each python one with its shown output."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i, pending_marker, previous_end = [], 0, None, None
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker:
            pending_marker = (marker.group(1), marker.group(2))
        fence = FENCE.match(lines[i])
        if not fence:
            if lines[i].strip() and not marker:
                pending_marker = None
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(fence.group(1), "\n".join(lines[i + 1:end]), i + 2, pending_marker,
                      page=str(path.relative_to(ROOT)))
        between = lines[previous_end + 1:i] if previous_end is not None else ["x"]
        if (block.language == "" and found and found[-1].language == "python"
                and not any(line.strip() for line in between)):
            found[-1].output = block.text
        else:
            found.append(block)
        pending_marker, previous_end, i = None, end, end + 1
    return found


PYTHON = [b for page in PAGES for b in blocks(page) if b.language == "python"]


def output_matches(shown: str, printed: str) -> bool:
    """`printed` has the lines `shown` has: a line `...` stands for any lines, `...` inside
    a line for any text (at the very end, for all that follows), runs of spaces for any spaces, and numbers agree to the
    precision they are shown with (float noise differs between machines)."""
    pattern, expected_numbers = [], []
    for line in shown.strip("\n").splitlines():
        if line.strip() == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
            continue
        parts = []
        for piece in re.split(r"(\.\.\.|" + NUMBER + r"| +)", line.rstrip()):
            if piece == "...":
                parts.append(r"[^\n]*?")
            elif piece and re.fullmatch(NUMBER, piece):
                parts.append(f"({NUMBER}) *")    # NumPy pads a shorter number
                expected_numbers.append(piece)
            elif piece and piece.isspace():
                parts.append(r" *")
            else:
                parts.append(re.escape(piece))
        pattern.append(r" *" + "".join(parts) + r" *\n")
    if shown.rstrip().endswith("..."):
        pattern.append(r"(?:[^\n]*\n)*")     # an excerpt: whatever follows
    text = "\n".join(line.rstrip() for line in printed.strip("\n").splitlines()) + "\n"
    match = re.fullmatch("".join(pattern), text)
    if not match:
        return False
    for expected, got in zip(expected_numbers, match.groups()):
        decimals = len(expected.split(".")[1].split("e")[0].split("E")[0]) \
            if "." in expected else 0
        tolerance = 1.5 * 10 ** -decimals
        mantissa_scale = 10 ** int(re.search(r"[eE]([-+]?\d+)", expected).group(1)) \
            if re.search(r"[eE]", expected) else 1
        if not math.isclose(float(expected), float(got),
                            abs_tol=tolerance * mantissa_scale, rel_tol=1e-5):
            return False
    return True


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: f"{b.page}:{b.line}")
def test_readme_python_block(block, tmp_path, monkeypatch):
    if block.marker and block.marker[0] == "source":
        source = (ROOT / block.marker[1]).read_text(encoding="utf-8")
        assert block.text in source, (f"{block.page}:{block.line} quotes {block.marker[1]}, "
                                      "but the file no longer holds that text")
        return
    if block.marker and block.marker[0] == "no-run":
        pytest.skip(f"{block.page}:{block.line}: {block.marker[1]}")
    monkeypatch.chdir(tmp_path)              # files the example writes land here
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = compile(block.text, f"{block.page}:{block.line}", "exec")
        exec(code, {"__name__": "__readme__"})  # noqa: S102 (running the README is the point)
    if block.output is not None:
        assert output_matches(block.output, printed.getvalue()), (
            f"{block.page}:{block.line} shows\n{block.output}\nbut the code printed\n"
            f"{printed.getvalue()}")


def test_the_parser_sees_every_python_block():
    count = sum(page.read_text(encoding="utf-8").count("```python") for page in PAGES)
    assert len(PYTHON) == count >= 5
    assert sum(b.output is not None for b in PYTHON) >= 3


def test_output_matching_ignores_float_noise_but_not_wrong_numbers():
    assert output_matches("tensor(2.1379, op=sum)", "tensor(2.1380, op=sum)\n")
    assert not output_matches("tensor(2.1379, op=sum)", "tensor(2.1479, op=sum)\n")
    assert output_matches("a\n...\nz 1e-05", "a\nb\nc\nz 1.00001e-05\n")
    assert not output_matches("a\nz", "a\nb\nz\n")
    assert output_matches("[[ 1.5  -2. ]]", "[[ 1.5 -2. ]]")


def test_the_readme_lesson_list_is_what_the_cli_prints():
    """The `$ python -m viz lessons` block shows the command's output, word for word."""
    import subprocess
    import sys
    text = README.read_text(encoding="utf-8")
    shown = text.split("$ python -m viz lessons\n", 1)[1].split("```", 1)[0]
    printed = subprocess.run([sys.executable, "-m", "viz", "lessons"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    assert printed.strip() == shown.strip()


def api_words() -> set[str]:
    """Every identifier in the API section of docs/reference.md (the API in brief)."""
    text = (ROOT / "docs" / "reference.md").read_text()
    section = text[text.index("## The API"):text.index("## Choices worth knowing")]
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", section))


def public_names(module) -> list[str]:
    """What a user can reach on `module`: its `__all__`, else its public classes and
    functions defined there."""
    import inspect
    if hasattr(module, "__all__"):
        return [name for name in module.__all__ if not inspect.ismodule(getattr(module, name))]
    return [name for name, value in vars(module).items() if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__.startswith(module.__name__.split(".")[0])
            and value.__module__ != "microtensor.errors"]   # imported for their own use


def test_the_api_in_brief_names_every_public_name():
    import microtensor as mt
    import microtensor.functional as F
    import transformer
    import viz
    from microtensor import nn, optim
    words = api_words()
    tensor_methods = [name for name in vars(mt.Tensor) if not name.startswith("_")]
    missing = {module.__name__: [name for name in public_names(module) if name not in words]
               for module in (mt, F, nn, optim, transformer, viz)}
    missing["Tensor"] = [name for name in tensor_methods if name not in words]
    missing = {where: names for where, names in missing.items() if names}
    assert not missing, f"docs/reference.md's API section does not name: {missing}"
