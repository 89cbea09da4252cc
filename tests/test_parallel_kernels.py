"""Row-block kernels (GELU): large inputs, split over threads, give exactly (bit for bit)
the forward and backward of the serial path; small inputs never touch the thread pool.
LayerNorm, which works on whole arrays, is checked here against its textbook formula.

MICROTENSOR_THREADS=2 turns the threads on; =1 (the default) keeps the serial path. Row
counts are odd so the last block is short, and the inputs are above the size at which
threads start.
"""
import threading
import time

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor.ops import parallel
from microtensor.ops.parallel import for_row_blocks

ROWS = 1031                                          # odd, and not a multiple of any block
LARGE = parallel.MIN_PARALLEL_SIZE


def run_op(op, arrays, grad_out, threads, monkeypatch):
    """Forward and backward of `op` on tensors made from `arrays`, with `threads` allowed."""
    monkeypatch.setenv("MICROTENSOR_THREADS", str(threads))
    inputs = [mt.tensor(a, requires_grad=True) for a in arrays]
    out = op(*inputs)
    out.backward(mt.tensor(grad_out))
    return [out.numpy()] + [np.asarray(t.grad) for t in inputs]


def assert_threads_match_serial(op, arrays, monkeypatch):
    rng = np.random.default_rng(1)
    out = op(*(mt.tensor(a) for a in arrays)).numpy()
    grad_out = rng.standard_normal(out.shape).astype(out.dtype)
    serial = run_op(op, arrays, grad_out, 1, monkeypatch)
    threaded = run_op(op, arrays, grad_out, 2, monkeypatch)
    for s, t in zip(serial, threaded):
        assert s.dtype == t.dtype and s.shape == t.shape
        np.testing.assert_array_equal(s, t)        # exact, not approximately equal


def normal(shape, dtype, seed=0):
    return (3 * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_threads_match_serial(dtype, monkeypatch):
    x = normal((ROWS, 5, 103), dtype)
    assert x.size >= LARGE
    assert_threads_match_serial(F.gelu, [x], monkeypatch)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_block_kernels_agree_with_the_textbook_formulas(dtype):
    # The blocked, in-place kernels compute the same functions as the one-line math.
    x = normal((ROWS, 67), dtype)
    c = np.sqrt(2 / np.pi)
    gelu = 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3)))
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-15}
    np.testing.assert_allclose(F.gelu(mt.tensor(x)).numpy(), gelu, **tol)
    np.testing.assert_allclose(F.layer_norm(mt.tensor(x)).numpy(), normed, **tol)
    for op in (F.gelu, F.layer_norm):
        assert op(mt.tensor(x)).numpy().dtype == dtype


def test_block_kernels_keep_their_gradients(monkeypatch):
    # Through the blocked path (small blocks, so 9 rows make 5 of them), in float64.
    monkeypatch.setattr(parallel, "BLOCK_SIZE", 16)
    x = mt.randn(9, 8, dtype=np.float64, requires_grad=True)
    weight = mt.randn(8, dtype=np.float64, requires_grad=True)
    assert mt.gradcheck(lambda x, w: (F.layer_norm(x, w) * F.gelu(x)).sum(), (x, weight))


def record_threads(arrays, min_size, monkeypatch, threads):
    """The names of the threads that ran each block of a slow kernel."""
    monkeypatch.setenv("MICROTENSOR_THREADS", str(threads))
    names = []

    def kernel(x, y):
        time.sleep(0.002)              # long enough that a second thread takes blocks
        names.append(threading.current_thread().name)
        y[...] = 2 * x
    for_row_blocks(kernel, *arrays, min_size=min_size)
    return names


def test_large_arrays_use_two_threads_and_cover_every_row(monkeypatch):
    monkeypatch.setattr(parallel, "PARALLEL_BLOCK_SIZE", 64 * 64)
    x = np.arange(ROWS * 64, dtype=np.float64).reshape(ROWS, 64)
    y = np.full_like(x, np.nan)
    names = record_threads((x, y), x.size, monkeypatch, threads=2)
    assert len(set(names)) == 2
    np.testing.assert_array_equal(y, 2 * x)


def test_small_arrays_and_threads_1_stay_in_the_calling_thread(monkeypatch):
    x = np.ones((ROWS, 64))
    me = threading.current_thread().name
    assert set(record_threads((x, np.empty_like(x)), x.size + 1, monkeypatch, 2)) == {me}
    assert set(record_threads((x, np.empty_like(x)), 0, monkeypatch, 1)) == {me}


def test_threads_are_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv("MICROTENSOR_THREADS", raising=False)
    assert parallel.n_threads() == 1
    monkeypatch.setenv("MICROTENSOR_THREADS", "2")
    assert parallel.n_threads() == 2


def test_many_callers_at_once_finish_with_the_right_results(monkeypatch):
    # Four user threads share the one pool: no deadlock, no mixed-up rows.
    monkeypatch.setenv("MICROTENSOR_THREADS", "2")
    x = normal((ROWS, 515), np.float32)
    expected = F.gelu(mt.tensor(x)).numpy()
    results, errors = [], []

    def caller():
        try:
            for _ in range(5):
                results.append(F.gelu(mt.tensor(x)).numpy())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(60)
        assert not thread.is_alive(), "a caller hung (deadlock?)"
    assert not errors and len(results) == 20
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_a_kernel_error_reaches_the_caller(monkeypatch):
    monkeypatch.setenv("MICROTENSOR_THREADS", "2")
    x = np.ones((ROWS, 64))

    def kernel(x):
        raise ValueError("bad block")
    with pytest.raises(ValueError, match="bad block"):
        for_row_blocks(kernel, x, min_size=0)


@pytest.mark.parametrize("setting", ["0", "two", "-1"])
def test_a_bad_threads_setting_says_what_to_set(setting, monkeypatch):
    monkeypatch.setenv("MICROTENSOR_THREADS", setting)
    with pytest.raises(ValueError, match=r"MICROTENSOR_THREADS: must be a whole number >= 1, "
                                         rf"got '{setting}'. Set it to 1"):
        F.gelu(mt.tensor(np.ones((ROWS, 515))))


@pytest.mark.parametrize("shape", [(3, 0), (0, 4), (0,), (2, 0, 5)])
def test_layer_norm_keeps_empty_shapes(shape):
    x = mt.randn(*shape, requires_grad=True)
    out = F.layer_norm(x)
    out.sum().backward()
    assert out.shape == shape and x.grad.shape == shape


def test_layer_norm_refuses_a_0d_tensor_and_says_why():
    with pytest.raises(ValueError, match=r"layer_norm: got a 0-d tensor, but layer_norm "
                                         r"normalises over the last axis\. Give it at least"):
        F.layer_norm(mt.tensor(1.0))
