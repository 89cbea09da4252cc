"""Positional encoding: attention alone does not see order; adding positions fixes it: a
literate lesson (see viz.lessons.literate).

Run it: `python -m viz lesson positional-encoding`; as a notebook:
`python -m viz lesson positional-encoding --notebook`.
"""
SUMMARY = ("self-attention is permutation-equivariant (我想吃苹果 vs 苹果吃想我); the sinusoidal "
           "table restores order")

# %% [markdown]
# # Positional encoding: attention alone does not see order
#
# The notes (为什么 Transformer 需要位置编码？, *why does the Transformer need positional
# encoding?*): "因为注意力机制本身不包含顺序信息，位置编码为模型提供序列的位置信息。" — *since
# self-attention is permutation-invariant, positional encoding is required to inject order
# information into the model.*
#
# Precisely: self-attention is permutation-*equivariant*. Shuffle the tokens and the outputs
# are shuffled the same way, each token's output unchanged. So 我想吃苹果 ("I want to eat
# apple": 我 I, 想 want, 吃 eat, 苹果 apple) and its reverse 苹果吃想我 ("apple eat want I")
# give 我 the very same vector. Adding PE[pos] to each embedding makes the output depend on
# order. Change the sentence, the order or the sizes below and run the cells again.

# %% tags=["parameters"]
out_dir = None     # where the picture goes (default: lesson-output/positional-encoding/)
step = False       # this lesson has no backward graph to step through
html = False

# %%
import math

import numpy as np

import microtensor as mt
from transformer.attention import MultiHeadAttention
from transformer.layers import PositionalEncoding
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, fmt, no_player, output_dir

out = output_dir("positional-encoding", out_dir)
no_player("positional-encoding", step, html, print)
print(f"pictures go to {out}")

# %% [markdown]
# Two sentences with the same tokens, the same embeddings, in different orders, and one
# self-attention layer (2 heads) that sees both.

# %%
TOKENS = ["我", "想", "吃", "苹果"]
D_MODEL, MAX_LEN = 16, 50
reverse = [3, 2, 1, 0]             # sentence B's order: try another permutation

mt.manual_seed(7)
attention = MultiHeadAttention(d_model=D_MODEL, n_heads=2)
positional = PositionalEncoding(D_MODEL, max_len=MAX_LEN, kind="sinusoidal")
x = mt.randn(1, len(TOKENS), D_MODEL)
print("Sentence A: " + " ".join(TOKENS) + "    Sentence B (reversed): "
      + " ".join(TOKENS[i] for i in reverse))
print(f"Same token embeddings in both; self-attention (2 heads, d_model={D_MODEL}).")

# %% [markdown]
# ## 1. Without positional encoding: order is invisible
#
# B is A permuted: x_B = P x_A. If attention cannot see order, attention(P x) = P
# attention(x): 我 gets the same output in A (position 0) and in B (position 3).

# %%
out_a = attention(x).data[0]
out_b = attention(x[:, reverse]).data[0]
equivariance_error = float(np.abs(out_b - out_a[reverse]).max())
print(f"output of 我 in A: {fmt(out_a[0][:4])} ...")
print(f"output of 我 in B: {fmt(out_b[reverse.index(0)][:4])} ...")
check(equivariance_error < 1e-5, "attention(P x) = P attention(x): every token gets the "
      "same output whatever the order", f"max diff {equivariance_error:.1e}")

# %% [markdown]
# Not a coincidence of this one order: the same holds for any shuffle.

# %%
rng = np.random.default_rng(0)
perms_ok = all(np.abs(attention(x[:, p]).data[0] - out_a[p]).max() < 1e-5
               for p in (rng.permutation(len(TOKENS)) for _ in range(5)))
check(perms_ok, "and so for 5 more random permutations")

# %% [markdown]
# ## 2. With positional encoding: x + PE[pos], order matters
#
# `PositionalEncoding` adds PE[pos] to the embedding at position pos. Now 我 at position 0
# (in A) and 我 at position 3 (in B) enter attention as different vectors.

# %%
out_a_pe = attention(positional(x)).data[0]
out_b_pe = attention(positional(x[:, reverse])).data[0]
order_effect = float(np.abs(out_b_pe - out_a_pe[reverse]).max())
print(f"output of 我 in A: {fmt(out_a_pe[0][:4])} ...")
print(f"output of 我 in B: {fmt(out_b_pe[reverse.index(0)][:4])} ...")
check(order_effect > 1e-2, "attention(P x + PE) ≠ P attention(x + PE): 我 at position 0 "
      "and 我 at position 3 now get different outputs", f"max diff {order_effect:.3f}")

# %% [markdown]
# ## 3. The sinusoidal table
#
# PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))
#
# Adding the table to zeros reads it back: one row per position, one column per dimension.

# %%
table = positional(mt.zeros(1, MAX_LEN, D_MODEL)).data[0].astype(np.float64)
print(f"PE[0:6, 0:6] (d_model = {D_MODEL}):\n" + fmt(table[:6, :6]))

# %% [markdown]
# The paper's formula, entry by entry, against the table.

# %%
def paper_formula(pos: int, dim: int, d_model: int) -> float:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)); PE(pos, 2i+1) = cos(the same angle)."""
    two_i = dim - dim % 2
    angle = pos / 10000 ** (two_i / d_model)
    return math.sin(angle) if dim % 2 == 0 else math.cos(angle)


formula = np.array([[paper_formula(p, i, D_MODEL) for i in range(D_MODEL)]
                    for p in range(MAX_LEN)])
formula_error = float(np.abs(table - formula).max())
check(formula_error < 1e-6, "PositionalEncoding adds exactly the paper's formula",
      f"max diff {formula_error:.1e}")

# %% [markdown]
# What the table promises: a known start, bounded entries however long the text, and a
# different code for every position.

# %%
check(np.allclose(table[0], np.tile([0.0, 1.0], D_MODEL // 2)),
      "position 0 is [sin 0, cos 0, ...] = [0, 1, 0, 1, ...]")
check(np.abs(table).max() <= 1.0, "every entry lies in [-1, 1], whatever the length")
distinct = len({tuple(np.round(row, 6)) for row in table})
check(distinct == MAX_LEN, f"all {MAX_LEN} positions get distinct codes")

# %% [markdown]
# Relative positions: each (sin, cos) pair turns by a fixed angle ω·k when the position
# moves by k, so PE[pos + k] is a linear function (a rotation) of PE[pos], the same for
# every pos. Relative offsets are easy for attention to use:
#
# [sin ω(p+k), cos ω(p+k)] = [sin ωp, cos ωp] @ [[cos ωk, -sin ωk], [sin ωk, cos ωk]]

# %%
k, i = 3, 2                          # the offset, and which (sin, cos) pair
omega = 1 / 10000 ** (2 * i / D_MODEL)
rotation = np.array([[math.cos(omega * k), -math.sin(omega * k)],
                     [math.sin(omega * k), math.cos(omega * k)]])
shifted = table[:-k, 2 * i:2 * i + 2] @ rotation
rotation_error = float(np.abs(shifted - table[k:, 2 * i:2 * i + 2]).max())
check(rotation_error < 1e-5, f"PE[pos + {k}] is a fixed rotation of PE[pos] (dims "
      f"{2 * i}, {2 * i + 1}), for every pos", f"max diff {rotation_error:.1e}")

# %% [markdown]
# ## The picture
#
# The whole table: fast sin/cos waves in the first dimensions, slow ones in the last.

# %%
picture = heatmap_svg(table, out / "positional-encoding.svg",
                      title=f"sinusoidal positional encoding, {MAX_LEN} positions × "
                            f"{D_MODEL} dims",
                      row_labels=[str(p) if p % 5 == 0 else "" for p in range(MAX_LEN)],
                      col_labels=[str(i) for i in range(D_MODEL)], cell=14)
print(f"wrote {picture}")
numbers = {"equivariance_error": equivariance_error, "order_effect": order_effect,
           "formula_error": formula_error, "rotation_error": rotation_error,
           "table_slice": table[:6, :6].tolist(), "files": [str(picture)]}
