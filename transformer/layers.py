"""The blocks of the Transformer: feed-forward, positional encoding, encoder and decoder
layers and stacks. Each layer wraps its sublayers in a residual connection and LayerNorm:
post-LN `norm(x + sublayer(x))` as in the paper (`norm_first=False`), or pre-LN
`x + sublayer(norm(x))` (`norm_first=True`, as GPT-2; trains without warm-up).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

import microtensor as mt
from microtensor.errors import op_error
from microtensor.nn import GELU, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, ReLU

from .attention import MultiHeadAttention


class FeedForward(Module):
    """FFN(x) = activation(x W_1 + b_1) W_2 + b_2, applied at every position alike.

    >>> FeedForward(16, 64, activation="gelu")(mt.randn(2, 5, 16)).shape
    (2, 5, 16)
    """

    ACTIVATIONS: ClassVar[dict] = {"relu": ReLU, "gelu": GELU}

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise op_error("FeedForward", f"activation must be one of "
                           f"{sorted(self.ACTIVATIONS)}, got {activation!r}")
        self.W_1 = Linear(d_model, d_ff)
        self.activation = self.ACTIVATIONS[activation]()
        self.dropout = Dropout(dropout)
        self.W_2 = Linear(d_ff, d_model)

    def forward(self, x):
        return self.W_2(self.dropout(self.activation(self.W_1(x))))


def sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
    """The paper's encoding, (max_len, d_model):
    PE[pos, 2i] = sin(pos / 10000^(2i / d_model)),  PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model)).
    Each pair of dimensions is a rotation at its own frequency, so PE[pos + k] is a linear
    function of PE[pos]."""
    position = np.arange(max_len)[:, None]                       # (max_len, 1)
    two_i = np.arange(0, d_model, 2)                              # 2i = 0, 2, 4, ...
    angle = position / 10000 ** (two_i / d_model)                 # (max_len, ceil(d/2))
    table = np.zeros((max_len, d_model))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return table.astype(np.float32)


class PositionalEncoding(Module):
    """Add position information to (B, T, d_model) embeddings.

    kind="sinusoidal": the paper's fixed table (`sinusoidal_table`); kind="learned": a
    trained Embedding(max_len, d_model). `offset` shifts positions (a cached decoder's
    new tokens start at the cache length); `positions` (B, T) gives them per token
    (left-padded rows start counting at their first real token).

    >>> PositionalEncoding(16, max_len=32)(mt.zeros(1, 3, 16)).shape
    (1, 3, 16)
    """

    def __init__(self, d_model: int, max_len: int = 512, kind: str = "sinusoidal"):
        super().__init__()
        if kind not in ("sinusoidal", "learned"):
            raise op_error("PositionalEncoding", f"kind must be 'sinusoidal' or 'learned', "
                           f"got {kind!r}")
        self.d_model, self.max_len, self.kind = d_model, max_len, kind
        if kind == "learned":
            self.table = Embedding(max_len, d_model, std=0.02)
        else:
            self.pe = sinusoidal_table(max_len, d_model)   # a constant, not a Parameter

    def forward(self, x, offset: int = 0, positions=None):
        length = x.shape[1]
        if positions is None:
            positions = np.arange(offset, offset + length)
        positions = np.asarray(positions)
        if positions.size and positions.max() >= self.max_len:
            raise op_error("PositionalEncoding", f"position {int(positions.max())} is beyond "
                           f"max_len={self.max_len} (sequence of {length} tokens at offset "
                           f"{offset})", fix="build the model with a larger max_len or feed "
                           "shorter sequences")
        if self.kind == "learned":
            return x + self.table(positions)
        return x + self.pe[positions].astype(x.dtype)

    def vectors(self, dtype) -> np.ndarray:
        """What is added at each position, (max_len, d_model): the learned table's own
        array, or the sinusoidal table in `dtype`."""
        return self.table.weight.data if self.kind == "learned" else self.pe.astype(dtype)

    def extra_repr(self):
        return f"{self.d_model}, max_len={self.max_len}, kind={self.kind!r}"


class _Residual(Module):
    """Shared by the layers: a sublayer wrapped in dropout, residual and LayerNorm."""

    def residual(self, x, norm, sublayer, **options):
        """x + sublayer(norm(x)) (pre-LN) or norm(x + sublayer(x)) (post-LN), dropout on the
        sublayer's output."""
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x), **options))
        return norm(x + self.dropout(sublayer(x, **options)))


class GPTBlock(Module):
    """A GPT-2 decoder layer: pre-LN causal self-attention, then a pre-LN feed-forward;
    each added to the residual stream.

        x = x + attention(layer_norm(x))
        x = x + feed_forward(layer_norm(x))

    `mask`, `causal` and `cache` are as in `MultiHeadAttention`.

    >>> GPTBlock(16, 4, 64)(mt.randn(2, 5, 16), causal=True).shape
    (2, 5, 16)
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 activation: str = "gelu", norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = LayerNorm(d_model, norm_eps)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm2 = LayerNorm(d_model, norm_eps)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x, mask=None, causal: bool = False, cache=None):
        self_cache = None if cache is None else cache.self_attn
        x = x + self.dropout(self.self_attn(self.norm1(x), mask=mask, causal=causal,
                                            cache=self_cache))
        return x + self.dropout(self.ffn(self.norm2(x)))


class EncoderLayer(_Residual):
    """Self-attention then feed-forward, each with residual + LayerNorm.

    >>> EncoderLayer(16, 4, 64)(mt.randn(2, 5, 16)).shape
    (2, 5, 16)
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu"):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout)
        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x, mask=None, causal: bool = False, cache=None):
        self_cache = None if cache is None else cache.self_attn
        x = self.residual(x, self.norm1, self.self_attn, mask=mask, causal=causal,
                          cache=self_cache)
        return self.residual(x, self.norm2, self.ffn)


class DecoderLayer(_Residual):
    """Masked self-attention, cross-attention on the encoder memory, feed-forward; each
    with residual + LayerNorm. `self_mask` and `memory_mask` are boolean (True = may
    attend); the self-attention is always causal.

    >>> DecoderLayer(16, 4, 64)(mt.randn(2, 5, 16), memory=mt.randn(2, 7, 16)).shape
    (2, 5, 16)
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu"):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout)
        self.norm1, self.norm2, self.norm3 = (LayerNorm(d_model) for _ in range(3))
        self.dropout = Dropout(dropout)

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None):
        self_cache = None if cache is None else cache.self_attn
        cross_cache = None if cache is None else cache.cross_attn
        x = self.residual(x, self.norm1, self.self_attn, mask=self_mask, causal=True,
                          cache=self_cache)
        x = self.residual(x, self.norm2, self.cross_attn, context=memory, mask=memory_mask,
                          cache=cross_cache)
        return self.residual(x, self.norm3, self.ffn)


class Encoder(Module):
    """`n_layers` EncoderLayers; a final LayerNorm when pre-LN (the residual stream is
    otherwise never normalised)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int,
                 dropout: float = 0.0, norm_first: bool = False, activation: str = "relu"):
        super().__init__()
        self.layers = ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first,
                                              activation) for _ in range(n_layers))
        self.norm = LayerNorm(d_model) if norm_first else None

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask=mask)
        return x if self.norm is None else self.norm(x)


class Decoder(Module):
    """`n_layers` DecoderLayers; a final LayerNorm when pre-LN. `cache` is a KVCache."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int,
                 dropout: float = 0.0, norm_first: bool = False, activation: str = "relu"):
        super().__init__()
        self.layers = ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first,
                                              activation) for _ in range(n_layers))
        self.norm = LayerNorm(d_model) if norm_first else None

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None):
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, self_mask, memory_mask,
                      cache=None if cache is None else cache.layers[i])
        return x if self.norm is None else self.norm(x)


def key_mask(valid) -> np.ndarray:
    """A (B, Tk) boolean key mask (True = real token) as (B, 1, 1, Tk), broadcastable to
    (B, h, Tq, Tk) scores; masks with more axes pass through."""
    valid = np.asarray(valid.data if isinstance(valid, mt.Tensor) else valid)
    return valid[:, None, None, :] if valid.ndim == 2 else valid


def positions_from_valid(valid: np.ndarray) -> np.ndarray:
    """Positions (B, T) counted over real tokens: a left-padded row starts at 0 at its
    first real token (padding positions get 0)."""
    return np.maximum(np.cumsum(valid, axis=1) - 1, 0)


def check_cache_mode(where: str, cache) -> None:
    """Refuse a KV cache while gradients are recorded: a cache is for inference, under
    `mt.no_grad()`."""
    if cache is not None and mt.is_grad_enabled():
        raise op_error(where, "a KV cache holds plain arrays with no gradient, so it is for "
                       "inference only", RuntimeError,
                       "wrap the call in `with mt.no_grad():` (generate and "
                       "greedy_decode do this)")
