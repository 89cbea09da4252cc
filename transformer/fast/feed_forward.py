"""A pre-LN block's feed-forward as one primitive: the fast form of the textbook steps.

The textbook writes W_2(gelu(W_1(layer_norm(x)))): four ops, three of them leaving an
activation-sized tensor behind, (rows, d_ff) for two of them. `fused_feed_forward`
computes the same numbers as one node and names those ops as its reference, so a drawing
opens it into them. Inside, nothing of the middle is a tensor anyone else can read, so
GELU is written over the product it reads, h = [x_hat | 1] [w W_1 ; b W_1 + b_1]
(`FoldedProduct`, layer_norm_linear's arithmetic): on the reference model that spares a
fresh (1024, 512) array per layer, whose memory traffic costs more than its arithmetic.

The backward, with y = gelu(h) and G = d loss / d out:
    dW_2 = y^T G,   db_2 = sum of G over rows,   dy = G W_2^T
    dh = dy * gelu'(h)                    (the forward kept gelu'(h), written over dy)
and from dh on, layer_norm_linear's rule gives dx, dw, db, dW_1 and db_1.
"""
from __future__ import annotations

import math

import numpy as np

import microtensor.functional as F
from microtensor import primitive
from microtensor.errors import op_error
from microtensor.kernels import sum_over_rows
from microtensor.ops.elementwise import gelu_tanh_and_slope
from microtensor.ops.neural import FoldedProduct, check_folded_inputs


def fused_feed_forward_reference(x, norm_weight, norm_bias, W_1, b_1, W_2, b_2, *,
                                 eps=1e-5):
    """What `fused_feed_forward` computes, as the ops a textbook writes."""
    hidden = F.linear(F.layer_norm(x, norm_weight, norm_bias, eps=eps), W_1, b_1)
    return F.linear(F.gelu(hidden), W_2, b_2)


@primitive("feed_forward", rule="linear's rule for W_2, gelu's for its input, then "
                                "layer_norm_linear's for x, the norm and W_1",
           new_grads=True, reference=fused_feed_forward_reference)
def fused_feed_forward(x, norm_weight, norm_bias, W_1, b_1, W_2, b_2, *, eps=1e-5):
    """W_2(gelu(W_1(layer_norm(x)))) with GELU's tanh form, as one node: the numbers of
    `fused_feed_forward_reference`, which the tests hold it to, forward and backward.
    Weights are (in, out); b_1 and b_2 may be None."""
    check_folded_inputs("feed_forward", x, norm_weight, norm_bias, W_1, b_1,
                        fix="for a norm without them use the modules' own forward")
    if getattr(W_2, "ndim", 0) != 2 or W_2.shape[0] != W_1.shape[1] or (
            b_2 is not None and getattr(b_2, "shape", ()) != W_2.shape[1:]):
        raise op_error("feed_forward", f"W_2 {np.shape(W_2)} and b_2 {np.shape(b_2)} do not "
                       f"follow W_1 {W_1.shape}: W_2 must be (d_ff, out) with d_ff = "
                       f"{W_1.shape[1]}, and b_2 (out,)",
                       fix="weights here are (in, out), the transpose of PyTorch's (out, in)")
    x_rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    dtype = np.result_type(x_rows, norm_weight, norm_bias, W_1, W_2, 0.5,
                           *(b for b in (b_1, b_2) if b is not None))
    first = FoldedProduct(x_rows, norm_weight, norm_bias, W_1, b_1, eps, dtype)
    activated = first.out                              # h, then gelu(h) over it
    slope = np.empty_like(activated)                   # gelu'(h)
    gelu_tanh_and_slope(activated, activated, slope)
    out = activated @ W_2
    if b_2 is not None:
        out += b_2

    def backward(g):
        g_rows = g.reshape(len(x_rows), W_2.shape[1])
        grad_W_2 = activated.T @ g_rows
        grad_b_2 = None if b_2 is None else sum_over_rows(g_rows)
        grad_hidden = g_rows @ W_2.T
        grad_hidden *= slope
        grad_rows, *grads = first.backward(grad_hidden)
        return grad_rows.reshape(x.shape), *grads, grad_W_2, grad_b_2
    return out.reshape(x.shape[:-1] + W_2.shape[1:]), backward
