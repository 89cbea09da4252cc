"""Why attention divides the scores by sqrt(d_k): a literate lesson (see viz.lessons.literate).

Run it: `python -m viz lesson scaling`; as a notebook: `python -m viz lesson scaling --notebook`.
"""
SUMMARY = ("why divide by sqrt(d_k): score variance grows with d_k, softmax saturates, "
           "gradients vanish")

# %% [markdown]
# # Why divide the scores by √d_k
#
# The notes say (in Chinese): "因为点积的数值会随着维度变大而变大，如果不做缩放，softmax 很容易饱和，
# 导致训练变得困难。" — *the dot product grows with the dimension; without scaling, softmax
# saturates easily and training becomes hard.* "所以我们用 d_k 的平方根来进行缩放 … 让梯度不会太小" —
# *so we scale by the square root of d_k … so that the gradients are not too small.*
#
# The argument: if q and k have d_k independent entries of mean 0 and variance 1, then q·k
# is a sum of d_k such products, so its variance is d_k and its spread √d_k. Dividing by
# √d_k brings the spread back to 1 whatever the width of the heads. This lesson measures
# each step of that argument. Change the numbers below and run the cells again.

# %% tags=["parameters"]
out_dir = None     # where the picture goes (default: lesson-output/scaling/)
step = False       # this lesson has no backward graph to step through
html = False

# %%
from itertools import pairwise

import numpy as np

import microtensor as mt
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, no_player, output_dir, table

out = output_dir("scaling", out_dir)
no_player("scaling", step, html, print)

D_KS = (4, 16, 64, 256, 1024)    # the widths of a head to try
N_QUERIES, N_KEYS = 400, 16      # each query is scored against 16 keys
rng = np.random.default_rng(0)

# %% [markdown]
# ## One query against its keys
#
# For each d_k we draw queries and keys with independent N(0, 1) entries (what a
# well-initialised layer produces) and compute the scores q·k, raw and divided by √d_k.

# %%
def scores_for(d_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The raw scores q·k of N_QUERIES queries against N_KEYS keys, and the same / √d_k."""
    q = rng.standard_normal((N_QUERIES, 1, d_k)).astype(np.float32)
    k = rng.standard_normal((N_QUERIES, N_KEYS, d_k)).astype(np.float32)
    raw = (q @ k.swapaxes(-1, -2))[:, 0, :].astype(np.float64)   # (queries, keys)
    return raw, raw / np.sqrt(d_k)


raw, scaled = scores_for(64)
print(f"d_k = 64: var(q·k) = {raw.var():.1f}, var(q·k/√d_k) = {scaled.var():.2f}")

# %% [markdown]
# ## Softmax on those scores, and the gradient that gets back through it
#
# A random gradient g ~ N(0, 1) arrives at the softmax output. We measure the largest
# softmax weight of each row (1 means one-hot: saturated) and the norm of the gradient that
# reaches the scores, which is what W_q and W_k learn from.

# %%
def softmax_statistics(scores: np.ndarray, upstream: np.ndarray) -> tuple[float, float]:
    """Mean largest softmax weight per row, and mean norm of the gradient that reaches the
    scores (the softmax input) when `upstream` arrives at its output."""
    scores_leaf = mt.tensor(scores, requires_grad=True)
    weights = mt.softmax(scores_leaf, axis=-1)
    weights.backward(upstream)
    grad_norm = np.linalg.norm(scores_leaf.grad, axis=-1).mean()
    return float(weights.data.max(axis=-1).mean()), float(grad_norm)


largest, grad_norm = softmax_statistics(raw, rng.standard_normal(raw.shape))
print(f"d_k = 64, raw scores: largest weight {largest:.2f}, |grad| at the scores "
      f"{grad_norm:.3f}")

# %% [markdown]
# ## Every width of head, side by side

# %%
rng = np.random.default_rng(0)   # afresh: the numbers below do not depend on the cells above
stats = {"d_k": [], "var_raw": [], "var_scaled": [], "max_w_raw": [], "max_w_scaled": [],
         "grad_raw": [], "grad_scaled": []}
rows, picture_rows, labels = [], [], []
for d_k in D_KS:
    raw, scaled = scores_for(d_k)
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

print(table(rows, ["d_k", "var q·k", "var q·k/√d_k", "max w raw", "max w scaled",
                   "|grad| raw", "|grad| scaled"]))

# %% [markdown]
# ## Checks
#
# First the variance: it grows like d_k without the scaling, and stays 1 with it.

# %%
ratio = np.array(stats["var_raw"]) / np.array(D_KS)
check(np.all(np.abs(ratio - 1) < 0.15), "unscaled, var(q·k) ≈ d_k",
      "var / d_k = " + ", ".join(f"{r:.2f}" for r in ratio))
var_scaled = np.array(stats["var_scaled"])
check(np.all(np.abs(var_scaled - 1) < 0.15), "scaled, var(q·k/√d_k) ≈ 1 for every d_k",
      ", ".join(f"{v:.2f}" for v in var_scaled))

# %% [markdown]
# Then saturation: without the scaling the largest weight climbs toward 1 (softmax becomes
# one-hot); with it, the weights look the same for every width.

# %%
max_raw, max_scaled = stats["max_w_raw"], stats["max_w_scaled"]
check(all(a < b for a, b in pairwise(max_raw)) and max_raw[-1] > 0.85,
      "unscaled, softmax saturates as d_k grows: the largest weight rises toward 1",
      " → ".join(f"{m:.2f}" for m in max_raw))
check(max(max_scaled) - min(max_scaled) < 0.1 and max(max_scaled) < 0.6,
      "scaled, the largest weight stays about the same for every d_k",
      " , ".join(f"{m:.2f}" for m in max_scaled))

# %% [markdown]
# And the gradient, the notes' "梯度不会太小" (the gradient is not too small): a saturated
# softmax is almost one-hot, so y_i (δ_ij - y_j) ≈ 0 for every i, j, and the backward rule
# y * (g - sum(g * y)) sends almost nothing back to W_q and W_k.

# %%
grad_raw, grad_scaled = stats["grad_raw"], stats["grad_scaled"]
check(grad_raw[-1] < grad_raw[0] / 3 and grad_raw[-1] < grad_scaled[-1] / 3,
      "unscaled, the gradient through softmax vanishes as d_k grows",
      f"|grad| {grad_raw[0]:.3f} at d_k={D_KS[0]} → {grad_raw[-1]:.3f} at d_k={D_KS[-1]}")
check(max(grad_scaled) < 1.5 * min(grad_scaled),
      "scaled, the gradient norm stays about the same for every d_k",
      ", ".join(f"{g:.3f}" for g in grad_scaled))

# %% [markdown]
# ## The picture
#
# One query's softmax weights over its 16 keys, raw and scaled, for each d_k: the raw rows
# turn one-hot as d_k grows.

# %%
picture = heatmap_svg(np.array(picture_rows), out / "scaling-softmax-weights.svg",
                      title="softmax weights of one query over 16 keys, raw vs scaled",
                      row_labels=labels, col_labels=[str(j) for j in range(N_KEYS)], cell=26)
print(f"wrote {picture}")
numbers = {**stats, "files": [str(picture)]}
