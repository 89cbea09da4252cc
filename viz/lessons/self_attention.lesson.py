"""Self-attention: relevance between positions, then a weighted sum; a literate lesson (see
viz.lessons.literate).

Run it: `python -m viz lesson self-attention`; as a notebook: `python -m viz lesson
self-attention --notebook`.
"""
SUMMARY = ("relevance between positions (softmax(QK^T/√d)) and weighted aggregation for "
           "我 想 吃 苹果")

# %% [markdown]
# # Self-attention: relevance between positions, then a weighted sum
#
# The notes, in English and in Chinese: "Self-attention computes the relevance between
# different positions (tokens) in a sequence and aggregates information to produce
# context-aware representations." — "Self-Attention 通过计算序列内部各位置之间的相关性，
# 对信息进行加权汇聚，从而得到上下文相关的表示" (加权汇聚: *weighted aggregation*).
#
# Our sentence is 我 想 吃 苹果, "I want to eat apple": 我 *I*, 想 *want*, 吃 *eat*,
# 苹果 *apple*. Each token scores every token (relevance), then takes a weighted average
# of them (aggregation).
#
# To keep the numbers readable, Q = K = V = X here: no learned projections (the qkv lesson
# adds W_q, W_k and W_v). Each embedding has four hand-picked features. Change a number in
# `EMBEDDINGS` and run the cells again; the checks below are about this sentence, so a new
# sentence may fail the ones that name 吃 and 苹果.

# %% tags=["parameters"]
out_dir = None     # where the pictures go (default: lesson-output/self-attention/)
step = False       # walk the backward pass step by step (in a terminal)
html = True        # write the step-through player (shown at the end of the notebook)

# %%
import math

import numpy as np

import microtensor as mt
from transformer.attention import scaled_dot_product_attention
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, fmt, matrix_rows, output_dir, pad, step_and_play

out = output_dir("self-attention", out_dir)

TOKENS = ["我", "想", "吃", "苹果"]              # I, want, eat, apple
FEATURES = ["person", "desire", "eating", "fruit"]
EMBEDDINGS = np.array([[2.0, 0.5, 0.0, 0.0],   # 我   (I)
                       [0.5, 2.0, 0.5, 0.0],   # 想   (want)
                       [0.0, 0.5, 2.0, 1.0],   # 吃   (eat)
                       [0.0, 0.0, 1.0, 2.0]])  # 苹果 (apple)
print("Embeddings (features: " + ", ".join(FEATURES) + "):")
for token, row in zip(TOKENS, EMBEDDINGS):
    print(f"  {pad(token, 5)}{fmt(row)}")

# %% [markdown]
# ## 1. Relevance: scores = Q Kᵀ / √d
#
# Every token against every token: entry [i, j] is the dot product of token i's query with
# token j's key, divided by √d (the scaling lesson shows why).

# %%
X = mt.tensor(EMBEDDINGS)
d = X.shape[-1]
Q = K = V = X
scores = (Q @ K.T) * (1.0 / math.sqrt(d))
print("scores =\n" + fmt(scores))

# %% [markdown]
# One entry by hand: 吃 (eat) against 苹果 (apple). They share the eating and fruit
# features, so their dot product is large.

# %%
s_eat_apple = float(EMBEDDINGS[2] @ EMBEDDINGS[3]) / math.sqrt(d)
print(f"  e.g. 吃·苹果 / √4 = (0*0 + 0.5*0 + 2*1 + 1*2) / 2 = {s_eat_apple:g}")
check(abs(scores.data[2, 3] - s_eat_apple) < 1e-12, "scores[吃, 苹果] is the dot product / √d",
      f"{scores.data[2, 3]:g}")

# %% [markdown]
# ## 2. Weights = softmax(scores) along each row
#
# Softmax turns each row of scores into weights: positive, summing to 1. Row i says how
# much token i (who is looking) takes from each token j (who is looked at).

# %%
weights = mt.softmax(scores, axis=-1)
print("weights (row: who is looking, column: who is looked at) =")
print(matrix_rows(weights.data, TOKENS))

# %%
row_sums = weights.data.sum(axis=-1)
check(np.allclose(row_sums, 1, atol=1e-12), "every row of weights sums to 1", fmt(row_sums))
check(((weights.data > 0) & (weights.data < 1)).all(), "every weight lies in (0, 1)", "")

# %% [markdown]
# Here each token attends most to itself (its dot product with itself is largest). Besides
# itself, who does each token attend to?

# %%
for i, token in enumerate(TOKENS):
    others = [j for j in range(len(TOKENS)) if j != i]
    best = max(others, key=lambda j: weights.data[i, j])
    print(f"  besides itself, {token} attends most to {TOKENS[best]} "
          f"({weights.data[i, best]:.3f})")
eat_row = weights.data[2]
check(eat_row[3] > max(eat_row[0], eat_row[1]),
      "吃 finds 苹果 more relevant than 我 or 想 (they share the eating/fruit features)",
      f"{eat_row[3]:.3f} vs {eat_row[0]:.3f}, {eat_row[1]:.3f}")

# %% [markdown]
# ## 3. Aggregation: output = weights @ V
#
# Each token's output is a weighted average of the values of all tokens, with its row of
# weights. We compute it as a matrix product and again term by term.

# %%
output = weights @ V
print("output =\n" + fmt(output))
by_hand = np.array([sum(weights.data[i, j] * EMBEDDINGS[j] for j in range(len(TOKENS)))
                    for i in range(len(TOKENS))])
terms = " + ".join(f"{weights.data[2, j]:.3f}*v_{t}" for j, t in enumerate(TOKENS))
print(f"  output[吃] = {terms} = {fmt(by_hand[2])}")
check(np.allclose(output.data, by_hand, atol=1e-12),
      "output[i] = Σ_j weights[i, j] * v_j (weights @ V)", "")

# %% [markdown]
# The library's attention function, the one the Transformer uses, computes the same.

# %%
library_out, library_weights = scaled_dot_product_attention(Q, K, V)
check(np.allclose(library_out.data, output.data, atol=1e-12)
      and np.allclose(library_weights.data, weights.data, atol=1e-12),
      "transformer.scaled_dot_product_attention gives the same weights and output", "")
print("Each output row mixes the whole sentence: 吃's new vector now carries some 苹果.")

# %% [markdown]
# ## 4. Causal self-attention (a decoder cannot look ahead)
#
# A decoder that writes the sentence token by token must not see the tokens after the one
# it is writing. A causal mask sets their scores to -∞ before the softmax, so their weights
# are exactly 0.

# %%
_, causal_weights = scaled_dot_product_attention(Q, K, V, causal=True)
print(fmt(causal_weights))
upper = np.triu(causal_weights.data, k=1)
check(np.all(upper == 0), "weights above the diagonal are exactly 0 (future tokens)", "")
check(np.allclose(causal_weights.data.sum(-1), 1, atol=1e-12)
      and causal_weights.data[0, 0] == 1.0,
      "rows still sum to 1; 我, the first token, can only attend to itself (weight 1)", "")

# %% [markdown]
# ## The pictures
#
# The two weight matrices as heatmaps: full self-attention, and causal.

# %%
pictures = [
    heatmap_svg(weights, out / "self-attention-weights.svg",
                title="self-attention weights softmax(QK^T/√d)",
                row_labels=TOKENS, col_labels=TOKENS, cell=48),
    heatmap_svg(causal_weights, out / "self-attention-causal.svg",
                title="causal self-attention weights", row_labels=TOKENS,
                col_labels=TOKENS, cell=48),
]
for picture in pictures:
    print(f"wrote {picture}")

# %% [markdown]
# ## The backward pass
#
# A made-up loss, the mean of the squared outputs, so that there is a gradient to follow
# back through the weighted sum, the softmax and the scores to X. `step = True` walks it
# in the terminal; `html = True` writes the step-through player.

# %%
def build():
    x = mt.tensor(EMBEDDINGS, requires_grad=True, name="X")
    attended, _ = scaled_dot_product_attention(x, x, x)
    return (attended * attended).mean()


pictures += step_and_play(build, out / "self-attention.html", step=step, html=html,
                          echo=print,
                          title="self-attention over 我 想 吃 苹果 (I want to eat apple), "
                                "backward")
numbers = {"weights": weights.data.tolist(), "row_sums": row_sums.tolist(),
           "output": output.data.tolist(), "output_by_hand": by_hand.tolist(),
           "causal_upper_max": float(np.abs(upper).max()),
           "files": [str(p) for p in pictures]}
