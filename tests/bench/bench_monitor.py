"""What `viz.TrainingMonitor` costs a training step of the reference DecoderLM (CONFIG in
reference.py: 4 layers, d_model 128, batch 16 x 64 tokens), measured side by side in one
run: the same step unmonitored, monitored (every step recorded, as `--monitor` does), and
monitored at a step that also keeps histograms (those happen at a few chosen steps only).

The three take single calls in turns on one model and optimizer (`alternating_calls`), so
a busy machine slows all of them alike; a ratio is the median of neighbouring calls'
ratios with a 90% bootstrap interval. On a shared machine two steps a second apart can
differ by more than the monitor costs, so the monitored contender also adds up the time
spent in the monitor's own code (begin_step, end_step and every hook it runs), and that
time over its step is a second figure, which a slow spell inflates on both sides alike.
The goal (issue 32): at most 10% more per step. Prints one JSON line, with the machine it
ran on.

    python tests/bench/bench_monitor.py
"""
from __future__ import annotations

import statistics
import time

from common import alternating_calls, emit, environment, ratio_with_interval
from reference import CONFIG, batch, reference_model

import microtensor.functional as F
from microtensor.optim import AdamW
from viz.monitor import TrainingMonitor

PAIRS = 30   # single steps per contender


def reference_run(config=CONFIG):
    """(model, optimizer, step function) for the reference configuration."""
    model = reference_model(config)
    optimizer = AdamW(model.parameters(), lr=1e-3)
    ids, targets = batch(config)

    def step():
        loss = F.cross_entropy(model(ids), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    return model, optimizer, step


class TimedMonitor(TrainingMonitor):
    """A TrainingMonitor that adds up, in `spent`, the seconds its own code takes:
    begin_step, end_step and each forward and gradient hook it attaches."""

    spent = 0.0

    def _timed(self, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - started
        return timed

    def begin_step(self, step=None):
        return self._timed(super().begin_step)(step)

    def end_step(self, loss=None):
        return self._timed(super().end_step)(loss)

    def _forward_hook(self, name):
        return self._timed(super()._forward_hook(name))

    def _output_grad_hook(self, *args):
        return self._timed(super()._output_grad_hook(*args))

    def _input_grad_hook(self, *args):
        return self._timed(super()._input_grad_hook(*args))

    def _parameter_hook(self, *args):
        return self._timed(super()._parameter_hook(*args))


def main(pairs: int = PAIRS) -> dict:
    model, optimizer, step = reference_run()
    plain = TimedMonitor(model, optimizer, histogram_steps=())
    with_histograms = TimedMonitor(model, optimizer, histogram_steps=range(1, 10**9))

    own_seconds = []   # the monitor's own time in each call of the `plain` contender

    def monitored(monitor):
        def run():
            spent = monitor.spent
            monitor.begin_step()
            monitor.end_step(step())
            if monitor is plain:
                own_seconds.append(monitor.spent - spent)
        return run

    warmup = 2
    times = alternating_calls({"unmonitored": step, "monitored": monitored(plain),
                               "monitored_histograms": monitored(with_histograms)}, pairs,
                              warmup=warmup)
    monitored_ratio = ratio_with_interval(times, "monitored", "unmonitored")
    histogram_ratio = ratio_with_interval(times, "monitored_histograms", "unmonitored")
    seconds = {name: statistics.median(t) for name, t in times.items()}
    own = statistics.median(spent / total for spent, total in
                            zip(own_seconds[warmup:], times["monitored"]))
    return emit("monitor_overhead", {
        "config": CONFIG,
        "seconds_per_step": seconds,
        "monitored_over_unmonitored": monitored_ratio,
        "overhead_percent": round(100 * (monitored_ratio["ratio"] - 1), 2),
        "monitor_own_time_percent_of_monitored_step": round(100 * own, 2),
        "with_histograms_over_unmonitored": histogram_ratio,
        "histogram_step_overhead_percent": round(100 * (histogram_ratio["ratio"] - 1), 2),
        "goal_percent": 10,
        "environment": environment(),
    })


if __name__ == "__main__":
    main()
