"""The opt-in per-op profile: its bookkeeping (counts, bytes, times that add up to what
the ops took)."""
import time

import numpy as np

import microtensor as mt


def test_profile_counts_forward_and_backward_calls_per_op():
    x = mt.randn(3, 4, requires_grad=True)
    w = mt.randn(4, 5, requires_grad=True)
    with mt.profile() as prof:
        h = (x @ w).relu()
        loss = (h * h).sum() + (h * 2.0).sum()
        loss.backward()
    rows = prof.rows
    assert rows["matmul"]["forward_calls"] == 1 and rows["matmul"]["backward_calls"] == 1
    assert rows["mul"]["forward_calls"] == 2 and rows["mul"]["backward_calls"] == 2
    assert rows["sum"]["forward_calls"] == 2 and rows["add"]["forward_calls"] == 1
    # forward bytes are the outputs' bytes; backward bytes the input gradients' bytes
    assert rows["matmul"]["forward_bytes"] == 3 * 5 * 4
    assert rows["matmul"]["backward_bytes"] == (3 * 4 + 4 * 5) * 4
    assert [name for name, _ in prof.sorted_rows()].count("matmul") == 1


FORWARD_SLEEP, BACKWARD_SLEEP = 0.05, 0.03


@mt.primitive("slow_identity", rule="dx = g")
def slow_identity(x):
    """x, after a sleep of known length in its forward and in its backward."""
    time.sleep(FORWARD_SLEEP)
    def backward(g):
        time.sleep(BACKWARD_SLEEP)
        return (g,)
    return x.copy(), backward


def test_profile_times_are_the_ops_times_and_add_up():
    x = mt.randn(3, 4, requires_grad=True)
    started = time.perf_counter()
    with mt.profile() as prof:
        loss = (slow_identity(x) * 2.0).sum()
        loss.backward()
    elapsed = time.perf_counter() - started
    slow = prof.rows["slow_identity"]
    # sleep() waits at least as long as asked; the profile times each op around its call
    assert slow["forward_s"] >= FORWARD_SLEEP and slow["backward_s"] >= BACKWARD_SLEEP
    total = sum(row["forward_s"] + row["backward_s"] for row in prof.rows.values())
    assert prof.total_seconds() == total
    # Each op is timed once, inside the block, so the sum cannot exceed the block's time.
    assert FORWARD_SLEEP + BACKWARD_SLEEP <= total <= elapsed
    assert prof.sorted_rows()[0][0] == "slow_identity"


def test_profile_is_off_outside_the_block_and_nests():
    x = mt.randn(2, requires_grad=True)
    with mt.profile() as outer:
        x.exp()
        with mt.profile() as inner:
            x.exp().sum()
        x.exp()
    x.exp()  # outside: not recorded anywhere
    assert outer.rows["exp"]["forward_calls"] == 2 and "sum" not in outer.rows
    assert inner.rows["exp"]["forward_calls"] == 1 and inner.rows["sum"]["forward_calls"] == 1
    assert mt.autograd._mode.profile is None


def test_profile_table_lists_every_op_and_divides_by_steps():
    x = mt.randn(4, 4, requires_grad=True)
    with mt.profile() as prof:
        for _ in range(2):
            (x * x).sum().backward()
    assert prof.rows["mul"]["forward_calls"] == 2
    text = prof.table(per=2)
    assert "mul" in text and "sum" in text and "1/1" in text and "total" in text
    np.testing.assert_allclose(x.grad, 2 * (2 * x.data), rtol=1e-6)  # results unchanged
