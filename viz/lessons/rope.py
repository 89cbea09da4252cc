"""Rotary positions and the other parts today's decoders changed (Llama, Mistral, Qwen).

This goes one step past the notes. The sinusoidal table *adds* PE[pos] to each token, so a
token's vector, and every score it takes part in, depends on where the token sits.
Rotary position embedding (RoPE) instead *rotates* q and k: dimension pair i of a vector
at position m turns by the angle m·θ_i, with θ_i = theta^(-2i/d). Since
R(m)ᵀ R(n) = R(n - m), the score q·k after rotation depends only on the offset n - m.
The lesson also counts what grouped-query attention saves in the KV cache of a real model,
and shows what RMSNorm drops from LayerNorm.
"""
from __future__ import annotations

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

from ..heatmap import heatmap_svg
from .common import check, fmt, heading, no_player, output_dir, table

NAME = "rope"
SUMMARY = ("rotary positions: q·k depends only on the offset (vs the sinusoidal table's "
           "absolute positions); GQA's smaller KV cache; RMSNorm vs LayerNorm")

TOKENS = ["我", "想", "吃", "苹果"]
HEAD_DIM, THETA, N_POSITIONS = 8, 10000.0, 12
# Llama-3-8B's published config.json: 32 layers, 32 query heads, 8 K/V heads, head_dim
# 128 (hidden 4096), 8192 positions, weights and cache in bfloat16 (2 bytes a number).
LLAMA3_8B = {"layers": 32, "heads": 32, "kv_heads": 8, "head_dim": 128, "context": 8192,
             "bytes": 2}


def rotate(vector: np.ndarray, position: int, rope: RotaryEmbedding) -> np.ndarray:
    """apply_rotary on one (d,) vector at one position, in float64."""
    rotation = rope(np.array([position]), dtype=np.float64)
    return apply_rotary(mt.tensor(vector[None, None, None]), rotation).data[0, 0, 0]


def the_rotation(echo, rope, q) -> dict:
    heading(echo, "1. the rotation: pair (j, j + d/2) turns by position × θ_j")
    echo(f"head_dim d = {HEAD_DIM}, theta = {THETA:g}: θ_j = theta^(-2j/d) = "
         f"{fmt(rope.inv_freq)} radians per position")
    echo("Pairs are (0, 4), (1, 5), (2, 6), (3, 7): the 'rotate-half' layout of Llama in "
         "Hugging Face transformers.")
    position = 3
    by_hand = q.copy()
    half = HEAD_DIM // 2
    for j, theta_j in enumerate(rope.inv_freq):
        angle = position * theta_j
        c, s = math.cos(angle), math.sin(angle)
        by_hand[j] = c * q[j] - s * q[j + half]          # [[cos, -sin], [sin, cos]] @ pair
        by_hand[j + half] = s * q[j] + c * q[j + half]
    rotated = rotate(q, position, rope)
    echo(f"q_吃             = {fmt(q)}")
    echo(f"q_吃 at pos {position}    = {fmt(rotated)}")
    rotation_error = float(np.abs(rotated - by_hand).max())
    check(rotation_error < 1e-12, "apply_rotary = a 2×2 rotation of each pair (j, j+d/2) by "
          "position·θ_j", f"max diff {rotation_error:.1e}", echo)
    check(abs(np.linalg.norm(rotated) - np.linalg.norm(q)) < 1e-12,
          "a rotation keeps the length: |q| is unchanged", f"|q| = {np.linalg.norm(q):.4f}",
          echo)
    check(np.allclose(rotate(q, 0, rope), q, atol=0), "position 0 is no rotation at all", "",
          echo)
    return {"rotation_error": rotation_error}


def only_the_offset(echo, rope, q, k, out) -> dict:
    heading(echo, "2. after RoPE, q·k depends only on the offset n − m")
    echo("R(m)ᵀ R(n) = R(n − m): rotate q by m and k by n, and their dot product is "
         "q·R(n−m)k.")
    scores = np.array([[rotate(q, m, rope) @ rotate(k, n, rope) for n in range(N_POSITIONS)]
                       for m in range(N_POSITIONS)])
    rows = []
    for shift in (1, 10, 1000):
        rows.append((f"m=2, n=5 -> m={2 + shift}, n={5 + shift}", scores[2, 5],
                     rotate(q, 2 + shift, rope) @ rotate(k, 5 + shift, rope)))
    echo(table(rows, ["positions of q_吃 and k_苹果", "score before", "after the shift"]))
    shift_error = max(abs(before - after) for _, before, after in rows)
    check(shift_error < 1e-9, "shifting both positions by the same amount leaves the score "
          "unchanged", f"max diff {shift_error:.1e}", echo)
    diagonal_error = max(float(np.ptp(np.diagonal(scores, offset)))
                         for offset in range(-N_POSITIONS + 1, N_POSITIONS))
    check(diagonal_error < 1e-9, f"the {N_POSITIONS}×{N_POSITIONS} score table is constant "
          "along every diagonal (each diagonal is one offset)",
          f"largest spread {diagonal_error:.1e}", echo)
    check(np.ptp(scores[0]) > 0.1, "and it does change with the offset: position is seen",
          f"row 0 spans {np.ptp(scores[0]):.3f}", echo)
    picture = position_table_svg(scores, out / "rope-scores.svg",
                                 "RoPE: q·k for q at position m (rows), k at n (columns)")
    echo(f"wrote {picture}")
    return {"shift_error": shift_error, "diagonal_error": diagonal_error,
            "files": [str(picture)]}


def position_table_svg(table, path, title: str):
    """A heatmap of scores, query position m down the rows and key position n across."""
    positions = [str(p) for p in range(N_POSITIONS)]
    return heatmap_svg(table, path, title=title, row_labels=positions, col_labels=positions,
                       cell=30)


def versus_sinusoidal(echo, q, k, x, out) -> dict:
    heading(echo, "3. the sinusoidal table: absolute positions")
    echo("With x + PE[pos], the same two tokens at (m, n) and at (m + s, n + s) get different")
    echo("scores: the table adds a vector that depends on the position itself, not on the "
         "offset.")
    table_8 = PositionalEncoding(HEAD_DIM, max_len=N_POSITIONS).pe.astype(np.float64)
    added = np.array([[(q + table_8[m]) @ (k + table_8[n]) for n in range(N_POSITIONS)]
                      for m in range(N_POSITIONS)])
    diagonal_spread = max(float(np.ptp(np.diagonal(added, offset)))
                          for offset in range(-N_POSITIONS + 2, N_POSITIONS - 1))
    check(diagonal_spread > 0.1, "(q_吃 + PE[m])·(k_苹果 + PE[n]) is not constant along the "
          "diagonals: the same offset gives different scores at different places",
          f"a diagonal spans up to {diagonal_spread:.3f}", echo)
    picture = position_table_svg(added, out / "sinusoidal-scores.svg",
                                 "x + PE[pos]: (q + PE[m])·(k + PE[n]), m rows, n columns")
    echo(f"wrote {picture}")

    echo("In a whole attention layer (2 heads, the same weights for both kinds of position):")
    d_model = x.shape[-1]
    positional = PositionalEncoding(d_model, max_len=1100, kind="sinusoidal")
    mt.manual_seed(3)
    sinusoidal = MultiHeadAttention(d_model, n_heads=2, bias=False)
    rotary = MultiHeadAttention(d_model, n_heads=2, bias=False)
    for name in ("W_q", "W_k", "W_v", "W_o"):
        getattr(rotary, name).weight.data = getattr(sinusoidal, name).weight.data.copy()
    rope = RotaryEmbedding(d_model // 2)
    rows, sinusoidal_gap, rotary_gap = [], 0.0, 0.0
    for start in (0, 100, 1000):
        positions = np.arange(start, start + len(TOKENS))
        with mt.no_grad():
            sinusoidal(positional(x, offset=start), causal=True)
            rotary(x, causal=True, rotation=rope(positions))
        if start == 0:
            first_sinusoidal, first_rotary = (sinusoidal.last_weights.data,
                                              rotary.last_weights.data)
        sinusoidal_gap = max(sinusoidal_gap, float(np.abs(sinusoidal.last_weights.data
                                                          - first_sinusoidal).max()))
        rotary_gap = max(rotary_gap, float(np.abs(rotary.last_weights.data
                                                  - first_rotary).max()))
        rows.append((f"{start}..{start + 3}", fmt(sinusoidal.last_weights.data[0, 0, 3]),
                     fmt(rotary.last_weights.data[0, 0, 3])))
    echo("attention weights of 苹果 (head 0) over 我 想 吃 苹果, the sentence placed at:")
    echo(table(rows, ["positions", "x + PE[pos]", "RoPE"]))
    check(sinusoidal_gap > 1e-3, "with the sinusoidal table, moving the whole sentence changes "
          "the attention weights", f"max change {sinusoidal_gap:.3f}", echo)
    check(rotary_gap < 1e-5, "with RoPE, the weights are the same wherever the sentence starts",
          f"max change {rotary_gap:.1e}", echo)
    norm_change = float(abs(np.linalg.norm(positional(x, offset=5).data[0, 0])
                            - np.linalg.norm(x.data[0, 0])))
    check(norm_change > 0.1, "the table also changes the token vector itself (its length), "
          "and so V; RoPE turns only q and k, lengths kept (section 1)",
          f"|x + PE| − |x| = {norm_change:.3f}", echo)
    return {"diagonal_spread": diagonal_spread, "sinusoidal_gap": sinusoidal_gap,
            "rotary_gap": rotary_gap, "files": [str(picture)]}


def gqa_cache(echo) -> dict:
    heading(echo, "4. grouped-query attention: fewer K/V heads, a smaller cache")
    c = LLAMA3_8B
    echo(f"Llama-3-8B (published config): {c['layers']} layers, {c['heads']} query heads, "
         f"{c['kv_heads']} K/V heads, head_dim {c['head_dim']}, context {c['context']}, "
         f"bfloat16 ({c['bytes']} bytes).")
    echo("Each group of 32 / 8 = 4 query heads shares one K/V head; the cache keeps one K and "
         "one V per K/V head, layer and token.")

    def per_token(kv_heads):
        return 2 * c["layers"] * kv_heads * c["head_dim"] * c["bytes"]     # K and V
    # Our KVCache for that shape, with float16 standing in for bfloat16 (both 2 bytes;
    # NumPy has no bfloat16), over 16 positions, to count real buffer bytes.
    sample = 16
    cache = KVCache(c["layers"], batch=1, n_kv_heads=c["kv_heads"], d_k=c["head_dim"],
                    max_len=sample, dtype=np.float16)
    measured = sum(layer.self_attn.keys.nbytes + layer.self_attn.values.nbytes
                   for layer in cache.layers) // sample
    check(measured == per_token(c["kv_heads"]) == 131072,
          "bytes per token = 2 (K, V) × 32 layers × 8 K/V heads × 128 × 2 bytes = 131,072 "
          "(128 KiB), counted on our KVCache's buffers", f"{measured:,} bytes", echo)
    rows = [(name, kv, per_token(kv) // 1024, per_token(kv) * c["context"] / 2 ** 30)
            for name, kv in (("multi-head (MHA)", 32), ("grouped-query (Llama-3-8B)", 8),
                             ("multi-query (MQA)", 1))]
    echo(table(rows, ["attention", "K/V heads", "KiB per token", "GiB at 8192 tokens"]))
    check(rows[0][3] == 4.0 and rows[1][3] == 1.0 and rows[0][3] / rows[1][3] == 4,
          "one sequence of 8192 tokens: 4 GiB of cache with a K/V head per query head, 1 GiB "
          "with 8 K/V heads (4× smaller)", "", echo)

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
          "K/V heads caches (B, 2, max_len, d_k) per layer", str(keys_shape), echo)
    logits_gap = float(np.abs(cached_logits - plain_logits).max())
    check(np.array_equal(cached, plain) and logits_gap < 1e-5,
          "and its cached decoding (padded batch) gives the tokens of recomputing the prefix",
          f"logits within {logits_gap:.1e}", echo)
    return {"bytes_per_token": measured, "gib": [row[3] for row in rows],
            "logits_gap": logits_gap}


def rms_versus_layer_norm(echo) -> dict:
    heading(echo, "5. RMSNorm: LayerNorm without the mean")
    echo("LayerNorm(x) = (x − mean(x)) / sqrt(var(x) + eps) · w + b")
    echo("RMSNorm(x)   = x / sqrt(mean(x²) + eps) · w          (no mean subtracted, no b)")
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((3, 6))
    centred = rows - rows.mean(axis=-1, keepdims=True)
    weight = rng.uniform(0.5, 1.5, 6)

    def both(x):
        x = mt.tensor(x)
        return (F.rms_norm(x, mt.tensor(weight), eps=1e-5).data,
                F.layer_norm(x, mt.tensor(weight), mt.zeros(6, dtype=np.float64),
                             eps=1e-5).data)
    rms, layer = both(centred)
    zero_mean_gap = float(np.abs(rms - layer).max())
    check(zero_mean_gap < 1e-12, "on rows with mean 0 (and b = 0), var(x) = mean(x²), so the "
          "two are equal", f"max diff {zero_mean_gap:.1e}", echo)
    rms, layer = both(rows + 2.0)
    offset_gap = float(np.abs(rms - layer).max())
    check(offset_gap > 0.1, "on rows with a mean they differ: RMSNorm keeps the mean (it only "
          "rescales), LayerNorm removes it", f"max diff {offset_gap:.3f}", echo)
    unit = F.rms_norm(mt.tensor(rows + 2.0), eps=0.0).data
    check(np.allclose(np.sqrt((unit ** 2).mean(axis=-1)), 1.0),
          "RMSNorm's output (w = 1) has root mean square 1 in every row", "", echo)
    echo("Dropped: one mean per row in the forward and backward, and the d bias parameters.")
    return {"zero_mean_gap": zero_mean_gap, "offset_gap": offset_gap}


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    no_player(NAME, step, html, echo)
    echo("Today's decoders keep attention but change how it sees positions: instead of")
    echo("adding a position vector to each token, RoPE rotates q and k by their positions.")
    rng = np.random.default_rng(0)
    rope = RotaryEmbedding(HEAD_DIM, THETA)
    q, k = rng.standard_normal(HEAD_DIM), rng.standard_normal(HEAD_DIM)   # q_吃, k_苹果
    x = mt.tensor(rng.standard_normal((1, len(TOKENS), 16)).astype(np.float32))
    rotation = the_rotation(echo, rope, q)
    offset = only_the_offset(echo, rope, q, k, out)
    sinusoidal = versus_sinusoidal(echo, q, k, x, out)
    files = offset.pop("files") + sinusoidal.pop("files")
    return {**rotation, **offset, **sinusoidal, **gqa_cache(echo),
            **rms_versus_layer_norm(echo), "files": files}
