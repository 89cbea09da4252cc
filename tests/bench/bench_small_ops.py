"""Per-op overhead on tiny tensors, where Python bookkeeping dominates the arithmetic, and
the cost of calling a module (each call records itself for the drawings: ops remember the
modules that made them).

    python tests/bench/bench_small_ops.py
"""

from common import emit, side_by_side, torch

import microtensor as mt
from microtensor import nn


def run(repeat: int = 7) -> dict:
    a = mt.randn(4, 4, requires_grad=True)
    b = mt.randn(4, 4, requires_grad=True)
    adds = {"microtensor": lambda: a + b, "numpy": lambda: a.data + b.data}
    backwards = {"microtensor": lambda: (a * b).sum().backward()}
    relu, x = nn.ReLU(), mt.randn(4, 4, requires_grad=True)
    module_calls = {"microtensor": lambda: relu(x)}
    if torch is not None:
        torch_relu, tx = torch.nn.ReLU(), torch.randn(4, 4, requires_grad=True)
        module_calls["torch"] = lambda: torch_relu(tx)
        ta = torch.randn(4, 4, requires_grad=True)
        tb = torch.randn(4, 4, requires_grad=True)
        adds["torch"] = lambda: ta + tb
        backwards["torch"] = lambda: (ta * tb).sum().backward()
    add_us = {name: 1e6 * seconds for name, seconds
              in side_by_side(adds, rounds=repeat, number=20000).items()}
    backward_us = {name: 1e6 * seconds for name, seconds
                   in side_by_side(backwards, rounds=repeat, number=5000).items()}
    module_us = {name: 1e6 * seconds for name, seconds
                 in side_by_side(module_calls, rounds=repeat, number=20000).items()}
    results = {"add_4x4_us": {k: v for k, v in add_us.items() if k != "numpy"},
               "mul_sum_backward_us": backward_us,
               "relu_module_call_4x4_us": module_us,
               "add_4x4_numpy_us": add_us["numpy"]}
    if torch is not None:
        for key in ("add_4x4_us", "mul_sum_backward_us", "relu_module_call_4x4_us"):
            pair = results[key]
            pair["ratio_vs_torch"] = pair["microtensor"] / pair["torch"]
    return emit("small_ops", results)


if __name__ == "__main__":
    run()
