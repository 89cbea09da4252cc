"""What `mkdocs build` runs before and while it renders the site (mkdocs.yml: `hooks:`).

- Before the build: every lesson becomes a notebook in docs/lessons/ (generated, never
  committed), executed by a Jupyter kernel on this Python, so each lesson page shows its
  printed checks, its pictures and its step-through player. A notebook newer than its
  lesson's source and than the viz package is kept (set MICROTENSOR_DOCS_FRESH=1 to run
  them all again).
- On the performance page: `<!-- bench-table -->` becomes the table of the benchmark run
  saved in docs/bench-results.json (`python tests/bench/run.py --out
  docs/bench-results.json`), with the machine it ran on: the figures are a run's, never
  copied by hand.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "docs" / "lessons"
BENCH = ROOT / "docs" / "bench-results.json"
KERNEL = "microtensor-docs"
sys.path.insert(0, str(ROOT))      # this checkout's packages, also when another is installed


def on_config(config, **kwargs):
    write_lesson_notebooks()
    return config


def on_files(files, config, **kwargs):
    """The pictures under viz/assets/, which the pages link as ../viz/assets/NAME.svg (a
    path that also works on GitHub), served as pictures/NAME.svg."""
    from mkdocs.structure.files import File

    for picture in sorted((ROOT / "viz" / "assets").glob("*.svg")):
        files.append(File.generated(config, f"pictures/{picture.name}",
                                    abs_src_path=str(picture)))
    return files


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    depth = page.file.src_uri.count("/")
    markdown = markdown.replace("../viz/assets/", "../" * depth + "pictures/")
    if "<!-- bench-table -->" not in markdown:
        return markdown
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    try:
        from run import markdown_table, per_op_markdown
    finally:
        sys.path.pop(0)
    results = json.loads(BENCH.read_text(encoding="utf-8"))
    return (markdown.replace("<!-- bench-table -->", markdown_table(results))
            .replace("<!-- bench-per-op -->", per_op_markdown(results)))


def write_lesson_notebooks() -> None:
    """docs/lessons/NAME.ipynb for every lesson, executed (see the module docstring)."""
    from viz import lessons
    from viz.notebook import write_notebook

    LESSONS.mkdir(exist_ok=True)
    newest_code = max(path.stat().st_mtime for path in (ROOT / "viz").rglob("*.py"))
    fresh = os.environ.get("MICROTENSOR_DOCS_FRESH") == "1"
    with tempfile.TemporaryDirectory() as jupyter, tempfile.TemporaryDirectory() as work:
        kernel_dir = Path(jupyter) / "kernels" / KERNEL
        kernel_dir.mkdir(parents=True)
        (kernel_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "microtensor docs", "language": "python",
            "env": {"PYTHONPATH": str(ROOT)}}))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            filter(None, [jupyter, os.environ.get("JUPYTER_PATH")]))
        for name in lessons.names():
            target = LESSONS / f"{name}.ipynb"
            if not fresh and target.exists() and target.stat().st_mtime > newest_code:
                continue
            execute(write_notebook(name, Path(work) / f"{name}.ipynb"), target, work)


def execute(source: Path, target: Path, work: str) -> None:
    """Run the notebook at `source` in `work` and save it, with its outputs, to `target`
    (written whole or not at all)."""
    import nbclient
    import nbformat

    notebook = nbformat.read(source, as_version=4)
    nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=600,
                            resources={"metadata": {"path": work}}).execute()
    partial = target.with_suffix(".ipynb.partial")
    nbformat.write(notebook, partial)
    partial.replace(target)
