"""The training monitor (viz.monitor), its plots and report, and `train --monitor`.

The numbers are held to a forward and backward pass written out by hand in NumPy on a
small float64 model for two SGD steps, with units made dead and outputs made saturated
on purpose (and one unit that is dead in step 1 only), so a wrong rule cannot match by
chance. The first NaN or inf is found on models made to overflow at a known module, op
and step. The monitor must not change what the model computes, and must leave nothing
behind when it is off.
"""
from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor import nn, optim
from transformer import DecoderLM, LMConfig
from transformer.__main__ import main
from transformer.attention import MultiHeadAttention
from transformer.progress import ProgressBar
from viz.monitor import TrainingMonitor, attention_entropy, default_watched, update_ratio
from viz.plots import histogram_markup, line_plot_markup

TOLERANCE = {"rtol": 1e-10, "atol": 1e-13}


class Tanh(nn.Module):
    """tanh as a module (microtensor.nn has none: a learner writes this one)."""

    def forward(self, x):
        return x.tanh()


class AttentionThenMLP(nn.Module):
    """Causal self-attention (frozen: not given to the optimizer), then an MLP."""

    def __init__(self):
        super().__init__()
        self.attn = MultiHeadAttention(4, n_heads=2)
        self.layers = nn.Sequential(nn.Linear(4, 6), Tanh(), nn.Linear(6, 5), nn.ReLU(),
                                    nn.Linear(5, 3))

    def forward(self, x):
        return self.layers(self.attn(x, causal=True))


def small_model():
    mt.manual_seed(3)
    model = AttentionThenMLP()
    for param in model.parameters():
        param.data = param.data.astype(np.float64)
    first, second, last = model.layers[0], model.layers[2], model.layers[4]
    first.weight.data *= 3                  # some tanh outputs beyond 0.97
    second.bias.data[[1, 3]] = -50.0        # ReLU units 1 and 3: output 0 for every input
    last.weight.data[4] = 0.0               # unit 4: no gradient reaches it (step 1 only)
    return model


# ---------------------------------------------------------------------- by hand
def softmax(scores):
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def attention_by_hand(model, x):
    """(output, weights) of the frozen causal attention, in NumPy."""
    attn = model.attn
    B, T, d = x.shape

    def heads(linear):
        y = x @ linear.weight.data + linear.bias.data
        return y.reshape(B, T, 2, d // 2).transpose(0, 2, 1, 3)     # (B, h, T, d_k)

    q, k, v = heads(attn.W_q), heads(attn.W_k), heads(attn.W_v)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // 2)
    scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    weights = softmax(scores)
    merged = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
    return merged @ attn.W_o.weight.data + attn.W_o.bias.data, weights


def mlp_step_by_hand(params, a, target):
    """Forward and backward of the MLP on attention output `a`, MSE loss. Returns the
    outputs and the gradients arriving at them (by module index), the gradient at the
    ReLU's input, the parameter gradients and the loss."""
    W0, b0, W1, b1, W2, b2 = params
    h0 = a @ W0 + b0
    h1 = np.tanh(h0)
    h2 = h1 @ W1 + b1
    h3 = np.maximum(h2, 0)
    out = h3 @ W2 + b2
    loss = np.mean((out - target) ** 2)
    g_out = 2 * (out - target) / out.size
    g_h3 = g_out @ W2.T
    g_h2 = g_h3 * (h2 > 0)
    g_h1 = g_h2 @ W1.T
    g_h0 = g_h1 * (1 - h1 ** 2)

    def flat(t):
        return t.reshape(-1, t.shape[-1])

    grads = [flat(a).T @ flat(g_h0), g_h0.sum((0, 1)), flat(h1).T @ flat(g_h2),
             g_h2.sum((0, 1)), flat(h3).T @ flat(g_out), g_out.sum((0, 1))]
    outputs = [h0, h1, h2, h3, out]
    output_grads = [g_h0, g_h1, g_h2, g_h3, g_out]
    return outputs, output_grads, g_h2, grads, loss


def dead(array):
    """Per unit (last axis): exactly 0 for every example."""
    return ~np.any(array.reshape(-1, array.shape[-1]) != 0, axis=0)


def test_the_monitor_records_what_a_hand_computation_gives_for_two_steps():
    model = small_model()
    names = ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
             "layers.4.weight", "layers.4.bias"]
    trained = [param for name, param in model.named_parameters() if name in names]
    lr = 0.5
    opt = optim.SGD(trained, lr=lr)
    monitor = TrainingMonitor(model, opt, histogram_steps=[2])
    assert [name for name, _ in monitor.watched] == [f"layers.{i}" for i in range(5)]

    rng = np.random.default_rng(0)
    params = [param.data.copy() for param in trained]
    for step in (1, 2):
        x = rng.standard_normal((2, 3, 4))
        target = rng.standard_normal((2, 3, 3))
        a, weights = attention_by_hand(model, x)
        outputs, output_grads, _, grads, loss = mlp_step_by_hand(params, a, target)
        monitor.begin_step(step)
        loss_tensor = ((model(mt.tensor(x)) - mt.tensor(target)) ** 2).mean()
        opt.zero_grad()
        loss_tensor.backward()
        opt.step()
        record = monitor.end_step(loss_tensor)

        assert record.step == step
        np.testing.assert_allclose(record.loss, loss, **TOLERANCE)
        for i, (y, g) in enumerate(zip(outputs, output_grads)):
            stats = record.modules[f"layers.{i}"]
            np.testing.assert_allclose([stats.mean, stats.std, stats.grad_rms],
                                       [y.mean(), y.std(), np.sqrt(np.mean(g ** 2))],
                                       **TOLERANCE)
        assert [record.modules[f"layers.{i}"].kind for i in range(5)] == [
            "linear", "tanh", "linear", "relu", "linear"]
        tanh_saturated = np.mean(np.abs(outputs[1]) > 0.97)
        assert 0 < tanh_saturated < 1
        assert record.modules["layers.1"].saturated == pytest.approx(tanh_saturated)
        relu = record.modules["layers.3"]
        dead_outputs, dead_grads = dead(outputs[3]), dead(output_grads[3])
        assert relu.dead_output == pytest.approx(dead_outputs.mean()) == 2 / 5
        assert relu.dead_gradient == pytest.approx(dead_grads.mean())
        assert relu.saturated == pytest.approx((dead_outputs | dead_grads).mean())
        # unit 4 gets no gradient in step 1 (its outgoing weights are 0); step 1's update
        # gives it some, so in step 2 only the two units whose output is 0 are dead
        assert relu.dead_gradient == (1 / 5 if step == 1 else 0)
        assert relu.saturated == (3 / 5 if step == 1 else 2 / 5)
        assert all(record.modules[f"layers.{i}"].saturated is None for i in (0, 2, 4))

        expected_entropy = -(weights * np.log(np.where(weights > 0, weights, 1))).sum(-1)
        np.testing.assert_allclose(record.attention_entropy["attn"],
                                   expected_entropy.mean(axis=(0, 2)), **TOLERANCE)
        new_params = [p - lr * g for p, g in zip(params, grads)]
        for name, before, after, grad in zip(names, params, new_params, grads):
            np.testing.assert_allclose(record.grad_norm[name], np.linalg.norm(grad),
                                       **TOLERANCE)
            expected = (math.nan if not before.any() else
                        math.log10(np.linalg.norm(after - before) / np.linalg.norm(before)))
            np.testing.assert_allclose(record.update_ratio[name], expected, equal_nan=True,
                                       **TOLERANCE)
        assert math.isnan(record.update_ratio["layers.0.bias"]) == (step == 1)  # zeros at 1
        assert set(record.grad_norm) == set(names)     # the frozen attention is not followed
        if step == 2:
            for i, y in enumerate(outputs):
                counts, edges = np.histogram(y, bins=40)
                histogram = record.activation_histograms[f"layers.{i}"]
                np.testing.assert_array_equal(histogram.counts, counts)
                np.testing.assert_allclose(histogram.edges, edges, **TOLERANCE)
                grad_counts, _ = np.histogram(output_grads[i], bins=40)
                np.testing.assert_array_equal(record.gradient_histograms[f"layers.{i}"].counts,
                                              grad_counts)
        else:
            assert not record.activation_histograms and not record.gradient_histograms
        params = new_params
    assert monitor.non_finite is None
    assert [r.step for r in monitor.history] == [1, 2]
    layer_norms = monitor.layer_grad_norms(monitor.history[-1])
    assert layer_norms["layers.0"] == pytest.approx(math.hypot(
        monitor.history[-1].grad_norm["layers.0.weight"],
        monitor.history[-1].grad_norm["layers.0.bias"]))
    monitor.close()


# ---------------------------------------------------------------------- non-finite values
class Amplify(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = 1.0

    def forward(self, x):
        return (x * self.gain).exp()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.amplify = Amplify()
        self.out = nn.Linear(4, 4)

    def forward(self, x):
        return self.out(self.amplify(self.norm(x)))


def run_steps(model, monitor, steps, before_step=lambda step: None, loss_fn=None):
    opt = monitor.optimizer
    rng = np.random.default_rng(1)
    for step in range(1, steps + 1):
        before_step(step)
        monitor.begin_step(step)
        out = model(mt.tensor(rng.standard_normal((8, 3)).astype(np.float32)))
        loss = (out ** 2).mean() if loss_fn is None else loss_fn(out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.end_step(loss)


@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
def test_the_first_non_finite_value_is_traced_to_the_op_and_module_that_made_it():
    model = nn.Sequential(nn.Linear(3, 4), Tanh(), Block(), Tanh(), nn.Linear(4, 2))
    monitor = TrainingMonitor(model, optim.SGD(model.parameters(), lr=0.01))

    def overflow_at_step_3(step):
        if step == 3:
            model[2].amplify.gain = 1000.0   # exp(1000 x) overflows for x > 0.09
        if step == 2:
            assert monitor.non_finite is None

    run_steps(model, monitor, 5, overflow_at_step_3)
    found = monitor.non_finite
    # Not the watched module (2), not the mul before it, not the Linear after it: the exp
    # inside 2.amplify, which no hook watches, found by following the graph back.
    assert (found.step, found.phase, found.module, found.op, found.value) == (
        3, "forward", "2.amplify", "exp", "inf")
    assert str(found) == "step 3: exp in 2.amplify made inf in the forward pass"
    assert math.isnan(monitor.history[2].modules["2"].std)     # what it saw there
    assert len(monitor.history) == 5   # the run went on, and the first stays the first


class RootOfZero(nn.Module):
    """x + sqrt(0 x): x in the forward pass, but sqrt's derivative at 0 is infinite."""

    def forward(self, x):
        return x + (x * 0.0).sqrt()


@pytest.mark.filterwarnings("ignore:divide by zero|invalid value:RuntimeWarning")
def test_a_non_finite_gradient_names_the_module_whose_backward_made_it():
    model = nn.Sequential(nn.Linear(3, 4), Tanh(), RootOfZero(), nn.Linear(4, 2))
    monitor = TrainingMonitor(model, optim.SGD(model.parameters(), lr=0.01))
    run_steps(model, monitor, 1)
    found = monitor.non_finite
    assert (found.step, found.phase, found.module, found.op) == (1, "backward", "2", None)
    assert "backward pass of 2" in str(found)
    assert all(math.isfinite(stats.mean) for stats in monitor.history[0].modules.values())


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_a_loss_made_outside_every_module_is_traced_too():
    model = nn.Sequential(nn.Linear(3, 4), Tanh())
    monitor = TrainingMonitor(model, optim.SGD(model.parameters(), lr=0.01))
    run_steps(model, monitor, 1, loss_fn=lambda out: (out - 2.0).log().mean())
    found = monitor.non_finite
    assert (found.phase, found.module, found.op, found.value) == ("forward", "", "log", "nan")
    assert "outside every module" in str(found)


# ---------------------------------------------------------------------- off means off
def decoder_lm():
    mt.manual_seed(0)
    return DecoderLM(LMConfig.gpt2(24, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=8))


def train_lm(model, steps, monitor=None):
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    if monitor is not None:
        monitor = monitor(model, opt)
    ids = np.random.default_rng(0).integers(0, 24, (4, 9))
    for step in range(1, steps + 1):
        if monitor is not None:
            monitor.begin_step(step)
        loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.end_step(loss)
    return monitor


def module_hooks(model) -> int:
    return sum(len(module.__dict__.get("_forward_hooks") or ()) for module in model.modules())


def hooks_left(model) -> int:
    return module_hooks(model) + sum(len(param._hooks) for param in model.parameters())


def test_watching_changes_nothing_the_model_computes_and_leaves_nothing_behind():
    plain, watched = decoder_lm(), decoder_lm()
    train_lm(plain, 4)
    monitor = train_lm(watched, 4, lambda model, opt: TrainingMonitor(model, opt))
    for (name, a), b in zip(plain.named_parameters(), watched.parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    assert module_hooks(watched) == 0    # between steps, no module is watched
    monitor.close()
    assert hooks_left(watched) == 0      # and once closed, nothing at all is attached
    # the blocks and GELUs, never the attention's Linears or the LayerNorms that the
    # fast forms fuse (a hook there would change how the model runs)
    assert default_watched(watched) == ["blocks.0", "blocks.0.ffn.activation", "blocks.1",
                                        "blocks.1.ffn.activation"]
    record = monitor.history[-1]
    assert set(record.attention_entropy) == {"blocks.0.self_attn", "blocks.1.self_attn"}
    assert all(0 <= h <= math.log(8) for e in record.attention_entropy.values() for h in e)
    assert len(record.grad_norm) == len(list(watched.parameters()))


def test_steps_not_recorded_attach_nothing():
    model = decoder_lm()
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    monitor = TrainingMonitor(model, opt, every=3)
    seen = []
    for step in range(1, 8):
        monitor.begin_step(step)
        seen.append(module_hooks(model))
        monitor.end_step(1.0)
    assert [r.step for r in monitor.history] == [1, 4, 7]
    assert [n > 0 for n in seen] == [True, False, False, True, False, False, True]
    # the parameters' hooks stay on (registering them is the costly part) and do nothing
    assert hooks_left(model) == len(list(model.parameters()))
    monitor.begin_step(8)
    with monitor:
        pass
    assert hooks_left(model) == 0


def test_bad_arguments_are_refused_by_name():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no module named \\['nope'\\]"):
        TrainingMonitor(model, modules=["nope"])
    with pytest.raises(ValueError, match="every must be a whole number >= 1"):
        TrainingMonitor(model, every=0)
    with pytest.raises(TypeError, match="expected a Module"):
        TrainingMonitor("model")


def test_measures_on_cases_with_known_answers():
    uniform = np.full((2, 3, 4, 5), 0.2)
    np.testing.assert_allclose(attention_entropy(uniform), [math.log(5)] * 3)
    one_hot = np.zeros((1, 2, 3, 3))
    one_hot[..., 0] = 1
    one_hot[0, 1, 2] = 0        # a fully masked query row: left out, not counted as 0
    np.testing.assert_array_equal(attention_entropy(one_hot), [0.0, 0.0])
    assert update_ratio(np.ones(4), np.full(4, 1.001)) == pytest.approx(-3)
    assert math.isnan(update_ratio(np.zeros(3), np.ones(3)))
    assert update_ratio(np.ones(3), np.ones(3)) == -math.inf


# ---------------------------------------------------------------------- plots and report
def test_line_plots_break_at_missing_points_and_draw_decades_on_a_log_axis():
    steps = np.arange(1, 7)
    svg = line_plot_markup({"a": (steps, [1e-3, 1e-2, np.nan, 1e-1, 0.0, 1.0])},
                           log_y=True, guide=1e-3, guide_label="1e-3")
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 2   # [1, 2] [4] [6]
    assert all(f">{label}</text>" in svg for label in ("1e-3", "1e-2", "1e-1", "1"))
    assert svg.count('stroke-dasharray="5 4"') == 1                     # the guide
    counts = np.array([1, 3, 0])
    edges = np.array([0.0, 0.5, 1.0, 1.5])
    svg = histogram_markup({"<layer> & co": (counts, edges)})
    assert "&lt;layer&gt; &amp; co" in svg
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(points) == 3


@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
def test_the_report_is_one_page_with_nothing_to_fetch(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), Tanh(), Block(), Tanh(), nn.Linear(4, 2))
    monitor = TrainingMonitor(model, optim.SGD(model.parameters(), lr=0.01),
                              histogram_steps=[1, 4])

    def overflow(step):
        if step == 4:
            model[2].amplify.gain = 1000.0
    run_steps(model, monitor, 5, overflow)
    report = monitor.report("a run")
    path = report.save(tmp_path / "deep" / "report.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert set(re.findall(r"(?:https?:)?//[^\s\"'<)]+", page)) == {
        "http://www.w3.org/2000/svg"}
    assert "step 4: exp in 2.amplify made inf in the forward pass" in page
    for heading in ("Gradient norm per layer", "Update-to-data ratio", "Activation histograms",
                    "Gradient histograms", "Saturation map", "Attention entropy"):
        assert f"<h2>{heading}</h2>" in page
    fragment = monitor._repr_html_()
    assert fragment.startswith('<div class="mt-report">')
    assert fragment.count("<svg") == page.count("<svg") > 6     # the page's charts, inline
    assert TrainingMonitor(model).report().fragment().count("<svg") == 0   # nothing yet


# ---------------------------------------------------------------------- command line
class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_progress_bar_shows_loss_and_time_left_and_log_lines_print_above_it(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("transformer.progress.time.perf_counter", clock)
    stream = io.StringIO()
    bar = ProgressBar(total=100, stream=stream, width=10)
    bar.update(41, loss=2.0)            # a resumed run: 40 steps were done before
    clock.now += 10
    bar.update(42, loss=1.0)
    assert stream.getvalue().endswith(
        "\r 42% |####......|    42/100 loss 1 | 0:00:10 elapsed, ~0:09:40 left\033[K")
    clock.now += 0.05
    bar.update(43, loss=3.0)            # too soon to redraw: its loss waits
    clock.now += 1
    bar.update(44, loss=5.0)
    assert "loss 4 |" in stream.getvalue().split("\r")[-1]      # mean of 3 and 5
    bar.log("step 44 | loss 4")
    assert stream.getvalue().endswith("\r\033[Kstep 44 | loss 4\n")
    bar.close()
    assert stream.getvalue().endswith("\n")      # nothing to erase: no bar since the log


TINY = ["train", "--task", "reverse", "--seq-len", "6", "--n-symbols", "8", "--d-model", "16",
        "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--batch-size", "16",
        "--warmup", "2", "--log-every", "5"]


def test_train_monitor_writes_the_report_and_says_where(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main([*TINY, "--steps", "6", "--monitor", "--monitor-every", "2",
                 "--out", str(folder)]) == 0
    out = capsys.readouterr().out
    report = folder / "monitor.html"
    assert out.endswith(f"monitor report: {report}\n") and report.is_file()
    page = report.read_text(encoding="utf-8")
    assert "3 steps recorded (1 to 5)" in page and "No NaN or inf appeared" in page
    # histograms at the first, middle and last step, moved onto recorded ones (6 -> 5)
    assert re.findall(r">layer outputs at step (\d+)<", page) == ["1", "3", "5"]
    assert "\r" not in out            # not a terminal: no progress bar


@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
def test_a_diverging_monitored_run_reports_where_the_nan_began(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main([*TINY, "--steps", "30", "--lr", "1e9", "--monitor", "--out",
                 str(folder)]) == 2
    captured = capsys.readouterr()
    found = re.search(r"first non-finite value: step (\d+): (\S+) in (\S+) made (nan|inf) in "
                      r"the forward pass\n", captured.out)
    assert found, captured.out
    failed_at = int(re.search(r"the loss is \S+ at step (\d+)", captured.err).group(1))
    assert int(found.group(1)) <= failed_at
    assert f"monitor report: {folder / 'monitor.html'}" in captured.out
    assert "First non-finite value" in (folder / "monitor.html").read_text(encoding="utf-8")
