"""Cached decoding without a graph: a DecoderLM step with a KV cache, in plain NumPy.

Under `mt.no_grad()` nothing is recorded, yet the composed forward still pays, for every
op, what recording needs: wrapping arrays in Tensors, checking inputs, making a backward
closure that is never called. At batch 1 a step of a small model is ~100 such ops and
~2,000 Python calls per token, and that bookkeeping, not the arithmetic, sets the pace.
`FastDecoder` does the same arithmetic on the parameters' arrays, in fewer steps:

- in a small model, a norm's weight (and bias) folded into the product that follows it:
  (x_hat * w + b) @ W + c = x_hat @ (w[:, None] * W) + (b @ W + c), and Q, K and V from
  one product (the three matrices side by side, 1/sqrt(d_k) folded into the queries'
  columns); in a large one (GPT-2's size) every matrix is read in place, by BLAS, and the
  norm's affine applied to the token's row (`NormThenLinears`): a token's time is then
  reading the weights once, and copies of them would only double the memory;
- with RoPE the queries and keys rotated together, since they sit side by side;
- attention as the fused kernel's forward (one new query needs no causal mask);
  grouped-query heads as rows of their K/V head, so K and V are never repeated;
- GELU's value alone, without the derivative the training op writes for its backward;
- the residual stream updated in place; cos/sin of every position computed once.

Decoding follows the modules. Each block is decoded by its type's registered step
(`decode_step`; `PreNormBlockStep` for GPTBlock and LlamaBlock, which reads their norms,
attention and feed-forward), or by its own forward (`BlockForward`), in which
MultiHeadAttention and FeedForward/SwiGLU run as cached steps on the arrays
(`AttentionStep`, `FeedForwardStep`, through their fast forms): a new block decodes
correctly and fast with no edit here. Folded matrices are a snapshot, made at a cache's
first fast step (the cache belongs to the weights its keys and values came from); the
others are the parameters' own arrays. The textbook form (`DecoderLM.forward` through
its blocks) stays what runs with gradients and what hooks see, and tests check the two
give the same logits (to rounding) and the same greedy tokens.

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=16, d_model=8, n_heads=2, n_layers=1, d_ff=16,
    ...                              max_len=8))
    >>> with mt.no_grad():
    ...     cache = lm.new_cache(batch=1)
    ...     logits = lm(np.array([[1, 2, 3]]), cache=cache)   # runs FastDecoder
    >>> cache.fast_decoder is not None
    True
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt
from microtensor import kernels
from microtensor.functional import embedding, silu
from microtensor.nn import GELU, LayerNorm, ReLU, RMSNorm, watched
from microtensor.ops.elementwise import gelu_tanh_gate

from ..attention import MultiHeadAttention, causal_mask
from ..layers import FeedForward, GPTBlock
from ..llama import LlamaBlock, SwiGLU
from ..rope import Rotation
from .attention import attend


def fold(norm, linears) -> tuple[np.ndarray, np.ndarray | None]:
    """The linears side by side as one (d, sum of outs) matrix and bias, with the norm's
    weight and bias folded in: norm(x) @ W + c = x_hat @ (w[:, None] * W) + (b @ W + c);
    with no norm, the matrices side by side. Written in one pass, a copy of these
    matrices only (the others are used in place)."""
    weights = [linear.weight.data for linear in linears]
    scale = np.ones((1, 1), weights[0].dtype) if norm is None else norm.weight.data[:, None]
    folded = np.empty((weights[0].shape[0], sum(w.shape[1] for w in weights)),
                      np.result_type(scale, *weights))
    start = 0
    for weight in weights:
        np.multiply(scale, weight, out=folded[:, start:start + weight.shape[1]])
        start += weight.shape[1]
    bias = side_by_side_bias(linears, folded.dtype)
    shift = getattr(norm, "bias", None)
    if shift is not None:
        unscaled = np.concatenate(weights, axis=1)
        bias = shift.data @ unscaled + (0 if bias is None else bias)
    return folded, bias


def side_by_side_bias(linears, dtype) -> np.ndarray | None:
    """The linears' biases side by side (zeros for one without), or None if none has one."""
    if all(linear.bias is None for linear in linears):
        return None
    return np.concatenate([np.zeros(linear.weight.shape[1], dtype) if linear.bias is None
                           else linear.bias.data for linear in linears])


# A norm is folded into the products after it only while they are small. A fold copies
# their matrices (once per cache); for a small model that buys one product instead of
# three and no elementwise work on the row, where a token's NumPy calls are the cost. At
# GPT-2's size the copies would be every block's weights again (340 MB), while the norm's
# affine on one token's row is 768 multiplies.
FOLD_MAX_BYTES = 1 << 20


class NormThenLinears:
    """norm(x) @ [W_1 | ... | W_n] + [c_1 | ... | c_n] for rows x_hat that are normalised
    already (the norm's weight and bias not yet applied; with `norm` None, x itself):
    the linears side by side, as one folded matrix (`fold`, made once per cache) while
    they are small and there is something to fold, else each matrix read where it is.
    `scaled`, (columns, factor), multiplies those output columns (1/sqrt(d_k) on the
    queries: folded into the matrix, or applied to the product's few columns)."""

    def __init__(self, norm, linears, scaled: tuple[slice, float] | None = None):
        weights = [linear.weight.data for linear in linears]
        self.width = sum(weight.shape[1] for weight in weights)
        self.scaled = scaled
        foldable = norm is not None or scaled is not None
        if foldable and sum(weight.nbytes for weight in weights) <= FOLD_MAX_BYTES:
            self.weights = None
            self.folded, self.bias = fold(norm, linears)
            if scaled is not None:
                columns, factor = scaled
                self.folded[:, columns] *= factor
                if self.bias is not None:
                    self.bias[columns] *= factor
            return
        self.weights = weights
        self.norm_weight = self.norm_bias = None
        if norm is not None:
            self.norm_weight = norm.weight.data
            self.norm_bias = None if getattr(norm, "bias", None) is None else norm.bias.data
        self.dtype = np.result_type(*weights) if norm is None \
            else np.result_type(self.norm_weight, *weights)
        self.bias = side_by_side_bias(linears, self.dtype)

    def __call__(self, x_hat: np.ndarray) -> np.ndarray:
        """The product for normalised rows x_hat (N, d), which it may overwrite."""
        if self.weights is None:
            return affine(x_hat, self.folded, self.bias)
        if self.norm_weight is not None:
            x_hat *= self.norm_weight
            if self.norm_bias is not None:
                x_hat += self.norm_bias
        if len(self.weights) == 1:
            out = affine(x_hat, self.weights[0], self.bias)
        else:
            out = np.empty((len(x_hat), self.width), np.result_type(x_hat, self.dtype))
            start = 0
            for weight in self.weights:
                end = start + weight.shape[1]
                np.matmul(x_hat, weight, out=out[:, start:end])   # BLAS, the matrix in place
                start = end
            if self.bias is not None:
                out += self.bias
        if self.scaled is not None:
            columns, factor = self.scaled
            out[:, columns] *= factor
        return out


def affine(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x @ weight + bias for rows x (N, in), weight (in, out).

    A small matrix (up to VECMAT_MAX_BYTES: it stays in the CPU's cache) meets up to
    MATVEC_ROWS rows through `np.vecmat`, one vector-matrix product per row, on one
    thread. As BLAS calls, a 16-token prefill woke OpenBLAS's second thread, and on a
    busy 2-core machine the one-token steps after it then ran several times slower
    (docs/performance.md); such products are too small to share. A larger matrix goes
    to `x @ weight`: on a quiet machine the two read GPT-2's weights equally fast, but on
    a loaded one BLAS was an order of magnitude faster (docs/performance.md has the
    figures). More rows (a long prompt) are one GEMM."""
    if len(x) <= MATVEC_ROWS and weight.nbytes <= VECMAT_MAX_BYTES and _vecmat is not None:
        out = _vecmat(x, weight)
    else:
        out = x @ weight
    if bias is not None:
        out += bias
    return out


MATVEC_ROWS = 64
VECMAT_MAX_BYTES = 1 << 19
_vecmat = getattr(np, "vecmat", None)   # NumPy >= 2.2; older ones use the GEMM


def gelu_in_place(x: np.ndarray) -> np.ndarray:
    """GELU's tanh form, 0.5 x (1 + tanh(c (x + k x^3))), written over x: `gelu_tanh`'s
    forward steps, so the same numbers, without the derivative it also writes for a
    backward that decoding never runs (8 NumPy calls instead of about 20; on one token's
    few hundred numbers, the calls are the cost)."""
    x_squared = np.multiply(x, x)
    x *= gelu_tanh_gate(x, x_squared, out=x_squared)
    return x


def relu_in_place(x: np.ndarray) -> np.ndarray:
    """max(x, 0), written over x."""
    return np.maximum(x, 0, out=x)


ACTIVATIONS = {GELU: gelu_in_place, ReLU: relu_in_place}


class StepInputs:
    """What every layer of one cached step shares: the batch and the new positions'
    count, where they go in the cache (`start`, `end`), which keys are real tokens
    (`key_valid`, (B, end)) and RoPE's cos and sin at the new positions ((B, T, 1, d_k)
    each, or None)."""

    def __init__(self, batch: int, n_new: int, start: int, key_valid: np.ndarray,
                 rotation: tuple | None = None):
        self.batch, self.n_new = batch, n_new
        self.start, self.end = start, start + n_new
        self.key_valid, self.rotation = key_valid, rotation
        self._allowed = {}

    def allowed(self, group: int) -> np.ndarray | None:
        """Which keys each query row may see, (B, 1, group * T, end), for attention with
        `group` query heads per K/V head; None when every query sees every key (one new
        token, no padding). Made once per step and group, shared by every layer."""
        if group not in self._allowed:
            if self.n_new == 1 and self.key_valid.all():
                self._allowed[group] = None
            else:
                # Query rows are (group, T) per K/V head (see `AttentionStep`): the causal
                # mask repeats for each query head of the group.
                lower = np.tile(causal_mask(self.n_new, self.end), (group, 1))
                self._allowed[group] = self.key_valid[:, None, None, :] & lower
        return self._allowed[group]


class AttentionStep:
    """A MultiHeadAttention's cached causal self-attention on rows, after `norm` when
    given (folded into the Q/K/V product): Q, K and V from one product (the three
    matrices side by side, 1/sqrt(d_k) folded into the queries' columns), the new keys
    and values written into the layer's cache, the fused kernel's attention, W_o."""

    def __init__(self, attention, norm=None):
        self.attention = attention
        self.n_heads, self.n_kv_heads = attention.n_heads, attention.n_kv_heads
        self.d_k = attention.d_k
        # 1/sqrt(d_k) goes onto the queries' columns (into the matrix when it is folded)
        # rather than onto every step's scores; RoPE's rotation is linear, so it commutes.
        queries = slice(0, self.n_heads * self.d_k)
        self.qkv = NormThenLinears(norm, [attention.W_q, attention.W_k, attention.W_v],
                                   scaled=(queries, 1 / math.sqrt(self.d_k)))
        self.W_o = attention.W_o.weight.data
        self.b_o = None if attention.W_o.bias is None else attention.W_o.bias.data

    def __call__(self, h: np.ndarray, self_cache, step: StepInputs) -> np.ndarray:
        """The output projection, (B*T, d), of the new rows h (B*T, d) attending to
        every cached key and themselves."""
        n_heads, n_kv_heads, d_k = self.n_heads, self.n_kv_heads, self.d_k
        batch, n_new, group = step.batch, step.n_new, n_heads // n_kv_heads
        heads = self.qkv(h).reshape(batch, n_new, n_heads + 2 * n_kv_heads, d_k)
        if step.rotation is not None:
            rotate_in_place(heads[:, :, :n_heads + n_kv_heads], *step.rotation)
        keys = heads[:, :, n_heads:n_heads + n_kv_heads]              # (B, T, h_kv, d_k)
        values = heads[:, :, n_heads + n_kv_heads:]
        self_cache.keys[:, :, step.start:step.end] = keys.swapaxes(1, 2)
        self_cache.values[:, :, step.start:step.end] = values.swapaxes(1, 2)
        # Each K/V head answers its group of query heads: their queries become rows,
        # (B, h_kv, group * T, d_k), so one product serves the group (no repeated K/V).
        q = (heads[:, :, :n_heads].reshape(batch, n_new, n_kv_heads, group, d_k)
             .transpose(0, 2, 3, 1, 4).reshape(batch, n_kv_heads, group * n_new, d_k))
        # (1/sqrt(d_k) is in the queries already: scale 1)
        out, weights = attend(q, self_cache.keys[:, :, :step.end],
                              self_cache.values[:, :, :step.end], allowed=step.allowed(group))
        # Kept as the array: `last_weights` wraps it when read (most never are).
        self.attention.last_weights = weights.reshape(batch, n_heads, n_new, step.end)
        out = (out.reshape(batch, n_kv_heads, group, n_new, d_k).transpose(0, 3, 1, 2, 4)
               .reshape(batch * n_new, n_heads * d_k))                 # heads side by side
        return affine(out, self.W_o, self.b_o)


def cached_self_attention(attn, x, mask, causal: bool, self_cache, rotation):
    """`attn(x, mask=mask, causal=causal, cache=self_cache, rotation=rotation)` without
    gradients, by the layer cache's `AttentionStep` (made at its first such call, from
    the weights of that moment, as its keys and values are); None where that step does
    not apply: a mask other than a key mask (B, 1, 1, keys), or several new queries
    without `causal`."""
    batch, n_new, _ = x.shape
    start = self_cache.owner.length
    key_valid = key_mask_rows(mask, batch, start + n_new)
    if key_valid is None or not (causal or n_new == 1):
        return None
    self_cache.owner.check_room(n_new)
    if rotation is not None:                           # (B, 1, T, d_k) -> (B, T, 1, d_k)
        rotation = tuple(np.swapaxes(part, 1, 2) for part in rotation)
    if self_cache.fast_step is None or self_cache.fast_step.attention is not attn:
        self_cache.fast_step = AttentionStep(attn)
    step = StepInputs(batch, n_new, start, key_valid, rotation)
    out = self_cache.fast_step(x.data.reshape(batch * n_new, -1), self_cache, step)
    return mt.Tensor(out.reshape(batch, n_new, -1))


def key_mask_rows(mask, batch: int, n_keys: int) -> np.ndarray | None:
    """A boolean key mask (B, 1, 1, keys), as `DecoderLM` passes it, as (B, keys) rows
    (every key when `mask` is None); None for any other mask."""
    if mask is None:
        return np.ones((batch, n_keys), bool)
    if isinstance(mask, mt.Tensor):
        mask = mask.data
    if (isinstance(mask, np.ndarray) and mask.dtype == bool
            and mask.shape == (batch, 1, 1, n_keys)):
        return mask[:, 0, 0, :]
    return None


class FeedForwardStep:
    """A FeedForward (activation(x W_1 + b_1) W_2 + b_2) or a SwiGLU (silu(x W_gate) *
    (x W_up) W_down) on rows, after `norm` when given (folded into the first product;
    W_gate and W_up side by side)."""

    def __init__(self, ffn, norm=None):
        if type(ffn) is SwiGLU:
            self.ffn_in = NormThenLinears(norm, [ffn.W_gate, ffn.W_up])
            output, self.activation = ffn.W_down, None
        else:
            self.ffn_in = NormThenLinears(norm, [ffn.W_1])
            output, self.activation = ffn.W_2, ACTIVATIONS[type(ffn.activation)]
        self.W_out = output.weight.data
        self.b_out = None if output.bias is None else output.bias.data

    @staticmethod
    def runs(ffn) -> bool:
        """Whether this step can run `ffn`: a FeedForward with an activation it knows, or
        a SwiGLU (exact types: a subclass may compute something else)."""
        return type(ffn) is SwiGLU or (type(ffn) is FeedForward
                                       and type(ffn.activation) in ACTIVATIONS)

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """The feed-forward's output rows (N, d) for rows h (N, d), normalised when the
        step has a norm (which it may overwrite)."""
        hidden = self.ffn_in(h)
        if self.activation is not None:
            hidden = self.activation(hidden)
        else:
            gate, up = np.split(hidden, 2, axis=1)
            hidden = silu.forward(gate)[0]
            hidden *= up
        return affine(hidden, self.W_out, self.b_out)


# The decoding step of each block type that has one of its own: `make(block)` gives a
# callable `step(x, layer_cache, inputs)` that returns the block's output rows. A block
# with none (or whose sub-modules are not the ones its step reads) runs its own forward
# (`BlockForward`), through the fast forms of its sub-modules. Register with
# `decode_step`, beside the block, as a fast form is registered with `fast_form`.
DECODE_STEPS: dict[type, type] = {}


def decode_step(block_type: type):
    """Register `make(block)` as the cached decoding step of blocks of exactly
    `block_type`; `make.runs(block)` says whether it can run a given one."""
    def register(make):
        DECODE_STEPS[block_type] = make
        return make
    return register


def block_step(block):
    """The decoding step of `block`: its type's registered one when it can run it,
    else the block's own forward."""
    make = DECODE_STEPS.get(type(block))
    return make(block) if make is not None and make.runs(block) else BlockForward(block)


@decode_step(GPTBlock)
@decode_step(LlamaBlock)
class PreNormBlockStep:
    """x + attention(norm1(x)), then x + ffn(norm2(x)), on rows, the residual stream
    updated in place: a GPTBlock (LayerNorm, FeedForward) or a LlamaBlock (RMSNorm,
    SwiGLU; RoPE in `inputs.rotation`). Each norm's weight and bias are folded into the
    product after it, so the norm itself only normalises."""

    def __init__(self, block):
        self.attention = AttentionStep(block.self_attn, norm=block.norm1)
        self.feed_forward = FeedForwardStep(block.ffn, norm=block.norm2)
        self.norm_eps = (block.norm1.eps, block.norm2.eps)
        self.centre = type(block.norm1) is LayerNorm   # RMSNorm does not subtract the mean

    @staticmethod
    def runs(block) -> bool:
        """Whether this step can run `block`: its norms, attention and feed-forward of
        the exact types it reads (a subclass may compute something else)."""
        norm = LayerNorm if type(block) is GPTBlock else RMSNorm
        return (type(block.norm1) is norm and type(block.norm2) is norm
                and type(block.self_attn) is MultiHeadAttention
                and FeedForwardStep.runs(block.ffn))

    def __call__(self, x: np.ndarray, layer_cache, inputs: StepInputs) -> np.ndarray:
        """The block's output rows (B*T, d) for its input rows x, updated in place."""
        h = kernels.normalize_rows(x, self.norm_eps[0], self.centre)[0]
        x += self.attention(h, layer_cache.self_attn, inputs)
        h = kernels.normalize_rows(x, self.norm_eps[1], self.centre)[0]
        x += self.feed_forward(h)
        return x


class BlockForward:
    """A block's own forward as a decoding step: the rows as a (B, T, d) tensor, with the
    key mask, the causal flag, the layer's cache and (Llama style) the rotation that
    `DecoderLM.features` would pass. Its attention and feed-forward take their cached
    fast forms (`AttentionStep`, `FeedForwardStep`; transformer/fast/forms.py), so a new
    block decodes fast without a step of its own."""

    def __init__(self, block):
        self.block = block

    def __call__(self, x: np.ndarray, layer_cache, inputs: StepInputs) -> np.ndarray:
        """The block's output rows (B*T, d) for its input rows x (B*T, d)."""
        batch, n_new = inputs.batch, inputs.n_new
        extra = {}
        if inputs.rotation is not None:   # (B, T, 1, d_k) as the step uses it; (B, 1, T, d_k)
            extra["rotation"] = Rotation(*(a.swapaxes(1, 2) for a in inputs.rotation))
        out = self.block(mt.Tensor(x.reshape(batch, n_new, -1)), causal=True,
                         mask=inputs.key_valid[:, None, None, :], cache=layer_cache, **extra)
        return out.data.reshape(batch * n_new, -1)


class FastDecoder:
    """A DecoderLM's cached forward on arrays: `step(ids, positions, cache)` gives the
    logits (B, T, vocab) of T new positions and writes their K and V into `cache`, as
    `DecoderLM.forward(ids, cache=cache)` does through its modules."""

    @staticmethod
    def decodes(model, cache) -> bool:
        """Whether this cached step may run here: when no dropout is drawn, no module has
        a forward hook or a replaced `forward` (what lessons and tools watch runs through
        the modules), and every position is in the position table."""
        if model.training and model.config.dropout > 0 and mt.is_dropout_enabled():
            return False
        if model.rotary is None and cache.max_len > model.config.max_len:
            return False  # the textbook path says which position is out of range
        return not watched(model.modules() if cache.fast_decoder is None
                           else cache.fast_decoder.modules)

    @staticmethod
    def run(model, ids, cache, attention_mask=None):
        """`model(ids, cache=cache)` through a FastDecoder, made at the cache's first fast
        step (it folds the weights of that moment, which the cached K/V come from)."""
        ids, valid, _, positions = model.read_inputs(ids, cache, attention_mask)
        if cache.fast_decoder is None:
            cache.fast_decoder = FastDecoder(model, cache)
        logits = cache.fast_decoder.step(ids, positions, cache)
        cache.advance(valid)
        return mt.Tensor(logits)

    def __init__(self, model, cache):
        self.modules = list(model.modules())      # to see new hooks, at every step
        self.tokens = model.tok_embed.weight.data
        dtype = self.tokens.dtype
        self.positions = self.cos = self.sin = None
        if model.rotary is not None:
            # cos and sin of every position the cache can hold, as RotaryEmbedding
            # computes them, looked up per step: (max_len, d_k) each.
            rotation = model.rotary(np.arange(cache.max_len), dtype=dtype)
            self.cos, self.sin = rotation.cos[0, 0], rotation.sin[0, 0]
        else:
            self.positions = model.position.vectors(dtype)
        self.blocks = [block_step(block) for block in model.blocks]
        # The head is used in place, not folded: it can be the largest matrix of all
        # (GPT-2's tied 768 x 50,257), so the final norm keeps its weight and bias.
        self.W_head = self.tokens.T if model.head is None else model.head.weight.data
        self.final_norm = model.norm

    def step(self, ids: np.ndarray, positions: np.ndarray, cache) -> np.ndarray:
        """Logits (B, T, vocab) of the new ids (B, T) at `positions` (B, T), their keys
        and values written into `cache` after its `cache.length` earlier ones."""
        batch, n_new = ids.shape
        x, _ = embedding.forward(ids, self.tokens)       # (B, T, d); refuses bad ids
        if self.positions is not None:
            x = x + self.positions[positions]
        x = x.reshape(batch * n_new, -1)                              # rows (B*T, d)
        rotation = None if self.cos is None else (self.cos[positions][:, :, None],
                                                  self.sin[positions][:, :, None])
        start = cache.length
        inputs = StepInputs(batch, n_new, start, cache.key_valid[:, :start + n_new], rotation)
        for block, layer_cache in zip(self.blocks, cache.layers):
            x = block(x, layer_cache, inputs)
        norm = self.final_norm
        h = kernels.normalize_rows(x, norm.eps, type(norm) is LayerNorm)[0]
        h *= norm.weight.data
        if getattr(norm, "bias", None) is not None:
            h += norm.bias.data
        return affine(h, self.W_head, None).reshape(batch, n_new, -1)


def rotate_in_place(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """`apply_rotary` on an array, in place: x (B, T, heads, d_k) becomes
    x * cos + rotate_half(x) * sin, with cos and sin (B, T, 1, d_k)."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    new_first = first * cos[..., :half] - second * sin[..., :half]
    new_second = second * cos[..., half:] + first * sin[..., half:]
    first[...] = new_first
    second[...] = new_second
