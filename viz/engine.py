"""Which program lays out the graphs, and running it.

Graphs are laid out by a Graphviz-compatible `dot` program. `find_engine()` picks one, in
this order, and every drawing path (`viz.render`, Jupyter display, the player, the lessons,
`python -m viz`) goes through it:

1. an explicit choice: the `engine=` argument, else the `MICROTENSOR_DOT` environment
   variable. Either names a program (a path, or a command on PATH), or says `system`
   (Graphviz's `dot` on PATH) or `bundled` (graphviz-pure);
2. Graphviz's `dot`, if it is on PATH and runs;
3. graphviz-pure, a self-contained port of Graphviz's `dot` that `pip install` brings
   (a dependency of microtensor). It installs a program named `graphviz-pure`, found
   through its package's file list, so it works even when the scripts folder is not on
   PATH (a venv that is not activated, a Jupyter kernel).

    >>> engine = find_engine()
    >>> engine.label
    'system dot'
    >>> svg = engine.run(graph.source)      # bytes of SVG

The `graphviz` package's own `pipe()`/`render()` always run `dot`; `viz.Graph` overrides
them to run the engine found here.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from microtensor.errors import op_error
from microtensor.files import write_bytes_atomically

ENV_VAR = "MICROTENSOR_DOT"
BUNDLED = "graphviz-pure"

INSTALL_HINT = ("reinstall microtensor so that its dependency graphviz-pure comes with it "
                "(`pip install graphviz-pure`), or install Graphviz, which provides `dot`: "
                "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` "
                "(macOS), or `conda install -c conda-forge graphviz`; or set MICROTENSOR_DOT "
                "to a Graphviz `dot` program")

# Layout engines estimate the width of characters they have no font metrics for; the
# labels are padded for that (viz.labels.pad_width), so these notes are only noise.
_NOISE = re.compile(r"no value for width of non-ASCII character|"
                    r"Falling back to width of space character")


class DotNotFoundError(RuntimeError):
    """No Graphviz layout program could run (neither `dot` nor the bundled graphviz-pure)."""


class DotFailedError(RuntimeError):
    """The layout program ran and failed: a format it cannot write, or a graph it refused
    (which would be a bug: every user-supplied string is escaped)."""


@dataclass(frozen=True)
class Engine:
    """A layout program: `path` to run, `label` to tell the user which one it is."""

    path: str
    kind: str      # "system" (Graphviz's dot), "bundled" (graphviz-pure), or "chosen"

    @property
    def label(self) -> str:
        """How the lessons and errors name it: 'system dot', 'bundled graphviz-pure' or the path."""
        if self.kind == "system":
            return "system dot"
        if self.kind == "bundled":
            return "bundled graphviz-pure"
        return f"{Path(self.path).name} at {self.path}"

    def __str__(self) -> str:
        return self.label

    def run(self, source: str, format: str = "svg", where: str = "render") -> bytes:
        """Lay out DOT `source` and return the output (`format`: svg, png, pdf, ...).

        The source goes in on stdin and the picture comes back on stdout; warnings about
        character widths are dropped (the labels are padded for them), any other warning
        is passed on to stderr."""
        try:
            done = subprocess.run([self.path, f"-T{format}"], input=source.encode("utf-8"),
                                  capture_output=True, timeout=600, check=False)
        except OSError as error:
            raise op_error(where, f"the layout program {self.path} ({self.label}) could not "
                           f"run: {error}", DotNotFoundError, INSTALL_HINT) from None
        except subprocess.TimeoutExpired:
            raise op_error(where, f"{self.label} took over 10 minutes to lay out the graph",
                           DotFailedError, "draw fewer nodes: collapse=True folds modules, "
                           "or lower max_nodes") from None
        notes = [line for line in done.stderr.decode("utf-8", "replace").splitlines()
                 if line.strip() and not _NOISE.search(line)]
        if done.returncode != 0 or not done.stdout:
            raise op_error(where, f"{self.label} ({self.path}) failed with exit status "
                           f"{done.returncode}: " + " / ".join(notes[-5:]), DotFailedError,
                           f"ask for a format it writes (svg and png always; pdf only with "
                           f"system Graphviz), or choose the other engine with {ENV_VAR}="
                           f"system or {ENV_VAR}=bundled")
        for note in notes:
            print(f"{self.label}: {note}", file=sys.stderr)
        return done.stdout


@functools.lru_cache(maxsize=32)
def _runs(path: str) -> bool:
    """Does `path -V` run? (A `dot` on PATH can be broken or a stub.)"""
    try:
        done = subprocess.run([path, "-V"], check=False, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def bundled_path() -> str | None:
    """Where graphviz-pure's program is, from the installed package's file list first
    (then the scripts folders of this Python, then PATH); None if it is not installed."""
    names = {BUNDLED, BUNDLED + ".exe"}
    candidates = []
    try:
        files = importlib.metadata.files(BUNDLED) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(f.locate()) for f in files if Path(str(f)).name in names]
    for scheme in {sysconfig.get_default_scheme(), f"{os.name}_user"}:
        try:
            scripts = sysconfig.get_path("scripts", scheme)
        except KeyError:
            continue
        candidates += [Path(scripts) / name for name in names]
    candidates += [Path(sys.executable).parent / name for name in names]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate.resolve())
    return shutil.which(BUNDLED)


def _chosen(choice: str, where: str) -> Engine:
    """The engine named by an explicit choice (argument or environment variable)."""
    if choice == "system":
        path = shutil.which("dot")
        if path is None or not _runs(path):
            raise op_error(where, "the system engine was chosen, but Graphviz's `dot` is "
                           "not on PATH or does not run", DotNotFoundError, INSTALL_HINT)
        return Engine(path, "system")
    if choice == "bundled":
        path = bundled_path()
        if path is None or not _runs(path):
            raise op_error(where, "the bundled engine was chosen, but graphviz-pure is not "
                           "installed or does not run", DotNotFoundError,
                           "pip install graphviz-pure")
        return Engine(path, "bundled")
    path = shutil.which(choice) or (choice if Path(choice).is_file() else None)
    if path is None or not _runs(path):
        raise op_error(where, f"the layout program {choice!r} (from engine= or "
                       f"{ENV_VAR}) is not a program that runs", DotNotFoundError,
                       f"name a Graphviz `dot` program, or 'system' or 'bundled'; or unset "
                       f"{ENV_VAR}")
    kind = "bundled" if path == bundled_path() else "chosen"
    return Engine(path, kind)


def find_engine(engine: Engine | str | None = None, *, where: str = "render",
                source_path: Path | str | None = None) -> Engine:
    """The layout program to use: `engine` (an Engine, a program, 'system' or 'bundled'),
    else $MICROTENSOR_DOT, else Graphviz's `dot` on PATH, else the bundled graphviz-pure.

    When none can run, raises one DotNotFoundError that says how to get one (and where the
    graph's source was saved, when `source_path` is given)."""
    if isinstance(engine, Engine):
        return engine
    choice = engine or os.environ.get(ENV_VAR, "").strip()
    if choice:
        return _chosen(str(choice), where)
    system = shutil.which("dot")
    if system is not None and _runs(system):
        return Engine(system, "system")
    bundled = bundled_path()
    if bundled is not None and _runs(bundled):
        return Engine(bundled, "bundled")
    saved = f" The graph source was written to {source_path}." if source_path else ""
    raise op_error(where, "no Graphviz layout engine could run (Graphviz's `dot` is not on "
                   "PATH and the bundled graphviz-pure is not installed), so the graph "
                   f"cannot be rendered.{saved}", DotNotFoundError, INSTALL_HINT)


def available_engines() -> list[Engine]:
    """Every engine that runs here: system `dot` and bundled graphviz-pure, where present
    (for comparing them; `find_engine` picks one)."""
    found = []
    for choice in ("system", "bundled"):
        try:
            found.append(_chosen(choice, "available_engines"))
        except DotNotFoundError:
            pass
    return found


def write_atomic(path: Path | str, data: str | bytes, where: str = "write") -> None:
    """Write a picture or page atomically, by the rules of every writer (missing folders
    created, symlinks written through, permissions kept, read-only files refused; see
    microtensor.files). `where` names the public function in errors."""
    write_bytes_atomically(path, data, where)


def source_saved(error: Exception, source_path: Path | str) -> Exception:
    """`error` (a layout that could not run or failed) saying where the graph's DOT source
    was saved, so the drawing is not lost."""
    saved = type(error)(f"{error} The graph source was written to {source_path}.")
    saved.microtensor = True
    return saved
