"""Multi-head attention: several heads, each in its own subspace, computed in parallel: a
literate lesson (see viz.lessons.literate).

Run it: `python -m viz lesson multi-head`; as a notebook: `python -m viz lesson multi-head --notebook`.
"""
SUMMARY = ("heads attend in different subspaces; per-head weights; batched split/merge == a "
           "loop over heads")

# %% [markdown]
# # Multi-head attention: several heads, each in its own subspace
#
# The notes (为什么要用多头注意力？, *why use multi-head attention?*): "多头注意力允许模型在不同的
# 表示子空间中并行地关注不同类型的关系。" — *multi-head attention allows the model to attend to
# information from different representation subspaces (子空间) in parallel.*
#
# Head h uses columns [h·d_k, (h+1)·d_k) of W_q, W_k and W_v: its own d_k-dimensional
# projection of every token. The heads are not a Python loop: a reshape and a transpose turn
# (B, T, d_model) into (B, h, T, d_k), and one batched matmul runs them all. This lesson
# checks that the batched form is the loop, and that the heads see different things.
#
# The tokens are the notes' 我 想 吃 苹果, "I want to eat apple" (我 I, 想 want, 吃 eat,
# 苹果 apple); each gets a random embedding. Change the sizes or the tokens below and run the
# cells again.

# %% tags=["parameters"]
out_dir = None     # where the pictures go (default: lesson-output/multi-head/)
step = False       # True: walk the backward pass step by step, pausing between steps
html = True        # write the step-through player (the notebook shows it at the end)

# %%
import numpy as np

import microtensor as mt
from transformer.attention import MultiHeadAttention, merge_heads, split_heads
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, matrix_rows, output_dir, step_and_play

out = output_dir("multi-head", out_dir)
print(f"pictures go to {out}")

# %%
TOKENS = ["我", "想", "吃", "苹果"]
D_MODEL, N_HEADS = 8, 2

mt.manual_seed(3)
mha = MultiHeadAttention(d_model=D_MODEL, n_heads=N_HEADS)
x = mt.randn(1, len(TOKENS), D_MODEL)
print(f"MultiHeadAttention(d_model={D_MODEL}, n_heads={N_HEADS}): d_k = {mha.d_k} per head.")
print(f"x: one random {D_MODEL}-dim embedding per token of {' '.join(TOKENS)}, "
      f"shape {x.shape}.")

# %% [markdown]
# ## 1. Split, attend, merge (the batched way)
#
# `split_heads` reshapes W_q(x) from (B, T, d_model) to (B, T, h, d_k) and moves the head
# axis forward: (B, h, T, d_k). Head h's slice must be exactly columns [h·d_k, (h+1)·d_k).

# %%
q = split_heads(mha.W_q(x), mha.n_heads)
print(f"W_q(x): {mha.W_q(x).shape}  → split_heads → {q.shape}  (B, h, T, d_k)")
flat = mha.W_q(x).data
check(all(np.array_equal(q.data[0, h], flat[0, :, h * mha.d_k:(h + 1) * mha.d_k])
          for h in range(N_HEADS)),
      "split_heads gives head h the columns [h·d_k, (h+1)·d_k): its own subspace")

# %% [markdown]
# `merge_heads` is the way back: the heads' outputs side by side, (B, T, h·d_k).

# %%
print(f"merge_heads(q): {merge_heads(q).shape}")
check(np.array_equal(merge_heads(q).data, flat),
      "merge_heads undoes split_heads (the heads' outputs side by side)")

# %% [markdown]
# The whole layer: project, split, attend in every head at once, merge, project with W_o.
# It keeps each head's attention weights in `last_weights`, (B, h, T, T).

# %%
output = mha(x)
weights = mha.last_weights.data          # (1, h, T, T)
print(f"output {output.shape}, last_weights {weights.shape}")

# %% [markdown]
# ## 2. Each head has its own attention pattern
#
# Row i of a head's weights: how much token i looks at each token.

# %%
for h in range(N_HEADS):
    print(f"head {h}:")
    print(matrix_rows(weights[0, h], TOKENS))
    focus = [TOKENS[j] for j in weights[0, h].argmax(axis=-1)]
    print("  each token looks most at: " + ", ".join(f"{t}→{f}" for t, f in
                                                       zip(TOKENS, focus)))

# %%
check(np.allclose(weights.sum(-1), 1, atol=1e-5), "every head's rows sum to 1")
head_gap = float(np.abs(weights[0, 0] - weights[0, 1]).max())
check(head_gap > 0.05, "the heads attend differently (different subspaces, different "
      "weights)", f"max |head 0 - head 1| = {head_gap:.3f}")

# %% [markdown]
# ## 3. The batched reshape/transpose equals an explicit loop over heads
#
# The definition, one head at a time in float64 NumPy: head h projects with its own columns
# of W_q, W_k, W_v, takes softmax(q_h k_hᵀ/√d_k) and its weighted sum of v_h; the heads'
# outputs are concatenated and projected by W_o.

# %%
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


loop_out, loop_weights = heads_by_loop(mha, x.data[0].astype(np.float64))
out_err = float(np.abs(loop_out - output.data[0]).max())
weight_err = float(np.abs(loop_weights - weights[0]).max())
print(f"max |batched - loop|: output {out_err:.1e}, weights {weight_err:.1e}")

# %%
check(out_err < 1e-5, "mha(x) equals concat(head_0, head_1) @ W_o + b_o computed head "
      "by head", f"{out_err:.1e}")
check(weight_err < 1e-5, "last_weights[:, h] equals head h's own softmax(q_h k_h^T/√d_k)",
      f"{weight_err:.1e}")

# %% [markdown]
# And the backward pass: in float64, the gradients that autograd sends back through
# split/merge agree with central differences.

# %%
x64 = mt.tensor(x.data.astype(np.float64), requires_grad=True)
for layer in (mha.W_q, mha.W_k, mha.W_v, mha.W_o):
    layer.weight.data = layer.weight.data.astype(np.float64)
    layer.bias.data = layer.bias.data.astype(np.float64)
check(mt.gradcheck(lambda t: mha(t), [x64]), "gradients through split/merge pass "
      "gradcheck (float64)")

# %% [markdown]
# ## The pictures
#
# Each head's attention weights, and (with `html`) the step-through player of the backward
# pass of mean(mha(x)²).

# %%
pictures = [heatmap_svg(weights[0, h], out / f"multi-head-head{h}.svg",
                        title=f"head {h} attention weights", row_labels=TOKENS,
                        col_labels=TOKENS, cell=48) for h in range(N_HEADS)]
for picture in pictures:
    print(f"wrote {picture}")


def build():
    mha.name_parameters()
    attended = mha(x64)
    return (attended * attended).mean()


pictures += step_and_play(build, out / "multi-head.html", step=step, html=html, echo=print,
                          title=f"multi-head attention ({N_HEADS} heads), backward")
numbers = {"weights": weights[0].tolist(), "head_gap": head_gap, "loop_error": out_err,
           "weight_error": weight_err, "files": [str(p) for p in pictures]}
