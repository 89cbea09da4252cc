"""Peak memory over 500 training steps of the reference DecoderLM: after warm-up the
resident set must stay flat (no graph, gradient or optimizer state leaking per step).

    python tests/bench/bench_memory.py [steps]
"""
import resource
import sys

from bench_train import microtensor_step
from common import emit


def rss_mb() -> float:
    """Current resident set size in MB (from /proc; peak RSS only ever grows)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run(steps: int = 500) -> dict:
    step = microtensor_step()
    samples = {}
    for i in range(1, steps + 1):
        step()
        if i in (10, steps // 2, steps):
            samples[i] = rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return emit("memory", {"steps": steps, "rss_mb_at_step": samples, "peak_rss_mb": peak,
                           "growth_after_warmup_mb": samples[steps] - samples[10]})


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
