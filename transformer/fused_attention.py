"""Attention as one primitive: the fast path beside the composed teaching form.

`scaled_dot_product_attention` builds attention from five ops (matmul, scale, mask,
softmax, matmul), so graphs and the stepper show each of them. `fused_attention` computes
the same thing as a single node, with no intermediate tensors, no per-op bookkeeping and
a closed-form backward. It is selected by `fast_attention()` (see there for why).

The backward, for out = W V with W = softmax(S), S = scale * Q K^T (+ bias, blocked keys
at -inf), and G = d loss / d out:
    dV = W^T G                                  (out is linear in V)
    dW = G V^T                                  (and in W)
    dS = W * (dW - rowsum(dW * W))              (softmax's Jacobian y_i (delta_ij - y_j))
    dQ = scale * dS K,   dK = scale * dS^T Q,   d bias = dS
A blocked key has W = 0, so its dS is 0: masked positions get zero gradient, and a query
row with no key at all (W = 0 everywhere) sends nothing back, as in the composed form.
"""
from __future__ import annotations

import threading

import numpy as np

import microtensor as mt
from microtensor.kernels import sum_over_last_axis


class _Choice(threading.local):
    fused = False  # every new thread starts on the composed (teaching) path


_choice = _Choice()


def fast_attention_enabled() -> bool:
    return _choice.fused


class fast_attention:
    """Inside this block `scaled_dot_product_attention` (and so every MultiHeadAttention)
    runs `fused_attention`: one node instead of five, the same numbers. Thread-local.

    Off by default, so a drawn graph, the stepper and the lessons show the textbook steps
    (QK^T, scores, softmax, weights). A context rather than only an argument, because the
    choice is made for a whole model: attention sits deep inside every block. Inside it,
    the weights are still returned (and kept in `last_weights`) as a tensor named
    "weights", but as a constant: gradients flow through the fused node alone, and the
    intermediate `QK^T` and `scores` tensors are never made (leave the block to see them).

    >>> from transformer import scaled_dot_product_attention
    >>> q = k = v = mt.randn(1, 3, 4)
    >>> with fast_attention():
    ...     out, weights = scaled_dot_product_attention(q, k, v, causal=True)
    >>> weights.op is None, out.shape
    (True, (1, 3, 4))
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self):
        self._previous = _choice.fused
        _choice.fused = self.enabled
        return self

    def __exit__(self, *exc):
        _choice.fused = self._previous


@mt.primitive("attention", rule="dV = W^T g; dW = g V^T; dS = W * (dW - rowsum(dW * W)); "
                                "dQ = scale dS K; dK = scale dS^T Q; dbias = dS")
def fused_attention(q, k, v, bias=None, *, allowed=None, scale=1.0, keep_weights=None):
    """softmax(scale * q k^T + bias, blocked keys at -inf) v as one op.

    q (..., Tq, d_k), k (..., Tk, d_k), v (..., Tk, d_v); `bias` (float, optional) is
    added to the scaled scores; `allowed` (boolean, broadcastable to (..., Tq, Tk), True =
    may attend) blocks keys; a query row with no allowed key gets zero weights and output.
    `keep_weights`, a list, receives the weights array (the one value the op returns
    beside its output). Callers check shapes and masks first (scaled_dot_product_attention).
    """
    # Every step below writes into the one (..., Tq, Tk) buffer made by the first matmul.
    scores = np.matmul(q, np.swapaxes(k, -1, -2))        # (..., Tq, Tk)
    scores *= scale
    if bias is not None:
        scores = scores + bias                            # (may widen the dtype, as composed)
    row_has_key = None
    if allowed is not None:
        np.copyto(scores, -np.inf, where=~allowed)
        row_has_key = np.broadcast_to(allowed, scores.shape).any(axis=-1, keepdims=True)
        if row_has_key.all():
            row_has_key = None
        else:  # a row of only -inf would give 0/0: make it finite, zero its weights below
            np.copyto(scores, 0.0, where=~row_has_key)
    weights = scores                                      # softmax in place, max first
    weights -= np.fmax.reduce(weights, axis=-1, keepdims=True)
    np.exp(weights, out=weights)
    weights *= (1 / sum_over_last_axis(weights))[..., None]
    if row_has_key is not None:
        weights *= row_has_key
    if keep_weights is not None:
        keep_weights.append(weights)
    out = np.matmul(weights, v)                            # (..., Tq, d_v)

    def backward(grad_out):
        grad_v = np.matmul(np.swapaxes(weights, -1, -2), grad_out)
        grad_scores = np.matmul(grad_out, np.swapaxes(v, -1, -2))      # dW first, then
        grad_scores -= np.einsum("...i,...i->...", grad_scores, weights)[..., None]
        grad_scores *= weights                 # dS; 0 wherever a key was blocked
        grad_q = np.matmul(grad_scores, k)
        grad_q *= scale
        grad_k = np.matmul(np.swapaxes(grad_scores, -1, -2), q)
        grad_k *= scale
        return grad_q, grad_k, grad_v, (None if bias is None else grad_scores)

    return out, backward
