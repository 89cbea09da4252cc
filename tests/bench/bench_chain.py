"""A long chain of ops: forward + backward must scale linearly and never recurse.

    python tests/bench/bench_chain.py
"""
import time

from common import emit

import microtensor as mt


def chain_seconds(n_ops: int) -> float:
    x = mt.tensor([0.5], requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(n_ops):
        y = y * 1.0001
    y.sum().backward()
    return time.perf_counter() - start


def run() -> dict:
    chain_seconds(1000)  # warm up
    small, large = chain_seconds(10_000), chain_seconds(100_000)
    return emit("chain", {"ops_10k_s": small, "ops_100k_s": large,
                          "ratio_100k_over_10k": large / small,
                          "linear_means_ratio_near": 10})


if __name__ == "__main__":
    run()
