"""The training monitor's report in headless Chromium: the page of a real DecoderLM run
loads with no console error and no request beyond its own file, every plot is drawn with
a size, and the same report inline in a notebook-like page keeps its styles to itself.
Screenshots (the whole page, and the inline report of a diverged run) land in the test's
folder."""
from __future__ import annotations

import numpy as np
import pytest
from test_browser import (
    browser,  # noqa: F401  (the shared Chromium fixture)
    open_page,
)

import microtensor as mt
import microtensor.functional as F
from microtensor import nn, optim
from transformer import DecoderLM, LMConfig
from viz.monitor import TrainingMonitor

VIEWPORT = {"width": 1280, "height": 900}


def trained_lm_monitor(steps: int = 40) -> TrainingMonitor:
    mt.manual_seed(0)
    model = DecoderLM(LMConfig.gpt2(32, d_model=32, n_heads=4, n_layers=3, d_ff=64, max_len=16))
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    monitor = TrainingMonitor(model, opt, histogram_steps=[1, steps // 2, steps])
    rng = np.random.default_rng(0)
    for step in range(1, steps + 1):
        ids = rng.integers(0, 32, (8, 17))
        monitor.begin_step(step)
        loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.end_step(loss)
    monitor.close()
    return monitor


class Sigmoid(nn.Module):
    # Positive outputs: the overflow planted at step 7 is then +inf in whatever order the
    # BLAS kernel sums (with mixed signs, whether an inf meets a -inf and makes nan
    # depends on the CPU's kernel).
    def forward(self, x):
        return x.sigmoid()


def diverged_monitor() -> TrainingMonitor:
    mt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), Sigmoid(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = optim.SGD(model.parameters(), lr=0.05)
    monitor = TrainingMonitor(model, opt, histogram_steps=[1, 6])
    rng = np.random.default_rng(0)
    for step in range(1, 9):
        if step == 7:
            model[2].weight.data[:] = 3e38        # overflows in the Linear at step 7
        monitor.begin_step(step)
        loss = (model(mt.tensor(rng.standard_normal((16, 3)).astype(np.float32))) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.end_step(loss)
    return monitor


def svg_sizes(page) -> list:
    return page.eval_on_selector_all(
        ".mt-report svg", "els => els.map(e => [e.getBoundingClientRect().width, "
        "e.getBoundingClientRect().height])")


def test_the_report_page_loads_offline_with_every_plot_drawn(browser, tmp_path):  # noqa: F811
    path = trained_lm_monitor().report("DecoderLM, 40 steps").save(tmp_path / "report.html")
    page, errors, requests = open_page(browser, path.as_uri(), VIEWPORT)
    sizes = svg_sizes(page)
    # loss, gradient norms, update ratios, 3 steps x 2 groups x (outputs, gradients),
    # the saturation map and 3 attention maps
    assert len(sizes) == 1 + 1 + 1 + 12 + 1 + 3
    assert all(width > 200 and height > 100 for width, height in sizes), sizes
    assert page.inner_text(".calm").startswith("40 steps recorded (1 to 40)")
    lines = page.eval_on_selector_all("polyline", "els => els.length")
    assert lines > 50
    page.screenshot(path=str(tmp_path / "monitor-report.png"), full_page=True)
    assert not errors, errors
    assert requests == [path.as_uri()], requests
    page.close()


@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
def test_the_report_inline_in_a_notebook_keeps_its_styles_to_itself(browser, tmp_path):  # noqa: F811
    monitor = diverged_monitor()
    assert str(monitor.non_finite) == "step 7: linear in 2 made inf in the forward pass"
    host = tmp_path / "notebook.html"
    host.write_text("<!DOCTYPE html><meta charset='utf-8'><h2 id='outside'>a notebook cell"
                    "</h2>" + monitor._repr_html_(), encoding="utf-8")
    page, errors, requests = open_page(browser, host.as_uri(), VIEWPORT)
    alarm = page.inner_text(".mt-report .alarm")
    assert "First non-finite value: step 7: linear in 2 made inf in the forward pass" in alarm
    outside = page.eval_on_selector("#outside", "e => getComputedStyle(e).fontSize")
    inside = page.eval_on_selector(".mt-report h2", "e => getComputedStyle(e).fontSize")
    assert outside == "24px" and inside != outside      # the report's h2 rule stays inside
    assert all(width > 100 for width, _ in svg_sizes(page))
    page.screenshot(path=str(tmp_path / "monitor-inline-diverged.png"), full_page=True)
    assert not errors, errors
    assert requests == [host.as_uri()], requests
    page.close()
