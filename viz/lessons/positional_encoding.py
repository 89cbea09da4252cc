"""Positional encoding: attention alone does not see order; adding positions fixes it.

Notes: "因为注意力机制本身不包含顺序信息，位置编码为模型提供序列的位置信息。"
"Since self-attention is permutation-invariant, positional encoding is required to inject
order information into the model."

Precisely: self-attention is permutation-*equivariant*. Shuffle the tokens and the outputs
are shuffled the same way, each token's output unchanged. So 我想吃苹果 and 苹果吃想我 give
我 the very same vector. Adding PE[pos] to each embedding makes the output depend on order.
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt
from transformer.attention import MultiHeadAttention
from transformer.layers import PositionalEncoding

from ..heatmap import heatmap_svg
from .common import check, fmt, heading, no_player, output_dir

NAME = "positional-encoding"
SUMMARY = "self-attention is permutation-equivariant (我想吃苹果 vs 苹果吃想我); the sinusoidal table restores order"

TOKENS = ["我", "想", "吃", "苹果"]
D_MODEL, MAX_LEN = 16, 50


def paper_formula(pos: int, dim: int, d_model: int) -> float:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)); PE(pos, 2i+1) = cos(the same angle)."""
    two_i = dim - dim % 2
    angle = pos / 10000 ** (two_i / d_model)
    return math.sin(angle) if dim % 2 == 0 else math.cos(angle)


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    no_player(NAME, step, html, echo)
    mt.manual_seed(7)
    attention = MultiHeadAttention(d_model=D_MODEL, n_heads=2)
    positional = PositionalEncoding(D_MODEL, max_len=MAX_LEN, kind="sinusoidal")
    x = mt.randn(1, len(TOKENS), D_MODEL)
    reverse = [3, 2, 1, 0]
    echo("注意力机制本身不包含顺序信息: is 我想吃苹果 the same to attention as 苹果吃想我?")
    echo("Sentence A: " + " ".join(TOKENS) + "    Sentence B (reversed): "
         + " ".join(TOKENS[i] for i in reverse))
    echo("Same token embeddings in both; self-attention (2 heads, d_model=16).")

    heading(echo, "1. without positional encoding: order is invisible")
    out_a = attention(x).data[0]
    out_b = attention(x[:, reverse]).data[0]
    equivariance_error = float(np.abs(out_b - out_a[reverse]).max())
    echo(f"output of 我 in A: {fmt(out_a[0][:4])} ...")
    echo(f"output of 我 in B: {fmt(out_b[3][:4])} ...")
    check(equivariance_error < 1e-5, "attention(P x) = P attention(x): every token gets the "
          "same output whatever the order", f"max diff {equivariance_error:.1e}", echo)
    rng = np.random.default_rng(0)
    perms_ok = all(np.abs(attention(x[:, p]).data[0] - out_a[p]).max() < 1e-5
                   for p in (rng.permutation(4) for _ in range(5)))
    check(perms_ok, "and so for 5 more random permutations", "", echo)

    heading(echo, "2. with positional encoding: x + PE[pos], order matters")
    out_a_pe = attention(positional(x)).data[0]
    out_b_pe = attention(positional(x[:, reverse])).data[0]
    order_effect = float(np.abs(out_b_pe - out_a_pe[reverse]).max())
    echo(f"output of 我 in A: {fmt(out_a_pe[0][:4])} ...")
    echo(f"output of 我 in B: {fmt(out_b_pe[3][:4])} ...")
    check(order_effect > 1e-2, "attention(P x + PE) ≠ P attention(x + PE): 我 at position 0 "
          "and 我 at position 3 now get different outputs", f"max diff {order_effect:.3f}",
          echo)

    heading(echo, "3. the sinusoidal table")
    echo("PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / "
         "10000^(2i/d_model))")
    table = positional(mt.zeros(1, MAX_LEN, D_MODEL)).data[0].astype(np.float64)
    echo(f"PE[0:6, 0:6] (d_model = {D_MODEL}):\n" + fmt(table[:6, :6]))
    formula = np.array([[paper_formula(p, i, D_MODEL) for i in range(D_MODEL)]
                        for p in range(MAX_LEN)])
    formula_error = float(np.abs(table - formula).max())
    check(formula_error < 1e-6, "PositionalEncoding adds exactly the paper's formula",
          f"max diff {formula_error:.1e}", echo)
    check(np.allclose(table[0], np.tile([0.0, 1.0], D_MODEL // 2)),
          "position 0 is [sin 0, cos 0, ...] = [0, 1, 0, 1, ...]", "", echo)
    check(np.abs(table).max() <= 1.0, "every entry lies in [-1, 1], whatever the length",
          "", echo)
    distinct = len({tuple(np.round(row, 6)) for row in table})
    check(distinct == MAX_LEN, f"all {MAX_LEN} positions get distinct codes", "", echo)
    # Each (sin, cos) pair rotates by a fixed angle per position, so PE[pos + k] is a
    # linear function of PE[pos]: relative offsets are easy for attention to use.
    k, i = 3, 2
    omega = 1 / 10000 ** (2 * i / D_MODEL)
    # [sin(w(p+k)), cos(w(p+k))] = [sin wp, cos wp] @ [[cos wk, -sin wk], [sin wk, cos wk]]
    rotation = np.array([[math.cos(omega * k), -math.sin(omega * k)],
                         [math.sin(omega * k), math.cos(omega * k)]])
    shifted = table[:-k, 2 * i:2 * i + 2] @ rotation
    rotation_error = float(np.abs(shifted - table[k:, 2 * i:2 * i + 2]).max())
    check(rotation_error < 1e-5, f"PE[pos + {k}] is a fixed rotation of PE[pos] (dims "
          f"{2 * i}, {2 * i + 1}), for every pos", f"max diff {rotation_error:.1e}", echo)

    picture = heatmap_svg(table, out / "positional-encoding.svg",
                          title=f"sinusoidal positional encoding, {MAX_LEN} positions × "
                                f"{D_MODEL} dims",
                          row_labels=[str(p) if p % 5 == 0 else "" for p in range(MAX_LEN)],
                          col_labels=[str(i) for i in range(D_MODEL)], cell=14)
    echo(f"wrote {picture}")
    return {"equivariance_error": equivariance_error, "order_effect": order_effect,
            "formula_error": formula_error, "rotation_error": rotation_error,
            "table_slice": table[:6, :6].tolist(), "files": [str(picture)]}
