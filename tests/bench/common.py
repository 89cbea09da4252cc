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


def best_of(fn, repeat: int = 5, number: int = 1, warmup: int = 1) -> float:
    """Median seconds per call of `fn` over `repeat` timings of `number` calls each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


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
    }
    if torch:
        info["torch_threads"] = torch.get_num_threads()
    return info


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
