"""Scaled dot-product attention and multi-head attention, composed of microtensor primitives.

Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V. It is built from matmul, mul, masked_fill,
softmax and matmul, so a drawn graph shows softmax between Q K^T and V, and the gradient
of every step is the gradient of a primitive you can read on its own.

Masks follow one convention everywhere: a boolean mask where True means "may attend".
"""
from __future__ import annotations

import functools
import math

import numpy as np

import microtensor as mt
import microtensor.functional as F
from microtensor.errors import op_error
from microtensor.nn import Linear, Module

from .rope import apply_rotary


def _mask_array(mask, where: str) -> np.ndarray | None:
    """The boolean array behind a mask given as a Tensor, an ndarray or None."""
    if mask is None:
        return None
    array = np.asarray(mask.data if isinstance(mask, mt.Tensor) else mask)
    if array.dtype != bool:
        raise op_error(where, f"mask must be boolean (True = may attend) or float (added "
                       f"to the scores), got dtype "
                       f"{array.dtype} with shape {array.shape}", TypeError,
                       "build it with a comparison, e.g. ids != pad_id, or .astype(bool)")
    return array


def _additive_mask(mask):
    """A float mask is added to the scores (PyTorch's float `attn_mask`): the one exception
    to boolean masks, chosen by the dtype. Returns (what to add, boolean mask). Its -inf
    entries are added as 0 and masked as False instead, so a row with no key left gets
    zero weights, not NaN, as with a boolean mask. A boolean mask or None passes through."""
    data = mask.data if isinstance(mask, mt.Tensor) else mask
    if data is None or np.asarray(data).dtype.kind != "f":
        return None, mask
    blocked = np.isneginf(data)
    return (mt.where(blocked, 0.0, mask) if blocked.any() else mask), ~blocked


@functools.lru_cache(maxsize=32)
def causal_mask(n_queries: int, n_keys: int) -> np.ndarray:
    """(n_queries, n_keys) boolean mask, True where query i may see key j. Read-only and
    cached: every layer of every step asks for the same one.

    Aligned bottom-right: the last query sees every key, so query i sees keys
    j <= i + n_keys - n_queries. With n_queries == n_keys this is the usual lower triangle;
    with one new query and a cache of n_keys keys, that query sees all of them.

    >>> causal_mask(2, 3)
    array([[ True,  True, False],
           [ True,  True,  True]])
    """
    mask = np.tril(np.ones((n_queries, n_keys), dtype=bool), k=n_keys - n_queries)
    mask.flags.writeable = False
    return mask


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False,
                                 dropout_p: float = 0.0, training: bool = False):
    """softmax(q k^T / sqrt(d_k)) v, returning `(out, weights)`.

    q: (..., Tq, d_k); k: (..., Tk, d_k); v: (..., Tk, d_v). `mask` is boolean, True = may
    attend, broadcastable to (..., Tq, Tk); a float mask is instead added to the scores
    (PyTorch's float attn_mask: 0 keeps, -inf blocks, other values bias). `causal=True`
    adds a bottom-right aligned causal mask (right for cached decoding too). Masked scores
    are -inf, so masked keys get weight exactly 0. A query row with no key allowed at all
    gets zero weights and a zero output (and a zero gradient), not NaN. `dropout_p` drops
    attention weights while `training`. The tensors it makes are named `QK^T`, `scores`
    and `weights`, so graphs and backward steps show those names.

    >>> q = k = v = mt.randn(2, 5, 8)
    >>> out, weights = scaled_dot_product_attention(q, k, v, causal=True)
    >>> out.shape, weights.shape
    ((2, 5, 8), (2, 5, 5))
    """
    _check_qkv(q, k, v)
    bias, allowed = attention_masks(mask, causal, q.shape, k.shape)
    # A Python float keeps float32 float32; 1/sqrt(d_k) keeps the scores' variance near 1
    # so softmax does not saturate as d_k grows.
    return attention(q, k, v, bias, allowed, scale=1.0 / math.sqrt(q.shape[-1]),
                     dropout_p=dropout_p if training else 0.0)


def attention(q, k, v, bias=None, allowed=None, scale: float = 1.0, dropout_p: float = 0.0):
    """The textbook steps, on masks already prepared (`attention_masks`): scores = scale
    q k^T (+ bias), blocked keys at -inf, softmax, weights v. Returns `(out, weights)`.
    The fused kernels (`transformer.fast`) name this as their reference."""
    scores = q @ k.swapaxes(-1, -2)                    # (..., Tq, Tk)
    scores.name = "QK^T"
    scores = scores * scale
    scores.name = "scores"
    if bias is not None:
        scores = scores + bias
    row_has_key = None
    if allowed is not None:
        # -inf, not a large negative number: exp(-inf) is exactly 0, so a masked key gets
        # no weight at all, however large the other scores are.
        scores = scores.masked_fill(~allowed, float("-inf"))
        row_has_key = allowed.any(axis=-1, keepdims=True)      # (..., Tq, 1)
        if row_has_key.all():
            row_has_key = None
        else:
            # A row of only -inf would give softmax 0/0 = NaN. Give those rows finite
            # scores (0), then multiply their weights by 0: output 0, gradient 0.
            scores = scores.masked_fill(~row_has_key, 0.0)
    weights = scores.softmax(axis=-1)                  # (..., Tq, Tk), rows sum to 1
    if row_has_key is not None:
        weights = weights * row_has_key.astype(weights.dtype)
    if dropout_p:
        weights = F.dropout(weights, p=dropout_p, training=True)
    weights.name = "weights"
    return weights @ v, weights                        # (..., Tq, d_v)


def attention_masks(mask, causal: bool, q_shape: tuple, k_shape: tuple):
    """A mask as attention uses it: (float mask to add to the scores or None, boolean
    array of the keys each query may see or None), checked against the (..., Tq, Tk)
    scores of queries and keys of these shapes, the causal mask included."""
    bias, mask = _additive_mask(mask)
    allowed = _mask_array(mask, "scaled_dot_product_attention")
    n_queries, n_keys = q_shape[-2], k_shape[-2]
    if allowed is not None:
        try:
            batch = np.broadcast_shapes(q_shape[:-2], k_shape[:-2])
        except ValueError:
            raise op_error("scaled_dot_product_attention", f"the batch axes of q "
                           f"{tuple(q_shape)} and k {tuple(k_shape)} do not broadcast") from None
        _check_mask_shape(allowed, batch + (n_queries, n_keys))
        if allowed.all():
            allowed = None  # nothing is masked (no padding): skip the masking ops
    if causal and n_queries > 1:  # one query (cached decoding) may see every key
        lower = causal_mask(n_queries, n_keys)
        allowed = lower if allowed is None else allowed & lower
    return bias, allowed


def _check_qkv(q, k, v) -> None:
    where = "scaled_dot_product_attention"
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise op_error(where, f"q, k, v need at least 2 axes (..., T, d), got shapes "
                       f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise op_error(where, f"q {tuple(q.shape)} and k {tuple(k.shape)} must share the last "
                       f"axis (d_k), and k and v {tuple(v.shape)} the key axis (Tk)")


def _check_mask_shape(allowed: np.ndarray, scores_shape: tuple) -> None:
    try:
        broadcast = np.broadcast_shapes(allowed.shape, scores_shape)
    except ValueError:
        broadcast = None
    if broadcast != scores_shape:
        raise op_error("scaled_dot_product_attention", f"mask of shape {allowed.shape} does "
                       f"not broadcast to the scores' shape {scores_shape} (..., Tq, Tk)",
                       fix="a key-padding mask of shape (B, Tk) becomes "
                       "mask[:, None, None, :] for (B, h, Tq, Tk) scores")


def weights_constant(weights) -> mt.Tensor:
    """A fused kernel's attention weights as a constant tensor named "weights", without a
    copy: a read-only view, because the kernel's backward reads the same array."""
    view = weights.view()
    view.flags.writeable = False
    constant = mt.from_numpy(view)
    constant.name = "weights"
    return constant


def split_heads(x, n_heads: int):
    """(B, T, n_heads * d_k) -> (B, n_heads, T, d_k)."""
    batch, length, width = x.shape
    return x.reshape(batch, length, n_heads, width // n_heads).swapaxes(1, 2)


def merge_heads(x):
    """(B, h, T, d_k) -> (B, T, h * d_k): the heads' outputs side by side."""
    batch, n_heads, length, d_k = x.shape
    return x.swapaxes(1, 2).reshape(batch, length, n_heads * d_k)


def repeat_kv_heads(x, n_heads: int):
    """(B, n_kv_heads, Tk, d_k) -> (B, n_heads, Tk, d_k): each K/V head repeated for the
    n_heads / n_kv_heads query heads of its group (unsqueeze, expand, reshape; the
    backward sums each group's gradients onto its shared head)."""
    batch, n_kv_heads, length, d_k = x.shape
    if n_kv_heads == n_heads:
        return x
    group = n_heads // n_kv_heads
    return (x.unsqueeze(2).expand(batch, n_kv_heads, group, length, d_k)
            .reshape(batch, n_heads, length, d_k))


def check_heads(where: str, d_model: int, n_heads: int, n_kv_heads: int) -> None:
    """Refuse heads that do not split d_model evenly, or K/V heads that do not split the
    query heads into equal groups, naming the values and the choices that would."""
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads <= 0 \
            or d_model % n_heads:
        raise op_error(where, f"d_model={d_model} must split evenly into n_heads={n_heads} "
                       "heads", fix="choose n_heads that divides d_model (e.g. "
                       f"{[h for h in (1, 2, 4, 8, 16) if d_model % h == 0]})")
    if isinstance(n_kv_heads, bool) or not isinstance(n_kv_heads, int) \
            or n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise op_error(where, f"n_kv_heads={n_kv_heads!r} must be a positive integer "
                       f"dividing n_heads={n_heads}: each K/V head serves an equal group "
                       "of query heads", fix="choose one of "
                       f"{[k for k in range(1, n_heads + 1) if n_heads % k == 0]}")


class MultiHeadAttention(Module):
    """h attention heads in parallel on d_k = d_model / h dimensional projections.

    `W_q, W_k, W_v, W_o` are Linear layers (x @ W + b); W_q and W_o are (d_model, d_model).
    Heads are split by reshape + transpose to (B, h, T, d_k), never by a loop over heads.
    Self-attention when `context` is None, cross-attention on `context` otherwise. `mask` is
    boolean (True = may attend), broadcastable to (B, h, Tq, Tk). `last_weights` holds the
    attention weights (B, h, Tq, Tk) of the last call.

    Grouped-query attention: `n_kv_heads` (default n_heads) K/V heads, so W_k and W_v are
    (d_model, n_kv_heads * d_k), and each group of n_heads / n_kv_heads query heads shares
    one K/V head (query head i uses K/V head i // (n_heads / n_kv_heads), as in Llama).
    `n_kv_heads=1` is multi-query attention. Inside attention the K/V heads are repeated
    to the query heads (`repeat_kv_heads`); the cache keeps only the n_kv_heads.

    `rotation` (a `Rotation` from `RotaryEmbedding`) rotates queries and keys by their
    positions (RoPE), self-attention only; cached keys are stored rotated.

    `cache` (from `KVCache`) is for inference under `mt.no_grad()`: self-attention appends
    this call's K and V to preallocated buffers; cross-attention projects `context` once
    and reuses it.

    This `forward` is the textbook computation. Calling the module runs its fast form
    (`transformer.fast`): the same numbers, attention as one fused node.

    >>> mha = MultiHeadAttention(d_model=16, n_heads=4)
    >>> mha(mt.randn(2, 5, 16), causal=True).shape
    (2, 5, 16)
    >>> MultiHeadAttention(16, n_heads=4, n_kv_heads=2, bias=False).W_k.weight.shape
    (16, 8)
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 n_kv_heads: int | None = None):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        check_heads("MultiHeadAttention", d_model, n_heads, n_kv_heads)
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.n_kv_heads = n_kv_heads
        kv_dim = n_kv_heads * self.d_k
        self.W_q = Linear(d_model, d_model, bias=bias)
        self.W_k = Linear(d_model, kv_dim, bias=bias)
        self.W_v = Linear(d_model, kv_dim, bias=bias)
        self.W_o = Linear(d_model, d_model, bias=bias)
        self.dropout_p = dropout  # on the attention weights, while training
        self.last_weights = None

    @property
    def last_weights(self):
        """The attention weights of the last call, (B, h, Tq, Tk), or None before one: a
        tensor of the graph on the textbook path, a constant named "weights" on the fast
        ones. Cached decoding keeps the kernel's array, made a tensor when first read
        here: it would make one per layer per token, and few are ever looked at."""
        weights = self.__dict__["_last_weights"]
        if isinstance(weights, np.ndarray):
            weights = self.__dict__["_last_weights"] = weights_constant(weights)
        return weights

    @last_weights.setter
    def last_weights(self, weights):
        self.__dict__["_last_weights"] = weights

    def project_keys_values(self, source, rotation=None):
        """K and V of `source`, split into heads: two (B, n_kv_heads, Tk, d_k) tensors;
        K rotated by `rotation` when given (RoPE)."""
        k = split_heads(self.W_k(source), self.n_kv_heads)
        v = split_heads(self.W_v(source), self.n_kv_heads)
        if rotation is not None:
            k = apply_rotary(k, rotation)
        return k, v

    def project(self, x, context=None, cache=None, rotation=None):
        """Q of x, (B, h, Tq, d_k), and K and V of `context` (x when None), (B, n_kv_heads,
        Tk, d_k): this call's alone, or appended to `cache`; queries and keys rotated by
        `rotation` when given (RoPE)."""
        q = split_heads(self.W_q(x), self.n_heads)
        if rotation is not None:
            q = apply_rotary(q, rotation)

        def project(source):
            return self.project_keys_values(source, rotation)

        source = x if context is None else context
        k, v = project(source) if cache is None else cache.update(project, source)
        return q, k, v

    def forward(self, x, context=None, mask=None, causal: bool = False, cache=None,
                rotation=None):
        self._check_inputs(x, context, rotation)
        q, k, v = self.project(x, context, cache, rotation)
        out, self.last_weights = scaled_dot_product_attention(
            q, repeat_kv_heads(k, self.n_heads), repeat_kv_heads(v, self.n_heads),
            mask=mask, causal=causal, dropout_p=self.dropout_p,
            training=self.training and mt.is_dropout_enabled())
        return self.W_o(merge_heads(out))                          # (B, Tq, d_model)

    def _check_inputs(self, x, context, rotation) -> None:
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise op_error("MultiHeadAttention", f"expected x of shape (B, T, {self.d_model}), "
                           f"got {tuple(x.shape)}")
        if rotation is not None and context is not None:
            raise op_error("MultiHeadAttention", "rotary positions apply to self-attention, "
                           "but a context was given (cross-attention)",
                           fix="pass rotation only without context")

    def extra_repr(self):
        kv = "" if self.n_kv_heads == self.n_heads else f", n_kv_heads={self.n_kv_heads}"
        return f"d_model={self.d_model}, n_heads={self.n_heads}{kv}"
