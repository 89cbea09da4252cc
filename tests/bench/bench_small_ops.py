"""Per-op overhead on tiny tensors, where Python bookkeeping dominates the arithmetic.

    python tests/bench/bench_small_ops.py
"""

from common import best_of, emit, torch

import microtensor as mt


def run() -> dict:
    results = {}
    a = mt.randn(4, 4, requires_grad=True)
    b = mt.randn(4, 4, requires_grad=True)

    def mt_mul_sum_backward():
        (a * b).sum().backward()

    results["add_4x4_us"] = {"microtensor": 1e6 * best_of(lambda: a + b, number=20000)}
    results["mul_sum_backward_us"] = {
        "microtensor": 1e6 * best_of(mt_mul_sum_backward, number=5000)}
    results["add_4x4_numpy_us"] = 1e6 * best_of(lambda: a.data + b.data, number=20000)

    if torch is not None:
        ta = torch.randn(4, 4, requires_grad=True)
        tb = torch.randn(4, 4, requires_grad=True)

        def torch_mul_sum_backward():
            (ta * tb).sum().backward()

        results["add_4x4_us"]["torch"] = 1e6 * best_of(lambda: ta + tb, number=20000)
        results["mul_sum_backward_us"]["torch"] = 1e6 * best_of(torch_mul_sum_backward,
                                                               number=5000)
        for key in ("add_4x4_us", "mul_sum_backward_us"):
            pair = results[key]
            pair["ratio_vs_torch"] = pair["microtensor"] / pair["torch"]
    return emit("small_ops", results)


if __name__ == "__main__":
    run()
