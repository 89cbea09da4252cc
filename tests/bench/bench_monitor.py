"""What `viz.TrainingMonitor` costs a training step of the reference DecoderLM (CONFIG in
reference.py: 4 layers, d_model 128, batch 16 x 64 tokens), measured side by side in one
run: the same step unmonitored, monitored (every step recorded, as `--monitor` does), and
monitored at a step that also keeps histograms (those happen at a few chosen steps only).

The three take single calls in turns on one model and optimizer (`alternating_calls`), so
a busy machine slows all of them alike; a ratio is the median of neighbouring calls'
ratios with a 90% bootstrap interval. The goal (issue 32): at most 10% more per step.
Prints one JSON line, with the machine it ran on.

    python tests/bench/bench_monitor.py
"""
from __future__ import annotations

import statistics

from common import alternating_calls, emit, environment, ratio_with_interval
from reference import CONFIG, batch

import microtensor as mt
import microtensor.functional as F
from microtensor.optim import AdamW
from transformer import DecoderLM, LMConfig
from viz.monitor import TrainingMonitor

PAIRS = 30   # single steps per contender


def reference_run(config=CONFIG):
    """(model, optimizer, step function) for the reference configuration."""
    mt.manual_seed(0)
    model = DecoderLM(LMConfig.gpt2(config["vocab"], d_model=config["d_model"],
                                    n_heads=config["n_heads"], n_layers=config["n_layers"],
                                    d_ff=config["d_ff"], max_len=config["seq"]))
    optimizer = AdamW(model.parameters(), lr=1e-3)
    ids, targets = batch(config)

    def step():
        loss = F.cross_entropy(model(ids), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    return model, optimizer, step


def main(pairs: int = PAIRS) -> dict:
    model, optimizer, step = reference_run()
    plain = TrainingMonitor(model, optimizer, histogram_steps=())
    with_histograms = TrainingMonitor(model, optimizer, histogram_steps=range(1, 10**9))

    def monitored(monitor):
        def run():
            monitor.begin_step()
            monitor.end_step(step())
        return run

    times = alternating_calls({"unmonitored": step, "monitored": monitored(plain),
                               "monitored_histograms": monitored(with_histograms)}, pairs)
    monitored_ratio = ratio_with_interval(times, "monitored", "unmonitored")
    histogram_ratio = ratio_with_interval(times, "monitored_histograms", "unmonitored")
    seconds = {name: statistics.median(t) for name, t in times.items()}
    return emit("monitor_overhead", {
        "config": CONFIG,
        "seconds_per_step": seconds,
        "monitored_over_unmonitored": monitored_ratio,
        "overhead_percent": round(100 * (monitored_ratio["ratio"] - 1), 2),
        "with_histograms_over_unmonitored": histogram_ratio,
        "histogram_step_overhead_percent": round(100 * (histogram_ratio["ratio"] - 1), 2),
        "goal_percent": 10,
        "environment": environment(),
    })


if __name__ == "__main__":
    main()
