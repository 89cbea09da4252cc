"""Attention as one primitive: the fast form of the textbook steps.

`transformer.attention.attention` builds attention from five ops (matmul, scale, mask,
softmax, matmul). `fused_attention` computes the same thing as a single node, with no
intermediate tensors, no per-op bookkeeping and a closed-form backward, and names those
five ops as its reference, so a drawing opens it into them. `fused_self_attention` goes
one step further for self-attention: it reads the heads of Q, K and V from one packed
tensor (one GEMM makes them side by side) and writes the output with the heads merged.

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

import numpy as np

import microtensor as mt
from microtensor.kernels import sum_over_last_axis

from ..attention import attention, merge_heads, repeat_kv_heads, split_heads


def attend(q, k, v, bias=None, allowed=None, scale=1.0, out=None):
    """The forward arithmetic of both fused primitives: (softmax(scale q k^T + bias, blocked
    keys at -inf) v, weights). Every step after the first matmul writes into its (..., Tq,
    Tk) buffer; `out`, if given, receives the result (a view works: no copy is made)."""
    scores = np.matmul(q, np.swapaxes(k, -1, -2))        # (..., Tq, Tk)
    if scale != 1:   # 1 when the caller folded it into q's weights (packed self-attention)
        scores *= scale
    if bias is not None:
        scores = scores + bias                            # (may widen the dtype, as composed)
    row_has_key = None
    if allowed is not None:
        np.copyto(scores, -np.inf, where=~allowed)
        row_has_key = allowed.any(axis=-1, keepdims=True)   # before broadcasting: small
        if row_has_key.all():
            row_has_key = None
        else:  # a row of only -inf would give 0/0: make it finite, zero its weights below
            np.copyto(scores, 0.0, where=~row_has_key)
    weights = scores                                      # softmax in place, shift first
    # Any shift c per row leaves softmax unchanged; it only has to keep exp(s - c) in
    # range. The row's max is the textbook shift, but NumPy takes a max over each of many
    # short rows at many times the cost of one over the whole array. When every query may see
    # its own key (self-attention: causal or unmasked), the row's own diagonal score
    # s_ii = q_i . k_i is a shift just as row-local (a causal model's past outputs still
    # do not depend on its future, bit for bit), read off the scores' diagonal (a strided
    # view: no pass over q, k or the scores). exp(s_ii - s_ii) = 1 keeps the sum from
    # underflowing; a score more than ~88 above the diagonal (709 in float64) overflows,
    # and that row is redone with its max.
    sees_itself = (bias is None and q.shape[:-1] == k.shape[:-1]
                   and (allowed is None or _sees_own_key(allowed, q.shape[-2])))
    if sees_itself:
        weights -= np.diagonal(weights, 0, -2, -1).copy()[..., None]
        # A row that overflows is redone below: its inf (and the NaN a BLAS kernel may
        # make of inf, which the sum's check catches too) must not warn the user.
        with np.errstate(over="ignore", invalid="ignore"):
            np.exp(weights, out=weights)
            sums = sum_over_last_axis(weights)
    else:
        weights -= np.fmax.reduce(weights, axis=-1, keepdims=True)
        np.exp(weights, out=weights)
        sums = sum_over_last_axis(weights)
    if sees_itself:
        overflowed = ~((sums > 0) & (sums < np.inf))
        if overflowed.any():
            sums[overflowed] = _softmax_rows_by_max(weights, overflowed, q, k, allowed, scale)
    weights *= (1 / sums)[..., None]
    if row_has_key is not None:
        weights *= row_has_key
    return np.matmul(weights, v, out=out), weights        # (..., Tq, d_v)


def _sees_own_key(allowed, n) -> bool:
    """Whether `allowed`, broadcast to (..., n, n), lets every query see its own key."""
    square = np.broadcast_to(allowed, np.broadcast_shapes(allowed.shape, (n, n)))
    return bool(np.diagonal(square, 0, -2, -1).all())


def _softmax_rows_by_max(weights, rows, q, k, allowed, scale) -> np.ndarray:
    """Redo the rows of `weights` (..., Tq, Tk) where `rows` (..., Tq) is True as the
    textbook does: scores again, blocked keys at -inf, the row's max subtracted, exp.
    Writes exp(s - max) into those rows and returns their sums."""
    index = np.nonzero(rows)                              # (batch..., query) of each row
    scores = np.einsum("nd,nkd->nk", q[index], k[index[:-1]]) * scale
    if allowed is not None:
        blocked = ~np.broadcast_to(allowed, weights.shape)[index]
        scores[blocked] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    weights[index] = scores
    return scores.sum(axis=-1)


def attend_backward(grad_out, q, k, v, weights, out, scale, grads_into=(None, None, None)):
    """The closed-form backward of `attend` (the module docstring derives it), given its
    output `out`: (grad_q, grad_k, grad_v, grad_scores). `grads_into` may name arrays (views
    work) to receive grad_q, grad_k and grad_v."""
    into_q, into_k, into_v = grads_into
    grad_v = np.matmul(np.swapaxes(weights, -1, -2), grad_out, out=into_v)
    # rowsum(dW * W) over the keys equals rowsum(g * out) over the features, since
    # sum_j (g . v_j) W_j = g . out: a pass over (..., Tq, d_v) instead of (..., Tq, Tk).
    rowsum = np.einsum("...i,...i->...", grad_out, out)
    grad_scores = np.matmul(grad_out, np.swapaxes(v, -1, -2))      # dW first, then
    grad_scores -= rowsum[..., None]
    grad_scores *= weights                 # dS; 0 wherever a key was blocked
    grad_q = np.matmul(grad_scores, k, out=into_q)
    grad_k = np.matmul(np.swapaxes(grad_scores, -1, -2), q, out=into_k)
    if scale != 1:
        grad_q *= scale
        grad_k *= scale
    return grad_q, grad_k, grad_v, grad_scores


def fused_attention_reference(q, k, v, bias=None, *, allowed=None, scale=1.0,
                              keep_weights=None):
    """`fused_attention` as the textbook ops (`keep_weights` is the fused op's own)."""
    return attention(q, k, v, bias, allowed, scale)[0]


@mt.primitive("attention", rule="dV = W^T g; dW = g V^T; dS = W * (dW - rowsum(dW * W)); "
                                "dQ = scale dS K; dK = scale dS^T Q; dbias = dS",
              reference=fused_attention_reference)
def fused_attention(q, k, v, bias=None, *, allowed=None, scale=1.0, keep_weights=None):
    """softmax(scale * q k^T + bias, blocked keys at -inf) v as one op.

    q (..., Tq, d_k), k (..., Tk, d_k), v (..., Tk, d_v); `bias` (float, optional) is
    added to the scaled scores; `allowed` (boolean, broadcastable to (..., Tq, Tk), True =
    may attend) blocks keys; a query row with no allowed key gets zero weights and output.
    `keep_weights`, a list, receives the weights array (the one value the op returns
    beside its output). Callers check shapes and masks first (scaled_dot_product_attention).
    """
    out, weights = attend(q, k, v, bias, allowed, scale)
    if keep_weights is not None:
        keep_weights.append(weights)

    def backward(grad_out):
        grad_q, grad_k, grad_v, grad_scores = attend_backward(grad_out, q, k, v, weights, out,
                                                              scale)
        return grad_q, grad_k, grad_v, (None if bias is None else grad_scores)

    return out, backward


def fused_self_attention_reference(qkv, bias=None, *, n_heads, n_kv_heads, allowed=None,
                                   scale=1.0, keep_weights=None):
    """`fused_self_attention` as the textbook ops: Q, K and V sliced from qkv and split
    into heads, the K/V heads repeated for their groups, attention, heads merged."""
    d_k = qkv.shape[-1] // (n_heads + 2 * n_kv_heads)
    q_end, k_end = n_heads * d_k, (n_heads + n_kv_heads) * d_k
    q = split_heads(qkv[..., :q_end], n_heads)
    k = repeat_kv_heads(split_heads(qkv[..., q_end:k_end], n_kv_heads), n_heads)
    v = repeat_kv_heads(split_heads(qkv[..., k_end:], n_kv_heads), n_heads)
    return merge_heads(attention(q, k, v, bias, allowed, scale)[0])


@mt.primitive("self_attention", rule="attention's rule on Q, K, V read from one packed "
                                     "tensor [Q | K | V]: dqkv = [dQ | dK | dV]",
              reference=fused_self_attention_reference)
def fused_self_attention(qkv, bias=None, *, n_heads, n_kv_heads, allowed=None, scale=1.0,
                         keep_weights=None):
    """Multi-head self-attention on packed projections, heads split and merged inside.

    qkv (B, T, (n_heads + 2 n_kv_heads) d_k) holds Q, K and V side by side, as one GEMM
    x @ [W_q | W_k | W_v] makes them; the output is (B, T, n_heads d_k), heads merged, ready
    for W_o. Heads are strided views of qkv (no split copies) and the gradient is one
    (B, T, width) array [dQ | dK | dV], so the three projections take their gradient from
    one GEMM too. With fewer K/V heads (grouped-query attention) each is repeated for its
    group of query heads, and its gradient summed back over the group. `bias`, `allowed`
    and `keep_weights` are as in `fused_attention`, over (B, n_heads, T, T) scores.
    """
    batch, length, width = qkv.shape
    d_k = width // (n_heads + 2 * n_kv_heads)
    group = n_heads // n_kv_heads

    def heads(array, first, count):
        """Columns [first, first + count) * d_k of a (B, T, width) array as (B, count, T,
        d_k) heads: a strided view."""
        columns = array[..., first * d_k:(first + count) * d_k]
        return columns.reshape(batch, length, count, d_k).transpose(0, 2, 1, 3)

    q = heads(qkv, 0, n_heads)
    k = heads(qkv, n_heads, n_kv_heads)
    v = heads(qkv, n_heads + n_kv_heads, n_kv_heads)
    if group > 1:
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    dtype = qkv.dtype if bias is None else np.result_type(qkv, bias)
    merged = np.empty((batch, length, n_heads * d_k), dtype=dtype)
    _, weights = attend(q, k, v, bias, allowed, scale, out=heads(merged, 0, n_heads))
    if keep_weights is not None:
        keep_weights.append(weights)

    def backward(grad_out):
        grad_qkv = np.empty(qkv.shape, dtype=np.result_type(grad_out, weights))
        # With a head per K/V, every gradient lands straight in its columns of grad_qkv;
        # a shared K/V head's gradient is first summed over its group of query heads.
        into = [heads(grad_qkv, first, n_heads) if group == 1 else None
                for first in (n_heads, n_heads + n_kv_heads)]
        _, grad_k, grad_v, grad_scores = attend_backward(
            heads(grad_out, 0, n_heads), q, k, v, weights, heads(merged, 0, n_heads), scale,
            grads_into=(heads(grad_qkv, 0, n_heads), *into))
        if group > 1:
            for first, grad in ((n_heads, grad_k), (n_heads + n_kv_heads, grad_v)):
                grad = grad.reshape(batch, n_kv_heads, group, length, d_k).sum(axis=2)
                heads(grad_qkv, first, n_kv_heads)[...] = grad
        return grad_qkv, (None if bias is None else grad_scores)

    return merged, backward
