"""The speed tricks behind the fast primitives, explained once.

Each fused primitive (softmax, layer_norm, rms_norm, gelu, linear, cross_entropy,
embedding, masked_fill) has a plain NumPy reference form beside it that reads like the
math (`softmax_reference`, ...). The forms that run are the same math rearranged around
four facts about NumPy on a CPU:

1. **Reductions over many short rows are slow; a matrix-vector product is not.**
   `a.sum(axis=-1)` over (batch, heads, T, T) attention scores walks each short row with
   per-row overhead, while `a @ ones` hands the whole array to BLAS, which reads each row
   once. The same holds for column sums (`ones @ a`, bias gradients) and for means
   (`a @ (ones / n)`, LayerNorm). `sum_over_last_axis`, `sum_over_rows` and `averager`
   are those three products; their vectors of ones and of 1/n are cached, because every
   step asks for the same few. A scatter-add can be a product too: embedding's gradient
   for a small table is one_hot(ids)^T @ grad_rows, one GEMM instead of a sort.

2. **On large activations every temporary array costs more than its arithmetic.**
   Allocating it, faulting its pages in and streaming it through memory dominate a
   multiply-add. So the fast GELU writes each step into a buffer it already has
   (`np.multiply(x, x, out=t)`), and `for_row_blocks` runs such an in-place chain over
   blocks of rows small enough that the few temporaries stay in the CPU cache (and
   hands it block-sized scratch buffers made once, not once per block).

3. **Fewer passes over memory.** `np.fmax.reduce` does not test each element for NaN
   (a NaN still reaches its whole row through the sum that follows), and
   `np.vecdot(g, y)` (or `np.einsum("...i,...i->...")` on strided views, where it is
   the faster) forms a row-wise dot product without the (g * y) temporary.
   `np.copyto(out, value, where=mask)` writes through a mask without reading a second
   full-size operand as `np.where` does.

4. **The backward's work can ride on the forward's pass.** While x and its powers are in
   cache, GELU's forward also writes dy/dx, so its backward is one multiply; it saves
   dydx (one activation-sized array) where the textbook form saves tanh(...).
   cross_entropy turns its shifted logits into softmax in place and hands that to the
   backward, instead of saving log-probabilities and taking exp again.

What is not here: threads. NumPy's ufuncs release the GIL, so two threads could share
the elementwise work, but in a training step OpenBLAS's own threads keep spinning on both
cores after every matrix product and a second Python thread finds no free core, so
threads lost when measured. The figures behind each choice are re-measured by
`python tests/bench/bench_kernels.py`.

    >>> x, y = np.ones((4096, 64)), np.empty((4096, 64))
    >>> for_row_blocks(lambda x, y: np.exp(x, out=y), x, y)
    >>> bool((y == np.e).all())
    True
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

BLOCK_SIZE = 1 << 15   # elements per block: a few arrays of this size stay in cache


def for_row_blocks(kernel: Callable[..., None], *arrays: np.ndarray, scratch: int = 0) -> None:
    """Call `kernel(*(a[rows] for a in arrays))` for blocks of rows that cover the first
    axis, one after another. The arrays share their first axis; the kernel writes its
    results into (views of) them and touches only its own rows, so the result is the same,
    bit for bit, as one call on the whole arrays.

    `scratch=n` also passes n buffers shaped like one block of the last array, made once
    and reused by every block, for the kernel's temporaries: a fresh array per block
    would be allocated (and its pages faulted in) block after block."""
    last = arrays[-1]
    if arrays[0].size <= BLOCK_SIZE:
        # One block: the common case for small tensors, kept cheap.
        kernel(*arrays, *(np.empty_like(last) for _ in range(scratch)))
        return
    n_rows = len(arrays[0])
    row_size = max(1, arrays[0].size // max(n_rows, 1))
    rows_per_block = max(1, BLOCK_SIZE // row_size)
    buffers = [np.empty((rows_per_block,) + last.shape[1:], last.dtype)
               for _ in range(scratch)]
    for start in range(0, n_rows, rows_per_block):
        rows = slice(start, start + rows_per_block)
        block = [a[rows] for a in arrays]
        kernel(*block, *(b[:len(block[0])] for b in buffers))


def reusable(grad_out: np.ndarray, result_like: np.ndarray) -> np.ndarray | None:
    """`grad_out` where a backward may write its result, of `result_like`'s dtype, over
    it, else None (for NumPy's `out=`). `backward()` hands an op a writeable grad_out only
    when nothing else holds it; writing there, instead of into a new array, spares the
    memory traffic of a fresh one (fact 2)."""
    if grad_out.flags.writeable and grad_out.dtype == result_like.dtype:
        return grad_out
    return None


def sum_over_rows(a: np.ndarray) -> np.ndarray:
    """`a.sum(axis=0)` of a 2-D array, as the vector-matrix product ones @ a."""
    return ones_vector(len(a), a.dtype) @ a if a.dtype.kind == "f" else a.sum(axis=0)


def sum_over_last_axis(a: np.ndarray) -> np.ndarray:
    """`a.sum(axis=-1)`, as the matrix-vector product a @ ones."""
    return a @ ones_vector(a.shape[-1], a.dtype) if a.dtype.kind == "f" else a.sum(axis=-1)


@functools.lru_cache(maxsize=64)
def ones_vector(length: int, dtype) -> np.ndarray:
    """A read-only vector of ones for the sums above. Cached, because every step asks for
    the same few lengths, and a fresh one costs an allocation and a pass per call."""
    vector = np.ones(length, dtype)
    vector.flags.writeable = False
    return vector


@functools.cache
def averager(features: int, dtype) -> np.ndarray:
    """A read-only vector of 1/features, so that `rows @ averager(n, dtype)` is the mean
    over the last axis. Cached (read-only, so sharing it is safe)."""
    vector = np.full(features, 1 / max(features, 1), dtype)
    vector.flags.writeable = False
    return vector


def normalize_rows(x_rows: np.ndarray, eps: float, centre: bool = True,
                   out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The normalisation every norm here shares, over the rows of x_rows (N, d):
    x_hat = (x - mean) / sqrt(var + eps) for LayerNorm, or x / sqrt(mean(x^2) + eps) for
    RMSNorm (`centre=False`), with the biased variance; returns x_hat (written into
    `out` when given) and rstd (N, 1), the factor the backward needs. The row mean is a
    GEMV with `averager` (fact 1), the mean square a row-wise dot product (fact 3), and
    x_hat is scaled in place.

    `layer_norm`, `rms_norm`, `layer_norm_linear` and cached decoding call it;
    `layer_norm_reference` and `rms_norm_reference` are the same math as a textbook
    writes it.
    """
    dtype = np.result_type(x_rows, 0.5)
    features = x_rows.shape[-1]
    if not centre:
        x_rows = x_rows.astype(dtype, copy=False)
        rstd = ((mean_square_rows(x_rows) + eps) ** -0.5)[:, None]
        return np.multiply(x_rows, rstd, out=out), rstd
    x_hat = np.subtract(x_rows, (x_rows @ averager(features, dtype))[:, None], out=out,
                        dtype=dtype)
    rstd = ((mean_square_rows(x_hat) + eps) ** -0.5)[:, None]
    x_hat *= rstd
    return x_hat, rstd


def mean_square_rows(x_rows: np.ndarray) -> np.ndarray:
    """mean(x ** 2) over each row of x_rows (N, d): a row-wise dot product (fact 3), with
    no (N, d) array of squares."""
    return np.vecdot(x_rows, x_rows) * (1 / max(x_rows.shape[-1], 1))


def normalize_rows_backward(g_hat: np.ndarray, x_hat: np.ndarray, rstd: np.ndarray,
                            mean_g_hat: np.ndarray | None, projection: np.ndarray
                            ) -> np.ndarray:
    """dL/dx from g_hat = dL/dx_hat (N, d), written over g_hat:
    rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)). The two row means come in
    as (N, 1) columns, because each caller forms them as a GEMV with what it has at hand
    (the weight folded into the averaging vector, or g_hat itself); RMSNorm, which
    subtracts no mean, passes `mean_g_hat=None`."""
    grad_x = g_hat
    if mean_g_hat is not None:
        grad_x -= mean_g_hat
    grad_x -= x_hat * projection
    grad_x *= rstd
    return grad_x
