"""The fast forms of the Transformer's modules (see `transformer.fast`).

Each form takes the module and the arguments of its `forward`, gives `forward`'s numbers
and gradients, and calls `forward` itself where it has nothing faster. A form that skips
a sub-module's call (a LayerNorm folded into the product after it, the three Q/K/V
Linears as one product) does so only when nothing watches that sub-module: a forward hook
or a replaced `forward` always sees its module called.
"""
from __future__ import annotations

import math

import microtensor as mt
import microtensor.functional as F
from microtensor.nn import GELU, LayerNorm, fast_form, watched

from ..attention import (
    MultiHeadAttention,
    attention_masks,
    merge_heads,
    repeat_kv_heads,
)
from ..layers import FeedForward, GPTBlock
from ..llama import SwiGLU
from ..lm import DecoderLM
from .attention import fused_attention, fused_self_attention
from .decode import FastDecoder, FeedForwardStep, cached_self_attention
from .feed_forward import fused_feed_forward
from .head import matmul_transposed


def folds(norm, x, *linears) -> bool:
    """Whether a LayerNorm `norm` may be folded into the product on the `linears` (side
    by side) that follows it, for input x: when nothing watches them, and when it pays.

    Folding moves the norm's affine from the activations onto the weights: its passes
    (scale and shift forward; their two gradients, and the gradient through them,
    backward) go over the (d, out) matrices instead of the (rows, d) activations, and
    one node does the work of two. So it pays while the matrices are small (they stay in
    the cache, and a node's own cost is what counts) or outnumber the activations' rows:
    the reference model's 1,024 rows against W_1's 512 columns, not GPT-2's 512 rows
    (batch 4 x 128) against W_1's 768 x 3,072 floats."""
    if type(norm) is not LayerNorm or watched([norm, *linears]):
        return False
    weights = [linear.weight for linear in linears]
    return (sum(weight.data.nbytes for weight in weights) <= FOLD_MAX_BYTES
            or math.prod(x.shape[:-1]) >= sum(weight.shape[1] for weight in weights))


FOLD_MAX_BYTES = 1 << 20


@fast_form(MultiHeadAttention)
def multi_head_attention(attn, x, context=None, mask=None, causal: bool = False, cache=None,
                         rotation=None, *, norm=None):
    """MultiHeadAttention.forward with attention as one fused node; self-attention without
    a cache or rotation also takes Q, K and V from one product (`packed_self_attention`).
    `norm`, a LayerNorm that a block hands over, is applied to x first (folded into that
    product when it can be). The weights in `last_weights` are then a constant tensor."""
    if attn.dropout_p and attn.training and mt.is_dropout_enabled():
        # dropout on the weights needs them as a tensor of the graph: the textbook form
        return attn.forward(x if norm is None else norm(x), context, mask, causal, cache,
                            rotation)
    attn._check_inputs(x, context, rotation)
    if (cache is not None and context is None and not mt.is_grad_enabled()
            and not watched([attn.W_q, attn.W_k, attn.W_v, attn.W_o])):
        if norm is not None:
            x, norm = norm(x), None
        out = cached_self_attention(attn, x, mask, causal, cache, rotation)
        if out is not None:
            return out
    if (context is None and cache is None and rotation is None
            and not watched([attn.W_q, attn.W_k, attn.W_v])):
        return packed_self_attention(attn, x, mask, causal, norm)
    if norm is not None:
        x = norm(x)
    q, k, v = attn.project(x, context, cache, rotation)
    k, v = repeat_kv_heads(k, attn.n_heads), repeat_kv_heads(v, attn.n_heads)
    bias, allowed = attention_masks(mask, causal, q.shape, k.shape)
    kept = []   # receives the weights array, the fused op's second result
    out = fused_attention(q, k, v, bias, allowed=allowed, scale=1.0 / math.sqrt(attn.d_k),
                          keep_weights=kept)
    attn.last_weights = kept.pop()   # wrapped as a constant when read
    return attn.W_o(merge_heads(out))


def packed_self_attention(attn, x, mask, causal: bool, norm=None):
    """Self-attention in three nodes: Q, K and V from one GEMM on [W_q | W_k | W_v]
    (after `norm`, folded into it when it is a LayerNorm: `layer_norm_linear`), then
    `fused_self_attention` (heads split and merged inside), then W_o."""
    # 1/sqrt(d_k) goes into W_q's columns, (d_model, d_model), rather than onto every
    # (T, T) score and every row of dQ and dK: the same product, fewer passes.
    scale = 1.0 / math.sqrt(attn.d_k)
    weight = mt.concat([attn.W_q.weight * scale, attn.W_k.weight, attn.W_v.weight], axis=1)
    bias = None if attn.W_q.bias is None else mt.concat(
        [attn.W_q.bias * scale, attn.W_k.bias, attn.W_v.bias])
    if norm is not None and folds(norm, x, attn.W_q, attn.W_k, attn.W_v):
        qkv = F.layer_norm_linear(x, norm.weight, norm.bias, weight, bias, eps=norm.eps)
    else:
        qkv = F.linear(x if norm is None else norm(x), weight, bias)
    heads_shape = (x.shape[0], attn.n_heads, x.shape[1], attn.d_k)
    additive, allowed = attention_masks(mask, causal, heads_shape, heads_shape)
    kept = []
    out = fused_self_attention(qkv, additive, n_heads=attn.n_heads, n_kv_heads=attn.n_kv_heads,
                               allowed=allowed, keep_weights=kept)
    attn.last_weights = kept.pop()   # wrapped as a constant when read
    return attn.W_o(out)                                            # (B, T, d_model)


def feed_forward(ffn, x, norm):
    """FeedForward.forward on norm(x), the LayerNorm folded into W_1 when it can be: with
    GELU, no dropout drawn and nothing watching, the whole of it as one node
    (`fused_feed_forward`)."""
    if (folds(norm, x, ffn.W_1) and type(ffn.activation) is GELU and not draws(ffn.dropout)
            and not watched([ffn.activation, ffn.dropout, ffn.W_2])):
        return fused_feed_forward(x, norm.weight, norm.bias, ffn.W_1.weight, ffn.W_1.bias,
                                  ffn.W_2.weight, ffn.W_2.bias, eps=norm.eps)
    if folds(norm, x, ffn.W_1):
        hidden = F.layer_norm_linear(x, norm.weight, norm.bias, ffn.W_1.weight, ffn.W_1.bias,
                                     eps=norm.eps)
    else:
        hidden = ffn.W_1(norm(x))
    return ffn.W_2(ffn.dropout(ffn.activation(hidden)))


def draws(dropout) -> bool:
    """Whether a Dropout module would draw a mask now (else it hands its input on)."""
    return bool(dropout.p and dropout.training and mt.is_dropout_enabled())


@fast_form(FeedForward)
@fast_form(SwiGLU)
def feed_forward_without_grad(ffn, x):
    """FeedForward.forward (or SwiGLU's) on the arrays when no gradient is recorded, no
    dropout is drawn and nothing watches its sub-modules: one op instead of four or five
    (decoding's `FeedForwardStep`, the weights read in place); else `forward` itself."""
    first = ffn.W_gate if type(ffn) is SwiGLU else ffn.W_1
    if (mt.is_grad_enabled() or draws(ffn.dropout)
            or not FeedForwardStep.runs(ffn) or watched(ffn.children())
            or not isinstance(x, mt.Tensor) or x.dtype.kind != "f" or x.ndim == 0
            or x.shape[-1] != first.weight.shape[0]):
        return ffn.forward(x)     # its Linears check the input and word any error
    rows = x.data.reshape(-1, x.shape[-1])
    return mt.Tensor(FeedForwardStep(ffn)(rows).reshape(*x.shape[:-1], -1))


@fast_form(GPTBlock)
def gpt_block(block, x, mask=None, causal: bool = False, cache=None):
    """GPTBlock.forward with each LayerNorm folded into the product after it, unless a
    hook watches the sublayer (it then sees the normalised input, as it expects)."""
    self_cache = None if cache is None else cache.self_attn
    if watched([block.self_attn]):
        attended = block.self_attn(block.norm1(x), mask=mask, causal=causal, cache=self_cache)
    else:
        attended = multi_head_attention(block.self_attn, x, mask=mask, causal=causal,
                                        cache=self_cache, norm=block.norm1)
    x = x + block.dropout(attended)
    if watched([block.ffn]):
        return x + block.dropout(block.ffn(block.norm2(x)))
    return x + block.dropout(feed_forward(block.ffn, x, block.norm2))


@fast_form(DecoderLM)
def decoder_lm(model, ids, cache=None, attention_mask=None):
    """DecoderLM.forward; a cached step without gradients runs `FastDecoder` on the
    parameters' arrays, when it knows every block and nothing watches a module; a tied
    model without a cache ends in `matmul_transposed` (`tied_decoder_lm`)."""
    if cache is not None and not mt.is_grad_enabled() and FastDecoder.decodes(model, cache):
        return FastDecoder.run(model, ids, cache, attention_mask)
    if cache is None and model.head is None:
        return tied_decoder_lm(model, ids, attention_mask)
    return model.forward(ids, cache=cache, attention_mask=attention_mask)


def tied_decoder_lm(model, ids, attention_mask=None):
    """DecoderLM.forward for a model whose head is its token table, the head as one
    `matmul_transposed` node instead of `x @ E.swapaxes(0, 1)`: the same logits, and the
    table's gradient made in its own layout (transformer/fast/head.py says why that
    matters at 50,257 x 768)."""
    return matmul_transposed(model.features(ids, None, attention_mask), model.tok_embed.weight)
