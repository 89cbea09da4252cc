"""Multi-head attention: several heads, each in its own subspace, computed in parallel.

Notes: "多头注意力允许模型在不同的表示子空间中并行地关注不同类型的关系。"
"Multi-head attention allows the model to attend to information from different
representation subspaces in parallel."

Head h uses columns [h·d_k, (h+1)·d_k) of W_q, W_k and W_v: its own d_k-dimensional
projection (子空间) of every token. The heads are not a Python loop: a reshape and a
transpose turn (B, T, d_model) into (B, h, T, d_k), and one batched matmul runs them all.
"""
from __future__ import annotations

import numpy as np

import microtensor as mt
from transformer.attention import MultiHeadAttention, merge_heads, split_heads

from ..heatmap import heatmap_svg
from .common import check, heading, matrix_rows, output_dir, step_and_play

NAME = "multi-head"
SUMMARY = "heads attend in different subspaces; per-head weights; batched split/merge == a loop over heads"

TOKENS = ["我", "想", "吃", "苹果"]
D_MODEL, N_HEADS = 8, 2


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def heads_by_loop(mha: MultiHeadAttention, x: np.ndarray):
    """The same computation, one head at a time, in float64 NumPy: the definition that
    the batched reshape/transpose must reproduce."""
    d_k = mha.d_k
    project = {name: (getattr(mha, name).weight.data.astype(np.float64),
                      getattr(mha, name).bias.data.astype(np.float64))
               for name in ("W_q", "W_k", "W_v", "W_o")}
    outputs, weights = [], []
    for h in range(mha.n_heads):
        cols = slice(h * d_k, (h + 1) * d_k)               # this head's subspace
        q, k, v = (x @ W[:, cols] + b[cols] for W, b in
                   (project["W_q"], project["W_k"], project["W_v"]))
        w = softmax_rows(q @ k.T / np.sqrt(d_k))           # (T, T)
        weights.append(w)
        outputs.append(w @ v)                              # (T, d_k)
    W_o, b_o = project["W_o"]
    return np.concatenate(outputs, axis=-1) @ W_o + b_o, np.stack(weights)


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    mt.manual_seed(3)
    mha = MultiHeadAttention(d_model=D_MODEL, n_heads=N_HEADS)
    x = mt.randn(1, len(TOKENS), D_MODEL)
    echo("多头注意力: heads attend to different representation subspaces (子空间) in parallel.")
    echo(f"MultiHeadAttention(d_model={D_MODEL}, n_heads={N_HEADS}): d_k = {mha.d_k} per head.")
    echo("x: one random 8-dim embedding per token of 我 想 吃 苹果, shape (1, 4, 8).")

    heading(echo, "1. split, attend, merge (the batched way)")
    q = split_heads(mha.W_q(x), mha.n_heads)
    echo(f"W_q(x): {mha.W_q(x).shape}  → split_heads → {q.shape}  (B, h, T, d_k)")
    flat = mha.W_q(x).data
    check(all(np.array_equal(q.data[0, h], flat[0, :, h * mha.d_k:(h + 1) * mha.d_k])
              for h in range(N_HEADS)),
          "split_heads gives head h the columns [h·d_k, (h+1)·d_k): its own subspace", "",
          echo)
    check(np.array_equal(merge_heads(q).data, flat),
          "merge_heads undoes split_heads (the heads' outputs side by side)", "", echo)
    output = mha(x)
    weights = mha.last_weights.data          # (1, h, T, T)
    echo(f"output {output.shape}, last_weights {weights.shape}")

    heading(echo, "2. each head has its own attention pattern")
    for h in range(N_HEADS):
        echo(f"head {h}:")
        echo(matrix_rows(weights[0, h], TOKENS))
        focus = [TOKENS[j] for j in weights[0, h].argmax(axis=-1)]
        echo("  each token looks most at: " + ", ".join(f"{t}→{f}" for t, f in
                                                          zip(TOKENS, focus)))
    check(np.allclose(weights.sum(-1), 1, atol=1e-5), "every head's rows sum to 1", "", echo)
    head_gap = float(np.abs(weights[0, 0] - weights[0, 1]).max())
    check(head_gap > 0.05, "the heads attend differently (different subspaces, different "
          "weights)", f"max |head 0 - head 1| = {head_gap:.3f}", echo)

    heading(echo, "3. the batched reshape/transpose equals an explicit loop over heads")
    loop_out, loop_weights = heads_by_loop(mha, x.data[0].astype(np.float64))
    out_err = float(np.abs(loop_out - output.data[0]).max())
    weight_err = float(np.abs(loop_weights - weights[0]).max())
    echo(f"max |batched - loop|: output {out_err:.1e}, weights {weight_err:.1e}")
    check(out_err < 1e-5, "mha(x) equals concat(head_0, head_1) @ W_o + b_o computed head "
          "by head", f"{out_err:.1e}", echo)
    check(weight_err < 1e-5, "last_weights[:, h] equals head h's own softmax(q_h k_h^T/√d_k)",
          f"{weight_err:.1e}", echo)
    x64 = mt.tensor(x.data.astype(np.float64), requires_grad=True)
    for layer in (mha.W_q, mha.W_k, mha.W_v, mha.W_o):
        layer.weight.data = layer.weight.data.astype(np.float64)
        layer.bias.data = layer.bias.data.astype(np.float64)
    check(mt.gradcheck(lambda t: mha(t), [x64]), "gradients through split/merge pass "
          "gradcheck (float64)", "", echo)

    pictures = [heatmap_svg(weights[0, h], out / f"multi-head-head{h}.svg",
                            title=f"head {h} attention weights", row_labels=TOKENS,
                            col_labels=TOKENS, cell=48) for h in range(N_HEADS)]
    for picture in pictures:
        echo(f"wrote {picture}")

    def build():
        mha.name_parameters()
        attended = mha(x64)
        return (attended * attended).mean()
    pictures += step_and_play(build, out / "multi-head.html", step=step, html=html,
                              echo=echo, title="multi-head attention (2 heads), backward")
    return {"weights": weights[0].tolist(), "head_gap": head_gap, "loop_error": out_err,
            "weight_error": weight_err, "files": [str(p) for p in pictures]}
