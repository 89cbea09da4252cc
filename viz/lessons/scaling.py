"""Why attention divides the scores by sqrt(d_k).

Notes: "因为点积的数值会随着维度变大而变大，如果不做缩放，softmax 很容易饱和，导致训练变得
困难。所以我们用 d_k 的平方根来进行缩放 … 让梯度不会太小，训练过程也更加稳定。"

If q and k have d_k independent entries of mean 0 and variance 1, q·k is a sum of d_k
such products, so its variance is d_k and its spread sqrt(d_k). Dividing by sqrt(d_k)
brings the spread back to 1 whatever the width of the heads.
"""
from __future__ import annotations

from itertools import pairwise

import numpy as np

import microtensor as mt

from ..heatmap import heatmap_svg
from .common import check, heading, no_player, output_dir, table

NAME = "scaling"
SUMMARY = "why divide by sqrt(d_k): score variance grows with d_k, softmax saturates, gradients vanish"

D_KS = (4, 16, 64, 256, 1024)
N_QUERIES, N_KEYS = 400, 16


def softmax_statistics(scores: np.ndarray, upstream: np.ndarray) -> tuple[float, float]:
    """Mean largest softmax weight per row, and mean norm of the gradient that reaches the
    scores (the softmax input) when `upstream` arrives at its output."""
    scores_leaf = mt.tensor(scores, requires_grad=True)
    weights = mt.softmax(scores_leaf, axis=-1)
    weights.backward(upstream)
    grad_norm = np.linalg.norm(scores_leaf.grad, axis=-1).mean()
    return float(weights.data.max(axis=-1).mean()), float(grad_norm)


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    no_player(NAME, step, html, echo)
    rng = np.random.default_rng(0)
    echo("点积的数值会随着维度变大而变大，如果不做缩放，softmax 很容易饱和: let us measure it.")
    echo(f"For each d_k: {N_QUERIES} queries, each scored against {N_KEYS} keys; q and k have")
    echo("independent N(0, 1) entries (what a well-initialised layer produces).")
    echo("A random gradient g ~ N(0, 1) arrives at the softmax output; we measure the norm")
    echo("of the gradient that gets through to the scores.")

    rows, picture_rows, labels = [], [], []
    stats = {"d_k": [], "var_raw": [], "var_scaled": [], "max_w_raw": [], "max_w_scaled": [],
             "grad_raw": [], "grad_scaled": []}
    for d_k in D_KS:
        q = rng.standard_normal((N_QUERIES, 1, d_k)).astype(np.float32)
        k = rng.standard_normal((N_QUERIES, N_KEYS, d_k)).astype(np.float32)
        raw = (q @ k.swapaxes(-1, -2))[:, 0, :].astype(np.float64)  # (queries, keys)
        scaled = raw / np.sqrt(d_k)
        upstream = rng.standard_normal(raw.shape)
        max_raw, grad_raw = softmax_statistics(raw, upstream)
        max_scaled, grad_scaled = softmax_statistics(scaled, upstream)
        values = (d_k, raw.var(), scaled.var(), max_raw, max_scaled, grad_raw, grad_scaled)
        for key, value in zip(stats, values):
            stats[key].append(float(value))
        rows.append(values)
        picture_rows += [mt.softmax(mt.tensor(raw[0]), axis=-1).data,
                         mt.softmax(mt.tensor(scaled[0]), axis=-1).data]
        labels += [f"d_k={d_k} q·k", f"d_k={d_k} q·k/√d_k"]

    heading(echo, "variance of q·k, largest softmax weight, gradient norm at the scores")
    echo(table(rows, ["d_k", "var q·k", "var q·k/√d_k", "max w raw", "max w scaled",
                      "|grad| raw", "|grad| scaled"]))

    heading(echo, "checks")
    ratio = np.array(stats["var_raw"]) / np.array(D_KS)
    check(np.all(np.abs(ratio - 1) < 0.15), "unscaled, var(q·k) ≈ d_k",
          "var / d_k = " + ", ".join(f"{r:.2f}" for r in ratio), echo)
    var_scaled = np.array(stats["var_scaled"])
    check(np.all(np.abs(var_scaled - 1) < 0.15), "scaled, var(q·k/√d_k) ≈ 1 for every d_k",
          ", ".join(f"{v:.2f}" for v in var_scaled), echo)
    max_raw = stats["max_w_raw"]
    check(all(a < b for a, b in pairwise(max_raw)) and max_raw[-1] > 0.85,
          "unscaled, softmax saturates as d_k grows: the largest weight rises toward 1",
          " → ".join(f"{m:.2f}" for m in max_raw), echo)
    max_scaled = stats["max_w_scaled"]
    check(max(max_scaled) - min(max_scaled) < 0.1 and max(max_scaled) < 0.6,
          "scaled, the largest weight stays about the same for every d_k",
          " , ".join(f"{m:.2f}" for m in max_scaled), echo)
    grad_raw, grad_scaled = stats["grad_raw"], stats["grad_scaled"]
    check(grad_raw[-1] < grad_raw[0] / 3 and grad_raw[-1] < grad_scaled[-1] / 3,
          "unscaled, the gradient through softmax vanishes as d_k grows",
          f"|grad| {grad_raw[0]:.3f} at d_k={D_KS[0]} → {grad_raw[-1]:.3f} at d_k={D_KS[-1]}",
          echo)
    check(max(grad_scaled) < 1.5 * min(grad_scaled),
          "scaled, the gradient norm stays about the same for every d_k",
          ", ".join(f"{g:.3f}" for g in grad_scaled), echo)
    echo("A saturated softmax is almost one-hot: y_i (δ_ij - y_j) ≈ 0 for every i, j, so the")
    echo("backward rule y * (g - sum(g*y)) sends almost nothing back to W_q and W_k.")

    picture = heatmap_svg(np.array(picture_rows), out / "scaling-softmax-weights.svg",
                          title="softmax weights of one query over 16 keys, raw vs scaled",
                          row_labels=labels, col_labels=[str(j) for j in range(N_KEYS)],
                          cell=26)
    echo(f"\nwrote {picture}")
    return {**stats, "files": [str(picture)]}
