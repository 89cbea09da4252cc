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

from .dropout import dropout_active
from .fused_attention import (
    fast_attention_enabled,
    folds_norm,
    fused_attention,
    fused_self_attention,
    watched,
)
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

    Inside `with fast_attention():` the same numbers come from one fused node instead
    (`fused_attention`; the weights are then a constant tensor, see `fast_attention`).
    Dropout on the weights keeps the composed form.

    >>> q = k = v = mt.randn(2, 5, 8)
    >>> out, weights = scaled_dot_product_attention(q, k, v, causal=True)
    >>> out.shape, weights.shape
    ((2, 5, 8), (2, 5, 5))
    """
    _check_qkv(q, k, v)
    if fast_attention_enabled() and not (dropout_p and training):
        return _fused(q, k, v, mask, causal)
    scores = q @ k.swapaxes(-1, -2)                    # (..., Tq, Tk)
    scores.name = "QK^T"
    # A Python float keeps float32 float32; 1/sqrt(d_k) keeps the scores' variance near 1
    # so softmax does not saturate as d_k grows.
    scores = scores * (1.0 / math.sqrt(q.shape[-1]))
    scores.name = "scores"
    scores, row_has_key = _masked(scores, mask, causal)
    weights = scores.softmax(axis=-1)                  # (..., Tq, Tk), rows sum to 1
    if row_has_key is not None:
        weights = weights * row_has_key.astype(weights.dtype)
    if dropout_p and training:
        weights = F.dropout(weights, p=dropout_p, training=True)
    weights.name = "weights"
    return weights @ v, weights                        # (..., Tq, d_v)


def _fused(q, k, v, mask, causal: bool):
    """The fast path: the masks of `_masked` as arrays, then one `fused_attention` node."""
    additive, allowed = _fast_masks(mask, causal, q.shape, k.shape)
    kept = []  # receives the weights array, the fused op's second result
    out = fused_attention(q, k, v, additive, allowed=allowed,
                          scale=1.0 / math.sqrt(q.shape[-1]), keep_weights=kept)
    return out, weights_constant(kept.pop())


def weights_constant(weights: np.ndarray) -> mt.Tensor:
    """The fused op's weights as a tensor named "weights", without a copy: a read-only view,
    because the op's backward reads the same array."""
    view = weights.view()
    view.flags.writeable = False
    constant = mt.from_numpy(view)
    constant.name = "weights"
    return constant


def _fast_masks(mask, causal: bool, q_shape: tuple, k_shape: tuple):
    """The masks of `_masked` for the fused kernels: (float mask to add or None, boolean
    array of allowed keys or None), checked against the (..., Tq, Tk) scores of queries
    and keys of these shapes."""
    additive, mask = _additive_mask(mask)
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
            allowed = None
    if causal and n_queries > 1:
        lower = causal_mask(n_queries, n_keys)
        allowed = lower if allowed is None else allowed & lower
    return additive, allowed


def _check_qkv(q, k, v) -> None:
    where = "scaled_dot_product_attention"
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise op_error(where, f"q, k, v need at least 2 axes (..., T, d), got shapes "
                       f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise op_error(where, f"q {tuple(q.shape)} and k {tuple(k.shape)} must share the last "
                       f"axis (d_k), and k and v {tuple(v.shape)} the key axis (Tk)")


def _masked(scores, mask, causal: bool):
    """The scores with every blocked key at -inf (a float mask added first), and a
    (..., Tq, 1) boolean array of the rows that keep at least one key (None if all do)."""
    additive, mask = _additive_mask(mask)
    allowed = _mask_array(mask, "scaled_dot_product_attention")
    if allowed is not None:
        _check_mask_shape(allowed, scores.shape)
        if additive is not None:
            scores = scores + additive
        if allowed.all():
            allowed = None  # nothing is masked (no padding): skip the masking ops
    n_queries, n_keys = scores.shape[-2:]
    if causal and n_queries > 1:  # one query (cached decoding) may see every key
        lower = causal_mask(n_queries, n_keys)
        allowed = lower if allowed is None else allowed & lower
    if allowed is None:
        return scores, None
    # -inf, not a large negative number: exp(-inf) is exactly 0, so a masked key gets
    # no weight at all, however large the other scores are.
    scores = scores.masked_fill(~allowed, float("-inf"))
    row_has_key = allowed.any(axis=-1, keepdims=True)          # (..., Tq, 1)
    if row_has_key.all():
        return scores, None
    # A row of only -inf would give softmax 0/0 = NaN. Give those rows finite scores (0);
    # the caller multiplies their weights by 0: output 0, gradient 0.
    return scores.masked_fill(~row_has_key, 0.0), row_has_key


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

    `norm` (a module, optional) is applied to x (not to `context`) before the projections:
    inside `fast_attention()` a pre-LN block hands its LayerNorm over instead of calling
    it, so that it can be folded into the Q/K/V product.

    Inside `fast_attention()`, self-attention without a cache or rotation is three nodes
    (`_packed_self_attention`): one GEMM for Q, K and V (with a LayerNorm `norm` folded
    in: `layer_norm_linear`), the packed fused attention, W_o. A forward hook on W_q, W_k,
    W_v or `norm` keeps the separate modules, so that it sees them called.

    >>> mha = MultiHeadAttention(d_model=16, n_heads=4)
    >>> mha(mt.randn(2, 5, 16), causal=True).shape
    (2, 5, 16)
    >>> MultiHeadAttention(16, n_heads=4, n_kv_heads=2, bias=False).W_k.weight.shape
    (16, 8)
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 n_kv_heads: int | None = None):
        super().__init__()
        if not isinstance(n_heads, int) or n_heads <= 0 or d_model % n_heads:
            raise op_error("MultiHeadAttention", f"d_model={d_model} must split evenly into "
                           f"n_heads={n_heads} heads",
                           fix="choose n_heads that divides d_model (e.g. "
                           f"{[h for h in (1, 2, 4, 8, 16) if d_model % h == 0]})")
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if isinstance(n_kv_heads, bool) or not isinstance(n_kv_heads, int) \
                or n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise op_error("MultiHeadAttention", f"n_kv_heads={n_kv_heads!r} must be a positive "
                           f"integer dividing n_heads={n_heads}: each K/V head serves an "
                           f"equal group of query heads",
                           fix="choose one of "
                           f"{[k for k in range(1, n_heads + 1) if n_heads % k == 0]}")
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
        """The attention weights of the last forward, (B, h, Tq, Tk), or None before one:
        a tensor of the graph on the composed path, a constant named "weights" on the
        fused ones. A fused path keeps the array, which becomes that constant when first
        asked for: decoding makes one per layer per token, and few are ever looked at."""
        weights = self.__dict__["_last_weights"]
        if isinstance(weights, np.ndarray):
            weights = self.__dict__["_last_weights"] = weights_constant(weights)
        return weights

    @last_weights.setter
    def last_weights(self, weights):   # a Tensor, None, or a fused kernel's array
        self.__dict__["_last_weights"] = weights

    def split_heads(self, x, n_heads: int | None = None):
        """(B, T, n_heads * d_k) -> (B, n_heads, T, d_k); n_heads defaults to the queries'."""
        batch, length, _ = x.shape
        return x.reshape(batch, length, n_heads or self.n_heads, self.d_k).swapaxes(1, 2)

    def merge_heads(self, x):
        """(B, h, T, d_k) -> (B, T, d_model): the heads' outputs side by side."""
        batch, _, length, _ = x.shape
        return x.swapaxes(1, 2).reshape(batch, length, self.d_model)

    def project_keys_values(self, source, rotation=None):
        """K and V of `source`, split into heads: two (B, n_kv_heads, Tk, d_k) tensors;
        K rotated by `rotation` when given (RoPE)."""
        k = self.split_heads(self.W_k(source), self.n_kv_heads)
        v = self.split_heads(self.W_v(source), self.n_kv_heads)
        if rotation is not None:
            k = apply_rotary(k, rotation)
        return k, v

    def repeat_kv_heads(self, x):
        """(B, n_kv_heads, Tk, d_k) -> (B, n_heads, Tk, d_k): each K/V head repeated for
        the n_heads / n_kv_heads query heads of its group (unsqueeze, expand, reshape; the
        backward sums each group's gradients onto its shared head)."""
        if self.n_kv_heads == self.n_heads:
            return x
        batch, n_kv_heads, length, d_k = x.shape
        group = self.n_heads // n_kv_heads
        return (x.unsqueeze(2).expand(batch, n_kv_heads, group, length, d_k)
                .reshape(batch, self.n_heads, length, d_k))

    def forward(self, x, context=None, mask=None, causal: bool = False, cache=None,
                rotation=None, norm=None):
        self._check_inputs(x, context, rotation)
        projections = (self.W_q, self.W_k, self.W_v)
        if (fast_attention_enabled() and context is None and cache is None
                and rotation is None and not (self.dropout_p and dropout_active(self))
                and not watched(projections)):
            return self._packed_self_attention(x, mask, causal, norm)
        if norm is not None:
            x = norm(x)
        source = x if context is None else context
        q = self.split_heads(self.W_q(x))                               # (B, h, Tq, d_k)
        if rotation is not None:
            q = apply_rotary(q, rotation)
        project = self.project_keys_values
        if rotation is not None:
            def project(source):
                return self.project_keys_values(source, rotation)
        # K and V: (B, n_kv_heads, Tk, d_k), from this call alone or appended to the cache
        k, v = project(source) if cache is None else cache.update(project, source)
        out, weights = scaled_dot_product_attention(
            q, self.repeat_kv_heads(k), self.repeat_kv_heads(v), mask=mask, causal=causal,
            dropout_p=self.dropout_p, training=dropout_active(self))
        self.last_weights = weights
        return self.W_o(self.merge_heads(out))                          # (B, Tq, d_model)

    def _packed_self_attention(self, x, mask, causal: bool, norm=None):
        """What `forward` computes for self-attention, in three nodes: Q, K and V from one
        GEMM on [W_q | W_k | W_v] (after `norm`, folded into it when it is a LayerNorm),
        then `fused_self_attention` (heads split and merged inside), then W_o. Used inside
        `fast_attention()`."""
        projections = (self.W_q, self.W_k, self.W_v)
        # 1/sqrt(d_k) goes into W_q's columns, (d_model, d_model), rather than onto every
        # (T, T) score and every row of dQ and dK: the same product, fewer passes.
        scale = 1.0 / math.sqrt(self.d_k)
        weight = mt.concat([self.W_q.weight * scale, self.W_k.weight, self.W_v.weight], axis=1)
        bias = None if self.W_q.bias is None else mt.concat(
            [self.W_q.bias * scale, self.W_k.bias, self.W_v.bias])
        if norm is not None and folds_norm(norm, projections):
            qkv = F.layer_norm_linear(x, norm.weight, norm.bias, weight, bias, eps=norm.eps)
        else:
            qkv = F.linear(x if norm is None else norm(x), weight, bias)
        batch, length, _ = x.shape
        heads_shape = (batch, self.n_heads, length, self.d_k)
        additive, allowed = _fast_masks(mask, causal, heads_shape, heads_shape)
        kept = []
        out = fused_self_attention(qkv, additive, n_heads=self.n_heads,
                                   n_kv_heads=self.n_kv_heads, allowed=allowed,
                                   scale=1.0, keep_weights=kept)
        self.last_weights = kept.pop()
        return self.W_o(out)                                            # (B, T, d_model)

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
