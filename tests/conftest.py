"""Shared test settings: hypothesis profiles and a seeded global generator.

Profiles: "dev" (default) keeps example counts modest so the whole suite stays fast on
two cores; "ci" runs a few more. Choose with HYPOTHESIS_PROFILE=ci. No deadline: timing
on a shared machine is noisy and gradcheck's cost grows with the drawn shape. Under CI
(CI set) the examples are derandomized, so a run is reproducible; local runs explore new
examples each time.

`require` is how a test asks for a tool outside Python (Graphviz's `dot`, Chromium):
skipped with its reason where the tool is missing, failed under CI, where the suite must
test everything.
"""
import os

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
