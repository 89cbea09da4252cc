"""The parts today's decoders (Llama, Mistral, Qwen, SmolLM) swap into the 2017 block:
RMSNorm for LayerNorm, a SwiGLU feed-forward, rotary positions (`rope.py`) and grouped-query
attention (`MultiHeadAttention(n_kv_heads=...)`), no biases anywhere, pre-norm residuals:

    x = x + attention(rms_norm(x), rotated by position)
    x = x + swiglu(rms_norm(x))

    >>> from transformer.rope import RotaryEmbedding
    >>> block = LlamaBlock(d_model=32, n_heads=4, n_kv_heads=2, d_ff=64)
    >>> rotation = RotaryEmbedding(8)(np.arange(5))
    >>> block(mt.randn(2, 5, 32), rotation=rotation, causal=True).shape
    (2, 5, 32)
"""
from __future__ import annotations

import microtensor.functional as F
from microtensor.nn import Dropout, Linear, Module, RMSNorm

from .attention import MultiHeadAttention


class SwiGLU(Module):
    """SwiGLU(x) = (silu(x W_gate) * (x W_up)) W_down (Shazeer 2020, as Llama uses it).

    The gate decides, per hidden unit, how much of the up-projection passes: a GLU with
    SiLU as the gate's activation. Three matrices instead of FeedForward's two, so a d_ff
    about 8/3 d_model costs what a 4 d_model two-matrix FFN does. silu(x) = x * sigmoid(x)
    (`F.silu`, also called swish). No biases by default (Llama has none). `dropout` acts
    on the gated hidden units while training.

    >>> SwiGLU(16, 48)(mt.randn(2, 5, 16)).shape
    (2, 5, 16)
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.W_gate = Linear(d_model, d_ff, bias=bias)
        self.W_up = Linear(d_model, d_ff, bias=bias)
        self.dropout = Dropout(dropout)
        self.W_down = Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        hidden = F.silu(self.W_gate(x)) * self.W_up(x)                # (..., d_ff)
        return self.W_down(self.dropout(hidden))


class LlamaBlock(Module):
    """A Llama decoder layer: pre-norm (RMSNorm) grouped-query self-attention with rotary
    positions, then a pre-norm SwiGLU; each added to the residual stream. No biases.

    `rotation` is the `Rotation` of this call's positions (the model computes it once for
    all layers); `mask`, `causal` and `cache` are as in `MultiHeadAttention`.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_kv_heads: int | None = None,
                 norm_eps: float = 1e-6, dropout: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(d_model, norm_eps)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, bias=False,
                                            n_kv_heads=n_kv_heads)
        self.norm2 = RMSNorm(d_model, norm_eps)
        self.ffn = SwiGLU(d_model, d_ff, dropout=dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x, rotation=None, mask=None, causal: bool = False, cache=None):
        self_cache = None if cache is None else cache.self_attn
        x = x + self.dropout(self.self_attn(self.norm1(x), mask=mask, causal=causal,
                                            cache=self_cache, rotation=rotation))
        return x + self.dropout(self.ffn(self.norm2(x)))

