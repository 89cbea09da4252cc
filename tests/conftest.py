"""Shared test settings: hypothesis profiles and a seeded global generator.

Profiles: "dev" (default) keeps example counts modest so the whole suite stays fast on
two cores; "ci" runs a few more. Choose with HYPOTHESIS_PROFILE=ci. No deadline: timing
on a shared machine is noisy and gradcheck's cost grows with the drawn shape. Under CI
(CI set) the examples are derandomized, so a run is reproducible; local runs explore new
examples each time.

`require` is how a test asks for a tool outside Python (Graphviz's `dot`, Chromium):
skipped with its reason where the tool is missing, failed under CI, where the suite must
test everything.

Oracle tests compare with PyTorch, `transformers` or `tokenizers`; they skip where those
are missing (each has a sibling that runs without them). The summary at the end says how
many ran (`oracle_tests`).
"""
import ast
import functools
import inspect
import os
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import microtensor as mt

_reproducible = bool(os.environ.get("CI"))
settings.register_profile("dev", max_examples=20, deadline=None, derandomize=_reproducible,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=_reproducible,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def require(available: bool, reason: str) -> None:
    """Skip the calling test with `reason` (listed by `pytest -rs`) unless `available`;
    under CI, fail instead, so that a missing tool never passes unnoticed. For example
    `require(shutil.which("dot") is not None, "Graphviz's `dot` is not installed")`."""
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (required when CI is set)")
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seeded_generator():
    """Every test starts from the same global random state (mt.randn, dropout, ...)."""
    mt.manual_seed(0)
    yield


@pytest.fixture
def f64():
    """Make a float64 leaf that requires grad: f64(array) -> Tensor."""
    return lambda array: mt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


# A test is an oracle test when its own code or its fixtures' use one of the oracle
# packages: name it (`torch.tensor(...)`, `needs_torch`) or ask for it
# (`pytest.importorskip("torch")`), or when its module asks for one at its top level.
# Read from the syntax tree, so comments do not count.
ORACLES = {"torch", "transformers", "tokenizers"}


def _uses_an_oracle(tree, by_name: bool = True) -> bool:
    for node in ast.walk(tree):
        if by_name and isinstance(node, ast.Name) and node.id in ORACLES | {"needs_torch"}:
            return True
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                and any(getattr(arg, "value", None) in ORACLES for arg in node.args)):
            return True
    return False


@functools.cache
def _function_uses_an_oracle(function) -> bool:
    return _uses_an_oracle(ast.parse(textwrap.dedent(inspect.getsource(function))))


@functools.cache
def _module_asks_for_an_oracle(module) -> bool:
    # at the top level only an importorskip counts (it skips the whole module); a module
    # may import torch for its oracle tests beside tests that do not use it
    return any(_uses_an_oracle(node, by_name=False) for node in
               ast.parse(inspect.getsource(module)).body
               if not isinstance(node, (ast.FunctionDef, ast.ClassDef)))


def _is_oracle_test(item) -> bool:
    functions = [item.function]
    for definitions in item._fixtureinfo.name2fixturedefs.values():
        functions += [definition.func for definition in definitions]
    return _module_asks_for_an_oracle(item.module) or any(
        _function_uses_an_oracle(f) for f in functions
        if inspect.isfunction(f) and f.__module__.startswith("test"))


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.Function) and _is_oracle_test(item):
            item.add_marker("oracle")


def pytest_terminal_summary(terminalreporter):
    """How many oracle tests passed, failed and were skipped (so CI's log shows that the
    comparisons with PyTorch, transformers and tokenizers ran)."""
    counts = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            # a test's outcome is its call's, or its setup's where it stopped (a skip)
            ends_here = report.when == "call" or (report.when == "setup"
                                                   and outcome != "passed")
            if ends_here and "oracle" in getattr(report, "keywords", {}):
                counts[outcome] = counts.get(outcome, 0) + 1
    listed = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "none collected"
    terminalreporter.write_line(f"oracle tests (PyTorch, transformers, tokenizers): {listed}")
