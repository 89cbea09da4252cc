"""Shared helpers for the benchmarks: timing, environment facts, optional PyTorch."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np

try:
    import torch
except ImportError:  # the `bench` extra is optional
    torch = None


SETTLE_S = 0.25  # seconds; longer than idle BLAS and OpenMP workers keep spinning


def side_by_side(contenders: dict, rounds: int = 3, repeat: int = 1, number: int = 1,
                 warmup: int = 1, per_round: dict | None = None) -> dict:
    """Median seconds per call of each function in `contenders` ({name: fn}).

    The contenders take turns for `rounds` rounds (a, b, c, a, b, c, ...), so a slow
    spell of a busy machine falls on all of them alike. A library's idle worker threads
    keep spinning for a while after its last call (PyTorch's OpenMP pool, OpenBLAS's),
    taking a core from whoever runs next (measured: a third slower for the step after
    PyTorch's): so each turn starts with a pause of SETTLE_S that outlasts them, then
    `warmup` untimed calls. Then `repeat`
    timings of `number` calls each are taken.

    `per_round`, a dict, receives each contender's median of every round: the ratio of
    two contenders within a round compares them a few seconds apart, which holds on a VM
    whose speed drifts by more than the difference being measured (`paired_ratio`).
    """
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(SETTLE_S)
            for _ in range(warmup):
                fn()
            this_round = []
            for _ in range(repeat):
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                this_round.append((time.perf_counter() - start) / number)
            times[name] += this_round
            if per_round is not None:
                per_round.setdefault(name, []).append(statistics.median(this_round))
    return {name: statistics.median(t) for name, t in times.items()}


def paired_ratio(per_round: dict, name: str, other: str) -> float:
    """The median over rounds (or turns) of name's time / other's time in the same one."""
    return statistics.median(a / b for a, b in zip(per_round[name], per_round[other]))


def alternating_calls(contenders: dict, pairs: int, warmup: int = 2) -> dict:
    """Seconds of each single call of each function in `contenders`, the calls taken in
    turns a, b, c, then c, b, a, and so on (`pairs` calls each), so consecutive calls of
    two contenders are a step apart and each follows the other as often as it precedes
    it. On a VM whose speed drifts by 10-15% within minutes, the ratio of neighbouring
    calls holds to about 1% where medians of rounds seconds apart do not
    (`ratio_with_interval`). Only for contenders that share their thread pools
    (NumPy-based ones): PyTorch's idle workers would slow whoever follows it, so it takes
    `side_by_side` turns with a pause instead."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    names = list(contenders)
    for turn in range(pairs):
        for name in (names if turn % 2 == 0 else reversed(names)):
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_with_interval(times: dict, name: str, other: str) -> dict:
    """The median of name's / other's time over `alternating_calls`'s turns, with a 90%
    bootstrap interval of that median (500 resamples, seeded: the same times give the
    same interval)."""
    ratios = [a / b for a, b in zip(times[name], times[other])]
    rng = np.random.default_rng(0)
    medians = np.sort(np.median(rng.choice(ratios, (500, len(ratios))), axis=1))
    return {"ratio": paired_ratio(times, name, other),
            "interval_90": [float(medians[25]), float(medians[474])]}


def environment() -> dict:
    import microtensor
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "microtensor": microtensor.__version__,
        "torch": torch.__version__ if torch else None,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "processor": _cpu_name(),
        "blas": _blas(),
        # What else ran: figures from a busy machine are not comparable with a quiet one's.
        "load_average_1m": os.getloadavg()[0],
    }
    if torch:
        info["torch_threads"] = torch.get_num_threads()
    return info


def _blas() -> str:
    """NumPy's BLAS, and the kernel set it picked for this CPU where threadpoolctl (not a
    dependency) can say: the same OpenBLAS runs Haswell kernels on one CPU, SkylakeX on
    another, and that alone moves every matrix product."""
    try:
        import threadpoolctl
        for pool in threadpoolctl.threadpool_info():
            if pool["user_api"] == "blas":
                return (f"{pool['internal_api']} {pool['version']} ({pool.get('architecture')} "
                        f"kernels, {pool['num_threads']} threads)")
    except ImportError:
        pass
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return f"{blas['name']} {blas.get('version', '')}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def emit(name: str, results: dict) -> dict:
    """Print one benchmark's results as a JSON line and return them."""
    record = {"benchmark": name, **results}
    print(json.dumps(record), flush=True)
    return record
