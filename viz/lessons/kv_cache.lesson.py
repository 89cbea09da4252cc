"""The KV cache: what it holds, why Q is not in it, and what it saves: a literate lesson
(see viz.lessons.literate).

Run it: `python -m viz lesson kv-cache`; as a notebook: `python -m viz lesson kv-cache --notebook`.
"""
SUMMARY = ("the notes' 我想吃 K/V table, q_苹果 against the cache, why Q is not cached, "
           "cached == uncached and the speedup")

# %% [markdown]
# # The KV cache: what it holds, why Q is not in it, what it saves
#
# The notes' example is a conversation that has reached 我想吃 and is about to say 苹果:
# 我 想 吃 苹果 is "I want to eat apple" (我 I, 想 want, 吃 eat, 苹果 apple).
#
# The notes (KV cache缓存的具体内容, *what exactly the KV cache holds*): "对于每一个已经处理过的词
# （Token），系统会把它的 x·W_k 和 x·W_v 的结果存下来" — *for every token already processed, the
# system stores its x·W_k and x·W_v*. While decoding, each layer keeps x·W_k, each token's
# "身份标签" (*identity label*), and x·W_v, its "内容特征" (*content features*): that is the
# KV cache. Change the numbers below and run the cells again.

# %% tags=["parameters"]
out_dir = None     # where the picture goes (default: lesson-output/kv-cache/)
step = False       # this lesson has no backward graph to step through
html = False

# %%
import math
import time

import numpy as np

import microtensor as mt
from transformer.attention import scaled_dot_product_attention
from transformer.config import LMConfig
from transformer.lm import DecoderLM
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, fmt, no_player, output_dir, table

out = output_dir("kv-cache", out_dir)
no_player("kv-cache", step, html, print)
print(f"pictures go to {out}")

# %% [markdown]
# ## 1. The cache after 我想吃: 3 keys + 3 values = 6 vectors
#
# The notes' table, one row per token already processed. "这 6 条向量就是 KV Cache。" —
# *these 6 vectors are the KV cache.*

# %%
TOKENS = ["我", "想", "吃"]
KEYS = np.array([[1.1, 0.2, 0.5, 0.1],     # the notes' table: x·W_k
                 [0.3, 1.2, 0.1, 0.4],
                 [0.9, 0.1, 1.1, 0.3]])
VALUES = np.array([[0.1, 0.9, 0.0, 0.2],   # x·W_v
                   [0.5, 0.1, 0.8, 0.0],
                   [0.2, 0.2, 0.1, 0.9]])

print(table([(t, fmt(k), fmt(v)) for t, k, v in zip(TOKENS, KEYS, VALUES)],
            ["token", "x·W_k (Key)", "x·W_v (Value)"]))
check(KEYS.shape == (3, 4) and VALUES.shape == (3, 4),
      "the cache holds 3 keys and 3 values, each a 1×4 vector")

# %% [markdown]
# ## 2. Next token 苹果: one new query against the cached keys
#
# To produce 苹果 the model "算出'苹果'的查询向量 q_apple" (*computes 苹果's query vector*),
# "直接从内存里取出上面这 3 条 Key 进行点积，算出权重" (*takes the 3 keys above straight from
# memory and dots them to get the weights*), and "直接从内存里取出上面这 3 条 Value 进行加权求和"
# (*takes the 3 values straight from memory and sums them with those weights*).
#
# The notes do not give q_苹果; this one looks for eating-related keys (dims 0 and 2). First
# the dot products, by hand, each divided by √d_k.

# %%
Q_APPLE = np.array([1.0, 0.0, 1.0, 0.5])

print(f"q_苹果 = {fmt(Q_APPLE)}")
d_k = len(Q_APPLE)
dots = []
for token, key in zip(TOKENS, KEYS):
    dot = sum(q * k for q, k in zip(Q_APPLE, key))
    dots.append(dot)
    terms = " + ".join(f"{q:g}*{k:g}" for q, k in zip(Q_APPLE, key))
    print(f"  q·k_{token} = {terms} = {dot:.4f}   / √{d_k} = {dot / math.sqrt(d_k):.4f}")
scores = [dot / math.sqrt(d_k) for dot in dots]

# %% [markdown]
# Then the softmax of those scores, and the weighted sum of the 3 cached values.

# %%
exps = [math.exp(s) for s in scores]
weights = [e / sum(exps) for e in exps]
print("  softmax: " + ", ".join(f"exp({s:.3f}) = {e:.4f}" for s, e in zip(scores, exps))
      + f";  sum = {sum(exps):.4f}")
print("  weights = " + ", ".join(f"{t} {w:.4f}" for t, w in zip(TOKENS, weights)))
output = [sum(w * v[i] for w, v in zip(weights, VALUES)) for i in range(4)]
print("  output = " + " + ".join(f"{w:.4f}*v_{t}" for t, w in zip(TOKENS, weights))
      + f" = {fmt(output)}")

# %% [markdown]
# The library's attention, given the one query and the cache, must agree with the hand
# computation.

# %%
out_apple, attn = scaled_dot_product_attention(mt.tensor(Q_APPLE[None]), mt.tensor(KEYS),
                                               mt.tensor(VALUES))
check(np.allclose(attn.data[0], weights, atol=1e-12),
      "scaled_dot_product_attention's weights match the hand computation",
      fmt(attn.data[0]))
check(np.allclose(out_apple.data[0], output, atol=1e-12),
      "its output matches the hand-computed weighted sum of the 3 cached values",
      fmt(out_apple.data[0]))
check(abs(sum(weights) - 1) < 1e-12 and int(np.argmax(weights)) == 2,
      "the weights sum to 1, and 吃 is the most relevant cached token")

# %% [markdown]
# ## 3. Why only K and V are cached, never Q (为什么不缓存 Q)
#
# The notes (为什么只缓存 K 和 V，而不缓存 Q？): "Q (Query) 不需要缓存：q_i 代表的是'当前正在生成的
# 这个词'要找什么。一旦第 i 个词生成完了，它的 q_i 就没用了" — *Q needs no cache: q_i is what the
# word being generated now is looking for; once word i is generated, its q_i is of no more
# use.* "K 和 V 必须缓存" — *K and V must be cached*: every later word compares itself with
# the keys of all the words before it and draws on their values.
#
# Recompute the whole sequence 我 想 吃 苹果 with causal attention, keeping every query, and
# ask autograd what the newest output depends on. The old queries are random: any will do.

# %%
rng = np.random.default_rng(0)
Q_old = mt.tensor(rng.standard_normal((3, 4)), requires_grad=True)   # q_我, q_想, q_吃
K_old = mt.tensor(KEYS.copy(), requires_grad=True)
V_old = mt.tensor(VALUES.copy(), requires_grad=True)
k_apple, v_apple = np.array([0.2, 0.1, 1.0, 1.2]), np.array([0.0, 0.3, 0.9, 0.4])
Q = mt.concat([Q_old, mt.tensor(Q_APPLE[None])])
K = mt.concat([K_old, mt.tensor(k_apple[None])])
V = mt.concat([V_old, mt.tensor(v_apple[None])])
full, _ = scaled_dot_product_attention(Q, K, V, causal=True)
newest = full[3]
cached, _ = scaled_dot_product_attention(mt.tensor(Q_APPLE[None]), K.detach(), V.detach())
check(np.allclose(newest.data, cached.data[0], atol=1e-12),
      "the newest row of full recomputation equals one cached step (q_苹果 with all K, V)",
      fmt(cached.data[0]))

# %% [markdown]
# Back-propagate from the newest output, out_苹果: the gradient that reaches each old query,
# key and value says how much out_苹果 depends on it.

# %%
newest.sum().backward()
grad_q, grad_k, grad_v = (np.abs(t.grad).max() for t in (Q_old, K_old, V_old))
print(f"  max |d out_苹果 / d q_old| = {grad_q:g}")
print(f"  max |d out_苹果 / d k_old| = {grad_k:.4f},  max |d out_苹果 / d v_old| = {grad_v:.4f}")
check(grad_q == 0, "the new output does not depend on the old queries at all: "
      "q_i is used once, by token i, then never again")
per_token = [np.abs(t.grad).sum(axis=1) for t in (K_old, V_old)]
check(all((g > 0).all() for g in per_token),
      "it does depend on every old key and value: those must be kept (cached)")

# %% [markdown]
# ## 4. A real DecoderLM: cached and uncached decoding
#
# "如果不缓存，模型每吐出一个字，都要把前面所有的字重新送进 W_k 和 W_v 算一遍" — *without a cache,
# for every token it emits the model has to send all the earlier ones through W_k and W_v
# again.* A small GPT-2-style model (2 layers) decodes after a 3-token prompt (think 我 想 吃),
# with and without its cache. A forward hook on each layer's W_k counts the rows (positions)
# it projects.

# %%
def count_kv_rows(model: DecoderLM) -> tuple[list, list]:
    """A forward hook on each layer's W_k that counts the positions (rows) it projects;
    returns the counter and the hooks' handles."""
    counter = [0]

    def count(module, args, output):
        counter[0] += args[0].shape[0] * args[0].shape[1]
    return counter, [block.self_attn.W_k.register_forward_hook(count)
                     for block in model.blocks]


mt.manual_seed(0)
model = DecoderLM(LMConfig.gpt2(vocab=64, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                                max_len=256))
prompt = np.array([[1, 2, 3]])   # think 我 想 吃
n_layers, p = len(model.blocks), prompt.shape[1]
print(f"DecoderLM: {n_layers} layers, a {p}-token prompt {prompt[0].tolist()}")

# %% [markdown]
# Decode 8, 16 and 32 new tokens both ways. The tokens and logits must agree; the rows
# projected must be layers·(p + n - 1) with the cache (each new token once) and
# layers·Σ(p + i) without it (the whole text again at every step). The smaller n are checked
# silently; only n = 32 prints its checks.

# %%
rows = []
for n_new in (8, 16, 32):
    results = {}
    for use_cache in (True, False):
        counter, handles = count_kv_rows(model)
        ids, logits = model.generate(prompt, n_new, temperature=0, use_cache=use_cache,
                                     return_logits=True)
        for handle in handles:
            handle.remove()
        results[use_cache] = (ids, logits, counter[0])
    (ids_c, logits_c, rows_c), (ids_u, logits_u, rows_u) = results[True], results[False]
    say = print if n_new == 32 else None
    check(np.array_equal(ids_c, ids_u),
          f"{n_new} new tokens: cached and uncached decoding give the same tokens", "", say)
    check(np.allclose(logits_c, logits_u, atol=1e-5),
          f"{n_new} new tokens: and the same logits (to 1e-5)",
          f"max diff {np.abs(logits_c - logits_u).max():.1e}", say)
    expected_cached = n_layers * (p + n_new - 1)
    expected_uncached = n_layers * sum(p + i for i in range(n_new))
    check(rows_c == expected_cached and rows_u == expected_uncached,
          "K/V rows projected: cached = layers·(p + n - 1), uncached = layers·Σ(p + i)",
          f"{rows_c} and {rows_u}", None)
    rows.append((n_new, rows_c, rows_u, rows_u / rows_c))

# %% [markdown]
# The work, side by side: O(n) with the cache, O(n²) without.

# %%
print("rows sent through W_k and W_v (all layers) to generate n tokens after a "
      f"{p}-token prompt:")
print(table(rows, ["n new", "cached O(n)", "uncached O(n^2)", "ratio"]))
check(rows[-1][3] > rows[0][3] * 1.5,
      "the saving grows with the text: the uncached/cached ratio rises with n",
      " → ".join(f"{r[3]:.1f}x" for r in rows))
print(f"generated ids: {ids_c[0].tolist()}")

# %% [markdown]
# ## 5. Measured speed
#
# Reported, not checked: wall-clock time depends on what else the machine is doing. The
# claim itself (O(n) against O(n²) work) is checked above by counting rows.

# %%
n_new = 200
timings = {}
for use_cache in (True, False):
    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        model.generate(prompt, n_new, temperature=0, use_cache=use_cache)
        best = min(best, time.perf_counter() - start)
    timings[use_cache] = best
speedup = timings[False] / timings[True]
print(f"{n_new} tokens: cached {timings[True] * 1000:.0f} ms "
      f"({n_new / timings[True]:.0f} tokens/s), uncached {timings[False] * 1000:.0f} ms "
      f"({n_new / timings[False]:.0f} tokens/s): {speedup:.1f}x faster with the cache")

# %% [markdown]
# ## The picture
#
# The rows projected, cached and uncached, for each n.

# %%
counts = np.array([[r[1] for r in rows], [r[2] for r in rows]], dtype=float)
picture = heatmap_svg(counts, out / "kv-cache-rows.svg",
                      title="K/V rows projected: cached vs uncached",
                      row_labels=["cached", "uncached"],
                      col_labels=[f"n={r[0]}" for r in rows], cell=60)
print(f"wrote {picture}")
numbers = {"scores": scores, "weights": weights, "output": output,
           "grad_old_queries": float(grad_q), "grad_old_keys": float(grad_k),
           "tokens_equal": True, "rows": rows, "speedup": speedup, "files": [str(picture)]}
