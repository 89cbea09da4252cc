"""Every `>>>` example in the docstrings of microtensor, transformer and viz runs.

Where an example shows output, the output is compared (ELLIPSIS and whitespace-normalised,
as doctest does); an example that shows none need only run. Each runs in a fresh folder
(files it writes land there) with `mt`, `np`, `F`, `nn`, `optim` and `viz` imported, and
`input()` answering Enter (for `pause=True`). An example that needs a download is marked
in its docstring, one line at a time (`# doctest: +SKIP` with the reason).

viz's drawing modules speak of "the loss of your model": `loss` (with its `W_q` and
`model`), `new_loss`, `another_loss` and `graph` are given to them, each made from a fresh
attention example.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
import viz
from microtensor import nn, optim
from viz.examples import attention_example

PACKAGES = ("microtensor", "transformer", "viz")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def module_names() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        # With the prefix, walk_packages imports each subpackage (microtensor.ops,
        # transformer.fast) by its full name and walks into it; without, it cannot.
        names += [info.name for info in pkgutil.walk_packages(module.__path__,
                                                                  prefix=f"{package}.")
                  if not info.name.endswith("__main__")]
    return names


def docstring_tests():
    found = []
    for name in module_names():
        module = importlib.import_module(name)
        for test in doctest.DocTestFinder().find(module, name):
            if test.examples and test.filename == module.__file__:
                found.append(pytest.param(name, test.name, id=test.name))
    return found


class ShownOutputChecker(doctest.OutputChecker):
    """Compare output only where the example shows some."""

    def check_output(self, want, got, optionflags):
        return not want or super().check_output(want, got, optionflags)


def drawing_names() -> dict:
    loss, params = attention_example()
    return {"loss": loss, "W_q": params["W_q"], "model": params,
            "new_loss": attention_example()[0], "another_loss": attention_example()[0],
            "graph": viz.draw(attention_example()[0])}


@pytest.mark.parametrize(("module_name", "test_name"), docstring_tests())
def test_docstring_examples_run(module_name, test_name, tmp_path, monkeypatch):
    module = importlib.import_module(module_name)
    test = next(t for t in doctest.DocTestFinder().find(module, module_name)
                if t.name == test_name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    monkeypatch.setattr("builtins.input", lambda prompt="": "")
    test.globs.update(mt=mt, np=np, F=F, nn=nn, optim=optim, viz=viz)
    if module_name.startswith("viz") and not module_name.startswith("viz.lessons"):
        test.globs.update(drawing_names())
    report = []
    runner = doctest.DocTestRunner(checker=ShownOutputChecker(), optionflags=FLAGS)
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


def test_every_package_has_examples():
    counts = {p: sum(1 for param in docstring_tests() if param.values[0].startswith(p))
              for p in PACKAGES}
    assert all(count >= 3 for count in counts.values()), counts
