"""Rotary positions and the other parts today's decoders changed (Llama, Mistral, Qwen): a
literate lesson (see viz.lessons.literate).

Run it: `python -m viz lesson rope`; as a notebook: `python -m viz lesson rope --notebook`.
"""
SUMMARY = ("rotary positions: q·k depends only on the offset (vs the sinusoidal table's "
           "absolute positions); GQA's smaller KV cache; RMSNorm vs LayerNorm")

# %% [markdown]
# # Rotary positions, grouped-query attention, RMSNorm
#
# This lesson goes one step past the notes. Today's decoders (Llama, Mistral, Qwen) keep
# attention but change how it sees positions. The sinusoidal table *adds* PE[pos] to each
# token, so a token's vector, and every score it takes part in, depends on where the token
# sits. Rotary position embedding (RoPE) instead *rotates* q and k: dimension pair j of a
# vector at position m turns by the angle m·θ_j, with θ_j = theta^(-2j/d). Since
# R(m)ᵀ R(n) = R(n − m), the score q·k after rotation depends only on the offset n − m.
#
# The sentence is 我 想 吃 苹果 ("I want to eat apple": 我 I, 想 want, 吃 eat, 苹果 apple);
# q_吃 is the query of 吃 (eat) and k_苹果 the key of 苹果 (apple). The lesson then counts
# what grouped-query attention saves in the KV cache of a real model, and shows what RMSNorm
# drops from LayerNorm.

# %% tags=["parameters"]
out_dir = None     # where the pictures go (default: lesson-output/rope/)
step = False       # this lesson has no backward graph to step through
html = False

# %%
import math

import numpy as np

import microtensor as mt
import microtensor.functional as F
from transformer.attention import MultiHeadAttention
from transformer.cache import KVCache
from transformer.config import LMConfig
from transformer.layers import PositionalEncoding
from transformer.lm import DecoderLM
from transformer.rope import RotaryEmbedding, apply_rotary
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, fmt, no_player, output_dir, table

out = output_dir("rope", out_dir)
no_player("rope", step, html, print)

TOKENS = ["我", "想", "吃", "苹果"]        # "I want to eat apple"
HEAD_DIM, THETA, N_POSITIONS = 8, 10000.0, 12

# %% [markdown]
# A query for 吃 and a key for 苹果 with random entries, and token vectors x for the whole
# sentence (d_model 16) for section 3. Change the seed for other vectors and run again from
# here.

# %%
rng = np.random.default_rng(0)
rope = RotaryEmbedding(HEAD_DIM, THETA)
q, k = rng.standard_normal(HEAD_DIM), rng.standard_normal(HEAD_DIM)   # q_吃, k_苹果
x = mt.tensor(rng.standard_normal((1, len(TOKENS), 16)).astype(np.float32))

# %% [markdown]
# ## 1. The rotation: pair (j, j + d/2) turns by position × θ_j
#
# Pairs are (0, 4), (1, 5), (2, 6), (3, 7): the "rotate-half" layout of Llama in Hugging
# Face transformers. The first pair turns fastest (1 radian per position), the last slowest.

# %%
def rotate(vector: np.ndarray, position: int, rope: RotaryEmbedding) -> np.ndarray:
    """apply_rotary on one (d,) vector at one position, in float64."""
    rotation = rope(np.array([position]), dtype=np.float64)
    return apply_rotary(mt.tensor(vector[None, None, None]), rotation).data[0, 0, 0]


print(f"head_dim d = {HEAD_DIM}, theta = {THETA:g}: θ_j = theta^(-2j/d) = "
      f"{fmt(rope.inv_freq)} radians per position")

# %% [markdown]
# The same rotation by hand: each pair (q_j, q_{j+d/2}) multiplied by the 2×2 rotation
# matrix [[cos, -sin], [sin, cos]] of the angle position·θ_j.

# %%
position = 3
by_hand = q.copy()
half = HEAD_DIM // 2
for j, theta_j in enumerate(rope.inv_freq):
    angle = position * theta_j
    c, s = math.cos(angle), math.sin(angle)
    by_hand[j] = c * q[j] - s * q[j + half]          # [[cos, -sin], [sin, cos]] @ pair
    by_hand[j + half] = s * q[j] + c * q[j + half]
rotated = rotate(q, position, rope)
print(f"q_吃             = {fmt(q)}")
print(f"q_吃 at pos {position}    = {fmt(rotated)}")

# %%
rotation_error = float(np.abs(rotated - by_hand).max())
check(rotation_error < 1e-12, "apply_rotary = a 2×2 rotation of each pair (j, j+d/2) by "
      "position·θ_j", f"max diff {rotation_error:.1e}")
check(abs(np.linalg.norm(rotated) - np.linalg.norm(q)) < 1e-12,
      "a rotation keeps the length: |q| is unchanged", f"|q| = {np.linalg.norm(q):.4f}")
check(np.allclose(rotate(q, 0, rope), q, atol=0), "position 0 is no rotation at all")

# %% [markdown]
# ## 2. After RoPE, q·k depends only on the offset n − m
#
# R(m)ᵀ R(n) = R(n − m): rotate q by m and k by n, and their dot product is q·R(n−m)k. The
# score of q_吃 at m against k_苹果 at n, for every m and n below N_POSITIONS, and for three
# shifts of both positions:

# %%
scores = np.array([[rotate(q, m, rope) @ rotate(k, n, rope) for n in range(N_POSITIONS)]
                   for m in range(N_POSITIONS)])
rows = []
for shift in (1, 10, 1000):
    rows.append((f"m=2, n=5 -> m={2 + shift}, n={5 + shift}", scores[2, 5],
                 rotate(q, 2 + shift, rope) @ rotate(k, 5 + shift, rope)))
print(table(rows, ["positions of q_吃 and k_苹果", "score before", "after the shift"]))

# %%
shift_error = max(abs(before - after) for _, before, after in rows)
check(shift_error < 1e-9, "shifting both positions by the same amount leaves the score "
      "unchanged", f"max diff {shift_error:.1e}")
diagonal_error = max(float(np.ptp(np.diagonal(scores, offset)))
                     for offset in range(-N_POSITIONS + 1, N_POSITIONS))
check(diagonal_error < 1e-9, f"the {N_POSITIONS}×{N_POSITIONS} score table is constant "
      "along every diagonal (each diagonal is one offset)",
      f"largest spread {diagonal_error:.1e}")
check(np.ptp(scores[0]) > 0.1, "and it does change with the offset: position is seen",
      f"row 0 spans {np.ptp(scores[0]):.3f}")

# %% [markdown]
# The table as a picture: one colour along each diagonal.

# %%
def position_table_svg(table, path, title: str):
    """A heatmap of scores, query position m down the rows and key position n across."""
    positions = [str(p) for p in range(len(table))]
    return heatmap_svg(table, path, title=title, row_labels=positions, col_labels=positions,
                       cell=30)


rope_picture = position_table_svg(scores, out / "rope-scores.svg",
                                  "RoPE: q·k for q at position m (rows), k at n (columns)")
print(f"wrote {rope_picture}")

# %% [markdown]
# ## 3. The sinusoidal table: absolute positions
#
# With x + PE[pos], the same two tokens at (m, n) and at (m + s, n + s) get different
# scores: the table adds a vector that depends on the position itself, not on the offset.

# %%
table_8 = PositionalEncoding(HEAD_DIM, max_len=N_POSITIONS).pe.astype(np.float64)
added = np.array([[(q + table_8[m]) @ (k + table_8[n]) for n in range(N_POSITIONS)]
                  for m in range(N_POSITIONS)])
diagonal_spread = max(float(np.ptp(np.diagonal(added, offset)))
                      for offset in range(-N_POSITIONS + 2, N_POSITIONS - 1))
check(diagonal_spread > 0.1, "(q_吃 + PE[m])·(k_苹果 + PE[n]) is not constant along the "
      "diagonals: the same offset gives different scores at different places",
      f"a diagonal spans up to {diagonal_spread:.3f}")
sinusoidal_picture = position_table_svg(
    added, out / "sinusoidal-scores.svg",
    "x + PE[pos]: (q + PE[m])·(k + PE[n]), m rows, n columns")
print(f"wrote {sinusoidal_picture}")

# %% [markdown]
# In a whole attention layer: two layers of 2 heads with the same weights, one fed
# x + PE[pos], the other rotating q and k by the positions. We place the sentence at
# positions 0..3, 100..103 and 1000..1003 and compare the attention weights.

# %%
d_model = x.shape[-1]
positional = PositionalEncoding(d_model, max_len=1100, kind="sinusoidal")
mt.manual_seed(3)
sinusoidal = MultiHeadAttention(d_model, n_heads=2, bias=False)
rotary = MultiHeadAttention(d_model, n_heads=2, bias=False)
for name in ("W_q", "W_k", "W_v", "W_o"):
    getattr(rotary, name).weight.data = getattr(sinusoidal, name).weight.data.copy()
layer_rope = RotaryEmbedding(d_model // 2)      # the rotation for heads of d_model / 2

# %%
rows, sinusoidal_gap, rotary_gap = [], 0.0, 0.0
for start in (0, 100, 1000):
    positions = np.arange(start, start + len(TOKENS))
    with mt.no_grad():
        sinusoidal(positional(x, offset=start), causal=True)
        rotary(x, causal=True, rotation=layer_rope(positions))
    if start == 0:
        first_sinusoidal, first_rotary = (sinusoidal.last_weights.data,
                                          rotary.last_weights.data)
    sinusoidal_gap = max(sinusoidal_gap, float(np.abs(sinusoidal.last_weights.data
                                                      - first_sinusoidal).max()))
    rotary_gap = max(rotary_gap, float(np.abs(rotary.last_weights.data
                                              - first_rotary).max()))
    rows.append((f"{start}..{start + len(TOKENS) - 1}",
                 fmt(sinusoidal.last_weights.data[0, 0, -1]),
                 fmt(rotary.last_weights.data[0, 0, -1])))
print(f"attention weights of {TOKENS[-1]} (head 0) over {' '.join(TOKENS)}, the sentence "
      f"placed at:")
print(table(rows, ["positions", "x + PE[pos]", "RoPE"]))

# %%
check(sinusoidal_gap > 1e-3, "with the sinusoidal table, moving the whole sentence changes "
      "the attention weights", f"max change {sinusoidal_gap:.3f}")
check(rotary_gap < 1e-5, "with RoPE, the weights are the same wherever the sentence starts",
      f"max change {rotary_gap:.1e}")
norm_change = float(abs(np.linalg.norm(positional(x, offset=5).data[0, 0])
                        - np.linalg.norm(x.data[0, 0])))
check(norm_change > 0.1, "the table also changes the token vector itself (its length), "
      "and so V; RoPE turns only q and k, lengths kept (section 1)",
      f"|x + PE| − |x| = {norm_change:.3f}")

# %% [markdown]
# ## 4. Grouped-query attention: fewer K/V heads, a smaller cache
#
# A real model's numbers, from Llama-3-8B's published config.json (hidden 4096 = 32 heads
# × 128; weights and cache in bfloat16, 2 bytes a number). Each group of 32 / 8 = 4 query
# heads shares one K/V head; the cache keeps one K and one V per K/V head, layer and token.

# %%
LLAMA3_8B = {"layers": 32, "heads": 32, "kv_heads": 8, "head_dim": 128, "context": 8192,
             "bytes": 2}
c = LLAMA3_8B
print(f"Llama-3-8B (published config): {c['layers']} layers, {c['heads']} query heads, "
      f"{c['kv_heads']} K/V heads, head_dim {c['head_dim']}, context {c['context']}, "
      f"bfloat16 ({c['bytes']} bytes).")


def per_token(kv_heads: int) -> int:
    """Cache bytes per token: a K and a V per layer and K/V head."""
    return 2 * c["layers"] * kv_heads * c["head_dim"] * c["bytes"]


# Our KVCache for that shape, with float16 standing in for bfloat16 (both 2 bytes; NumPy
# has no bfloat16), over 16 positions, to count real buffer bytes.
sample = 16
cache = KVCache(c["layers"], batch=1, n_kv_heads=c["kv_heads"], d_k=c["head_dim"],
                max_len=sample, dtype=np.float16)
measured = sum(layer.self_attn.keys.nbytes + layer.self_attn.values.nbytes
               for layer in cache.layers) // sample
check(measured == per_token(c["kv_heads"]) == 131072,
      "bytes per token = 2 (K, V) × 32 layers × 8 K/V heads × 128 × 2 bytes = 131,072 "
      "(128 KiB), counted on our KVCache's buffers", f"{measured:,} bytes")

# %% [markdown]
# Per token and for one full-length sequence, with a K/V head per query head (MHA), with
# Llama-3-8B's 8, and with a single one (multi-query attention):

# %%
cache_rows = [(name, kv, per_token(kv) // 1024, per_token(kv) * c["context"] / 2 ** 30)
              for name, kv in (("multi-head (MHA)", 32), ("grouped-query (Llama-3-8B)", 8),
                               ("multi-query (MQA)", 1))]
print(table(cache_rows, ["attention", "K/V heads", "KiB per token", "GiB at 8192 tokens"]))
gib = [row[3] for row in cache_rows]
check(gib[0] == 4.0 and gib[1] == 1.0 and gib[0] / gib[1] == 4,
      "one sequence of 8192 tokens: 4 GiB of cache with a K/V head per query head, 1 GiB "
      "with 8 K/V heads (4× smaller)")

# %% [markdown]
# A small Llama-style model of our own, 4 query heads sharing 2 K/V heads: its cache holds
# 2 heads per layer, and decoding with it (a padded batch of two prompts) gives the tokens
# of recomputing the whole prefix at every step.

# %%
mt.manual_seed(5)
lm = DecoderLM(LMConfig.llama(vocab=20, d_model=16, n_heads=4, n_layers=2, max_len=16,
                              n_kv_heads=2))
prompts = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
mask = prompts != 0
cached, cached_logits = lm.generate(prompts, 6, temperature=0, attention_mask=mask,
                                    return_logits=True)
plain, plain_logits = lm.generate(prompts, 6, temperature=0, attention_mask=mask,
                                  use_cache=False, return_logits=True)
keys_shape = lm.new_cache(batch=2).layers[0].self_attn.keys.shape
check(keys_shape == (2, 2, 16, 4), "a small Llama-style model with 4 query heads and 2 "
      "K/V heads caches (B, 2, max_len, d_k) per layer", str(keys_shape))
logits_gap = float(np.abs(cached_logits - plain_logits).max())
check(np.array_equal(cached, plain) and logits_gap < 1e-5,
      "and its cached decoding (padded batch) gives the tokens of recomputing the prefix",
      f"logits within {logits_gap:.1e}")

# %% [markdown]
# ## 5. RMSNorm: LayerNorm without the mean
#
#     LayerNorm(x) = (x − mean(x)) / sqrt(var(x) + eps) · w + b
#     RMSNorm(x)   = x / sqrt(mean(x²) + eps) · w          (no mean subtracted, no b)
#
# Three rows of 6 numbers, and a weight w; first with each row's mean taken out.

# %%
rng = np.random.default_rng(1)
norm_rows = rng.standard_normal((3, 6))
centred = norm_rows - norm_rows.mean(axis=-1, keepdims=True)
weight = rng.uniform(0.5, 1.5, 6)


def both(x):
    """RMSNorm and LayerNorm (b = 0) of the rows x, with the weight w."""
    x = mt.tensor(x)
    return (F.rms_norm(x, mt.tensor(weight), eps=1e-5).data,
            F.layer_norm(x, mt.tensor(weight), mt.zeros(x.shape[-1], dtype=np.float64),
                         eps=1e-5).data)


rms, layer = both(centred)
zero_mean_gap = float(np.abs(rms - layer).max())
check(zero_mean_gap < 1e-12, "on rows with mean 0 (and b = 0), var(x) = mean(x²), so the "
      "two are equal", f"max diff {zero_mean_gap:.1e}")

# %% [markdown]
# Then with a mean of about 2 in every row:

# %%
rms, layer = both(norm_rows + 2.0)
offset_gap = float(np.abs(rms - layer).max())
check(offset_gap > 0.1, "on rows with a mean they differ: RMSNorm keeps the mean (it only "
      "rescales), LayerNorm removes it", f"max diff {offset_gap:.3f}")
unit = F.rms_norm(mt.tensor(norm_rows + 2.0), eps=0.0).data
check(np.allclose(np.sqrt((unit ** 2).mean(axis=-1)), 1.0),
      "RMSNorm's output (w = 1) has root mean square 1 in every row")

# %% [markdown]
# Dropped: one mean per row in the forward and backward, and the d bias parameters.

# %%
numbers = {"rotation_error": rotation_error, "shift_error": shift_error,
           "diagonal_error": diagonal_error, "diagonal_spread": diagonal_spread,
           "sinusoidal_gap": sinusoidal_gap, "rotary_gap": rotary_gap,
           "bytes_per_token": measured, "gib": gib, "logits_gap": logits_gap,
           "zero_mean_gap": zero_mean_gap, "offset_gap": offset_gap,
           "files": [str(rope_picture), str(sinusoidal_picture)]}
