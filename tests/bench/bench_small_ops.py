"""Per-op overhead on tiny tensors, where Python bookkeeping dominates the arithmetic.

    python tests/bench/bench_small_ops.py
"""

from common import emit, side_by_side, torch

import microtensor as mt


def run(repeat: int = 7) -> dict:
    a = mt.randn(4, 4, requires_grad=True)
    b = mt.randn(4, 4, requires_grad=True)
    adds = {"microtensor": lambda: a + b, "numpy": lambda: a.data + b.data}
    backwards = {"microtensor": lambda: (a * b).sum().backward()}
    if torch is not None:
        ta = torch.randn(4, 4, requires_grad=True)
        tb = torch.randn(4, 4, requires_grad=True)
        adds["torch"] = lambda: ta + tb
        backwards["torch"] = lambda: (ta * tb).sum().backward()
    add_us = {name: 1e6 * seconds for name, seconds
              in side_by_side(adds, rounds=repeat, number=20000).items()}
    backward_us = {name: 1e6 * seconds for name, seconds
                   in side_by_side(backwards, rounds=repeat, number=5000).items()}
    results = {"add_4x4_us": {k: v for k, v in add_us.items() if k != "numpy"},
               "mul_sum_backward_us": backward_us,
               "add_4x4_numpy_us": add_us["numpy"]}
    if torch is not None:
        for key in ("add_4x4_us", "mul_sum_backward_us"):
            pair = results[key]
            pair["ratio_vs_torch"] = pair["microtensor"] / pair["torch"]
    return emit("small_ops", results)


if __name__ == "__main__":
    run()
