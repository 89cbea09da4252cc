"""A tied output head as one primitive: logits = x @ E^T, read from the token table E
where it is, with dE written in E's own layout.

The textbook head of a tied model is `x @ E.swapaxes(0, 1)`: a view (no copy) and a
matmul, which BLAS reads transposed for free. The cost is in the backward: matmul makes
the gradient of its right operand as E^T is laid out, (d, vocab), and swapaxes hands it
back as a transposed view, so summing it with the embedding lookup's gradient (and
copying it into the optimizer's buffer) walks 50,257 x 768 floats across the grain.
`matmul_transposed` asks BLAS for dE = g^T x directly, a (vocab, d) array laid out as E
is, which the lookup's gradient is then added into in place.

    >>> E = mt.randn(10, 4, requires_grad=True)
    >>> x = mt.randn(2, 3, 4)
    >>> matmul_transposed(x, E).shape                  # x @ E^T
    (2, 3, 10)
"""
from __future__ import annotations

import microtensor as mt
from microtensor.errors import op_error


def matmul_transposed_reference(x, weight):
    """`matmul_transposed` as the textbook ops: the table transposed (a view), then matmul."""
    return x @ weight.swapaxes(0, 1)


@mt.primitive("matmul_transposed", rule="dx = g @ W ;  dW = g^T @ x (rows of every batch)",
              new_grads=True, reference=matmul_transposed_reference)
def matmul_transposed(x, weight):
    """x (..., d) @ weight^T for a weight stored (out, d), as an Embedding's table is: the
    (..., out) products in one GEMM over every row, the table read in place."""
    if getattr(weight, "ndim", 0) != 2 or getattr(x, "ndim", 0) == 0 \
            or x.shape[-1] != weight.shape[1]:
        raise op_error("matmul_transposed", f"input {x.shape} and weight {weight.shape} "
                       "do not match: the weight must be 2-D (out, in) with in equal to "
                       "the input's last axis")
    rows = x.reshape(-1, x.shape[-1])                    # (N, d)
    out = rows @ weight.T                                # (N, out); BLAS reads W^T in place

    def backward(g):
        g_rows = g.reshape(len(rows), weight.shape[0])   # (N, out)
        grad_x = (g_rows @ weight).reshape(x.shape)
        grad_weight = g_rows.T @ rows                    # (out, d), laid out as the weight
        return grad_x, grad_weight

    return out.reshape(x.shape[:-1] + weight.shape[:1]), backward
