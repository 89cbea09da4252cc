"""Run a NumPy kernel over cache-sized blocks of rows, on several threads if asked.

NumPy's elementwise ufuncs use one core, but they release the GIL, so two threads working
on disjoint row blocks of the same arrays run truly in parallel. Every element goes
through the same operations whichever thread does the block, and reductions stay within
a row, so the result is bit-identical to the serial path. Small arrays (the ones lessons
and gradcheck use) stay serial: handing work to a thread costs ~20 us.

Threads are off unless MICROTENSOR_THREADS=2 (or N) asks for them. In a training step
the matrix products run on both cores (OpenBLAS), and OpenBLAS's worker threads keep
spinning for a while after each product, waiting for the next one: right after a matmul,
a second Python thread finds no free core (GELU on (1024, 2048) float32: 4.1 ms serial,
4.3 ms on two threads after a matmul, 2.2 ms on two idle cores). Setting OpenBLAS to one
thread and splitting each product over our own threads instead made the products ~30%
slower (a hand-off to a Python thread costs 30-100 us here). The blocks alone pay off:
each one's temporaries stay in cache (gelu forward + backward on (16, 64, 512) float32:
2.6 ms -> 1.6 ms).

    >>> x, y = np.ones((4096, 64)), np.empty((4096, 64))
    >>> for_row_blocks(lambda x, y: np.exp(x, out=y), x, y)
    >>> bool((y == np.e).all())
    True
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import op_error

MIN_PARALLEL_SIZE = 1 << 19   # elements: below this, threads cost more than they save
BLOCK_SIZE = 1 << 15          # elements per serial block: a few such blocks stay in cache
# Threads take bigger blocks: every ufunc call re-takes the GIL, and with two threads
# asking for it, many short calls cost more than the cache misses of long ones.
PARALLEL_BLOCK_SIZE = 1 << 17

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_local = threading.local()    # .in_pool is True in the pool's own threads


def n_threads() -> int:
    """How many threads a large kernel may use: MICROTENSOR_THREADS, else 1."""
    setting = os.environ.get("MICROTENSOR_THREADS")
    if setting is None:
        return 1
    try:
        value = int(setting)
    except ValueError:
        value = 0
    if value < 1:
        raise op_error("MICROTENSOR_THREADS", f"must be a whole number >= 1, got {setting!r}",
                       fix="set it to 1 to run every kernel serially, or unset it")
    return value


def _get_pool(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="microtensor",
                                       initializer=setattr, initargs=(_local, "in_pool", True))
        return _pool


def _forget_pool():
    # A forked child inherits the pool object but not its threads: start afresh.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


def for_row_blocks(kernel: Callable[..., None], *arrays: np.ndarray,
                   min_size: int = MIN_PARALLEL_SIZE) -> None:
    """Call `kernel(*(a[rows] for a in arrays))` for row blocks that cover the first axis.

    The arrays share their first axis; the kernel writes its results into (views of)
    them and must only touch its own rows. Blocks run on several threads when
    `arrays[0].size >= min_size`, else one after another in this thread.
    """
    if arrays[0].size <= BLOCK_SIZE:
        kernel(*arrays)  # one block: the common case for small tensors, kept cheap
        return
    n_rows = len(arrays[0])
    row_size = max(1, arrays[0].size // max(n_rows, 1))
    threads = 1
    if arrays[0].size >= min_size and not getattr(_local, "in_pool", False):
        threads = n_threads()
    rows_per_block = max(1, (BLOCK_SIZE if threads == 1 else PARALLEL_BLOCK_SIZE) // row_size)
    blocks = iter([slice(start, start + rows_per_block)
                   for start in range(0, n_rows, rows_per_block)])

    def work():
        # Each thread takes the next block until none are left, so a thread slowed
        # down by other processes simply does fewer blocks. (next() holds the GIL.)
        for rows in blocks:
            kernel(*(a[rows] for a in arrays))

    if threads == 1 or n_rows <= rows_per_block:
        work()
        return
    pool = _get_pool(threads)
    helpers = [pool.submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        for helper in helpers:
            # A helper still queued (the pool busy with another caller's blocks) has
            # nothing left to do: cancel it rather than wait for it.
            if not helper.cancel():
                helper.result()
