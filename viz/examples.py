"""Graphs worth drawing: one attention head from microtensor primitives, the backprop
lesson's head over 我 想 吃 ("I want to eat"; the README's top picture), and the loss of a
small `transformer.DecoderLM` (the model-scale picture in the README).

    >>> from viz.examples import attention_example
    >>> loss, tensors = attention_example()
    >>> sorted(tensors)
    ['W_k', 'W_q', 'W_v', 'X']
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt
from microtensor.autograd import backward_steps
from microtensor.tensor import Tensor


def attention_example(tokens: int = 3, d_model: int = 4, d_k: int = 2, seed: int = 0,
                      dtype=np.float32) -> tuple[Tensor, dict]:
    """One head of self-attention and a loss:
    loss = mean(out * out),  out = softmax((X W_q)(X W_k)^T / sqrt(d_k)) (X W_v).

    X feeds three products (Q, K, V), so its gradient is the sum of three contributions;
    `out` is used twice by the loss, so it too adds two. Returns (loss, {name: tensor})."""
    rng = np.random.default_rng(seed)

    def leaf(name, *shape):
        return mt.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True,
                         name=name)

    X = leaf("X", tokens, d_model)                       # (T, d_model) token vectors
    W_q, W_k, W_v = (leaf(n, d_model, d_k) for n in ("W_q", "W_k", "W_v"))
    Q, K, V = X @ W_q, X @ W_k, X @ W_v                  # (T, d_k) each
    scores = Q @ K.T / math.sqrt(d_k)                    # (T, T); a Python float keeps dtype
    weights = scores.softmax(axis=-1)                    # each row sums to 1
    out = weights @ V                                    # (T, d_k)
    loss = (out * out).mean()
    return loss, {"X": X, "W_q": W_q, "W_k": W_k, "W_v": W_v}


def decoder_lm_example(n_layers: int = 4, d_model: int = 32, n_heads: int = 4,
                       vocab: int = 50, tokens: int = 8, seed: int = 0):
    """The cross-entropy loss of a `transformer.DecoderLM` on one batch of 2 x `tokens`
    ids, and the model: the graph a learner's own model makes. Returns (loss, model).

    `decoder_lm_picture` draws the README's picture of the 4-layer model."""
    import microtensor.functional as F
    from transformer import DecoderLM, LMConfig

    mt.manual_seed(seed)
    model = DecoderLM(LMConfig.gpt2(vocab, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                                    d_ff=4 * d_model, max_len=tokens))
    ids = mt.tensor(np.arange(2 * tokens).reshape(2, tokens) % vocab)
    return F.cross_entropy(model(ids), ids), model


def attention_picture():
    """The graph of `attention_example` after backward, the route to W_q lit: the picture
    `python -m viz example` renders (viz/assets/attention_backprop.svg)."""
    from .graph import draw  # here, not at the top: viz.graph's tests import this module
    loss, tensors = attention_example()
    return draw(loss, highlight=tensors["W_q"], steps=list(backward_steps(loss)),
                title="How dL/dW_q flows back: mean, out*out, weights@V, softmax, "
                      "/sqrt(d_k), Q K^T, X W_q")


def decoder_lm_picture():
    """The loss graph of a 4-layer `decoder_lm_example`, each block folded into a box as
    `viz.draw` folds a graph of that size by default (viz/assets/decoder_lm_4_layers.svg)."""
    from .graph import draw
    loss, model = decoder_lm_example(4)
    return draw(loss, params=model,
                title="4-layer DecoderLM, loss at the top: each block folded into a box")


# The backprop lesson's example (viz/lessons/backprop.lesson.py): one head over 我 想 吃
# ("I want to eat"), in float64 so that gradcheck and the hand derivation agree to 1e-12.
BACKPROP_TOKENS = ["我", "想", "吃"]
BACKPROP_D_MODEL, BACKPROP_D_K = 4, 2


def backprop_leaves(tokens: int = len(BACKPROP_TOKENS), d_model: int = BACKPROP_D_MODEL,
                    d_k: int = BACKPROP_D_K, seed: int = 0, dtype=np.float64) -> dict:
    """The backprop lesson's inputs and weights, the same numbers every call (seeded):
    X (tokens, d_model), W_q, W_k, W_v (d_model, d_k) and target (tokens, d_k).

    >>> sorted(backprop_leaves())
    ['W_k', 'W_q', 'W_v', 'X', 'target']
    """
    rng = np.random.default_rng(seed)
    shapes = {"X": (tokens, d_model), "W_q": (d_model, d_k), "W_k": (d_model, d_k),
              "W_v": (d_model, d_k)}
    leaves = {name: mt.tensor(rng.standard_normal(shape), dtype=dtype, name=name,
                              requires_grad=name != "X") for name, shape in shapes.items()}
    leaves["target"] = mt.tensor(rng.standard_normal((tokens, d_k)), dtype=dtype,
                                 name="target")
    return leaves


def backprop_forward(X, W_q, W_k, W_v, target) -> tuple[Tensor, dict]:
    """loss = mean((softmax(Q K^T / sqrt(d_k)) V - target)^2) with Q, K, V = X W_q, X W_k,
    X W_v. Returns (loss, {"Q", "K", "V", "weights", "out": tensor}), each named."""
    from transformer.attention import scaled_dot_product_attention

    Q, K, V = X @ W_q, X @ W_k, X @ W_v
    Q.name, K.name, V.name = "Q", "K", "V"
    # Attention names what it makes (QK^T -> scores -> weights), so the graph and the
    # steps read like the math.
    out, weights = scaled_dot_product_attention(Q, K, V)
    out.name = "out"
    error = out - target
    squared = error ** 2
    loss = squared.mean()
    error.name, squared.name, loss.name = "error", "error^2", "loss"
    return loss, {"Q": Q, "K": K, "V": V, "weights": weights, "out": out}


def backprop_example(tokens: int = len(BACKPROP_TOKENS), d_model: int = BACKPROP_D_MODEL,
                     d_k: int = BACKPROP_D_K) -> tuple[Tensor, dict, dict]:
    """A fresh graph of the backprop lesson's loss: (loss, leaves, parts), where leaves
    are `backprop_leaves()` and parts the forward's named tensors (Q, K, V, weights, out).

    >>> loss, leaves, parts = backprop_example()
    >>> loss.name, sorted(parts)
    ('loss', ['K', 'Q', 'V', 'out', 'weights'])
    """
    leaves = backprop_leaves(tokens, d_model, d_k)
    loss, parts = backprop_forward(leaves["X"], leaves["W_q"], leaves["W_k"], leaves["W_v"],
                                   leaves["target"])
    return loss, leaves, parts


def backprop_picture(tokens: int = len(BACKPROP_TOKENS), d_model: int = BACKPROP_D_MODEL,
                     d_k: int = BACKPROP_D_K):
    """The graph of `backprop_example` after backward, the route to W_q lit: the picture
    at the top of the README (viz/assets/backprop-graph.svg)."""
    from .graph import draw
    loss, leaves, _ = backprop_example(tokens, d_model, d_k)
    return draw(loss, highlight=leaves["W_q"], steps=list(backward_steps(loss)),
                title="How dL/dW_q flows back: loss → mean → (out - target)^2 → "
                      "weights V → softmax → QK^T/√d_k → Q → W_q")
