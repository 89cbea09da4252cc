"""Self-attention: relevance between positions, then a weighted sum.

Notes: "Self-attention computes the relevance between different positions (tokens) in a
sequence and aggregates information to produce context-aware representations."
"Self-Attention 通过计算序列内部各位置之间的相关性，对信息进行加权汇聚，从而得到上下文相关的表示"

To keep the numbers readable, Q = K = V = X here (no learned projections; the qkv lesson
adds W_q, W_k, W_v). Each embedding has four hand-picked features.
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt
from transformer.attention import scaled_dot_product_attention

from ..heatmap import heatmap_svg
from .common import check, fmt, heading, matrix_rows, output_dir, pad, step_and_play

NAME = "self-attention"
SUMMARY = "relevance between positions (softmax(QK^T/√d)) and weighted aggregation for 我 想 吃 苹果"

TOKENS = ["我", "想", "吃", "苹果"]
FEATURES = ["person", "desire", "eating", "fruit"]
EMBEDDINGS = np.array([[2.0, 0.5, 0.0, 0.0],   # 我   (I)
                       [0.5, 2.0, 0.5, 0.0],   # 想   (want)
                       [0.0, 0.5, 2.0, 1.0],   # 吃   (eat)
                       [0.0, 0.0, 1.0, 2.0]])  # 苹果 (apple)


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    X = mt.tensor(EMBEDDINGS)
    d = X.shape[-1]
    echo("Self-Attention 通过计算序列内部各位置之间的相关性，对信息进行加权汇聚，从而得到上下文")
    echo("相关的表示: each token scores every token (relevance), then takes a weighted average.")
    echo("Embeddings (features: " + ", ".join(FEATURES) + "):")
    for token, row in zip(TOKENS, EMBEDDINGS):
        echo(f"  {pad(token, 5)}{fmt(row)}")

    heading(echo, "1. relevance: scores = Q K^T / √d  (every token against every token)")
    Q = K = V = X
    scores = (Q @ K.T) * (1.0 / math.sqrt(d))
    echo("scores =\n" + fmt(scores))
    s_eat_apple = float(EMBEDDINGS[2] @ EMBEDDINGS[3]) / math.sqrt(d)
    echo(f"  e.g. 吃·苹果 / √4 = (0*0 + 0.5*0 + 2*1 + 1*2) / 2 = {s_eat_apple:g}")
    check(abs(scores.data[2, 3] - s_eat_apple) < 1e-12, "scores[吃, 苹果] is the dot product / √d",
          f"{scores.data[2, 3]:g}", echo)

    heading(echo, "2. weights = softmax(scores) along each row")
    weights = mt.softmax(scores, axis=-1)
    echo("weights (row: who is looking, column: who is looked at) =")
    echo(matrix_rows(weights.data, TOKENS))
    row_sums = weights.data.sum(axis=-1)
    check(np.allclose(row_sums, 1, atol=1e-12), "every row of weights sums to 1",
          fmt(row_sums), echo)
    check(((weights.data > 0) & (weights.data < 1)).all(), "every weight lies in (0, 1)",
          "", echo)
    for i, token in enumerate(TOKENS):
        others = [j for j in range(len(TOKENS)) if j != i]
        best = max(others, key=lambda j: weights.data[i, j])
        echo(f"  besides itself, {token} attends most to {TOKENS[best]} "
             f"({weights.data[i, best]:.3f})")
    eat_row = weights.data[2]
    check(eat_row[3] > max(eat_row[0], eat_row[1]),
          "吃 finds 苹果 more relevant than 我 or 想 (they share the eating/fruit features)",
          f"{eat_row[3]:.3f} vs {eat_row[0]:.3f}, {eat_row[1]:.3f}", echo)

    heading(echo, "3. aggregation: output = weights @ V  (a weighted average of the values)")
    output = weights @ V
    echo("output =\n" + fmt(output))
    by_hand = np.array([sum(weights.data[i, j] * EMBEDDINGS[j] for j in range(len(TOKENS)))
                        for i in range(len(TOKENS))])
    terms = " + ".join(f"{weights.data[2, j]:.3f}*v_{t}" for j, t in enumerate(TOKENS))
    echo(f"  output[吃] = {terms} = {fmt(by_hand[2])}")
    check(np.allclose(output.data, by_hand, atol=1e-12),
          "output[i] = Σ_j weights[i, j] * v_j (weights @ V)", "", echo)
    library_out, library_weights = scaled_dot_product_attention(Q, K, V)
    check(np.allclose(library_out.data, output.data, atol=1e-12)
          and np.allclose(library_weights.data, weights.data, atol=1e-12),
          "transformer.scaled_dot_product_attention gives the same weights and output", "",
          echo)
    echo("Each output row mixes the whole sentence: 吃's new vector now carries some 苹果.")

    heading(echo, "4. causal self-attention (a decoder cannot look ahead)")
    _, causal_weights = scaled_dot_product_attention(Q, K, V, causal=True)
    echo(fmt(causal_weights))
    upper = np.triu(causal_weights.data, k=1)
    check(np.all(upper == 0), "weights above the diagonal are exactly 0 (future tokens)",
          "", echo)
    check(np.allclose(causal_weights.data.sum(-1), 1, atol=1e-12)
          and causal_weights.data[0, 0] == 1.0,
          "rows still sum to 1; 我, the first token, can only attend to itself (weight 1)",
          "", echo)

    pictures = [
        heatmap_svg(weights, out / "self-attention-weights.svg",
                    title="self-attention weights softmax(QK^T/√d)",
                    row_labels=TOKENS, col_labels=TOKENS, cell=48),
        heatmap_svg(causal_weights, out / "self-attention-causal.svg",
                    title="causal self-attention weights", row_labels=TOKENS,
                    col_labels=TOKENS, cell=48),
    ]
    for picture in pictures:
        echo(f"wrote {picture}")

    def build():
        x = mt.tensor(EMBEDDINGS, requires_grad=True, name="X")
        attended, _ = scaled_dot_product_attention(x, x, x)
        return (attended * attended).mean()
    pictures += step_and_play(build, out / "self-attention.html", step=step, html=html,
                              echo=echo, title="self-attention over 我 想 吃 苹果, backward")
    return {"weights": weights.data.tolist(), "row_sums": row_sums.tolist(),
            "output": output.data.tolist(), "output_by_hand": by_hand.tolist(),
            "causal_upper_max": float(np.abs(upper).max()),
            "files": [str(p) for p in pictures]}
