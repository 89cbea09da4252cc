"""Rotary position embedding (RoPE, Su et al. 2021), as Llama and its descendants use it.

Instead of adding a position vector to the token embedding, RoPE rotates each query and
each key by an angle proportional to its position: dimension pair i turns by
pos * theta^(-2i/d). A rotation preserves lengths, and the dot product of two rotated
vectors depends only on the difference of their angles, so q·k after RoPE depends on the
offset between the two positions, never on where they sit in the sequence.

Pairing: the "rotate-half" layout of Hugging Face `transformers` (Llama, Mistral, Qwen):
dimension j is paired with j + d/2 (not with j + 1 as in the paper's interleaved form), so
q/k weights stored by `transformers` load without permuting their rows.

    >>> rope = RotaryEmbedding(head_dim=8)
    >>> rotation = rope(np.arange(5))                 # positions 0..4 -> cos, sin (1, 1, 5, 8)
    >>> q = apply_rotary(mt.randn(2, 4, 5, 8), rotation)   # (B, h, T, d_k), same shape
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

import microtensor as mt
from microtensor.errors import op_error
from microtensor.nn import Module
from microtensor.tensor import DEFAULT_FLOAT


class Rotation(NamedTuple):
    """cos and sin of every position's angles, (B or 1, 1, T, d_k) each, broadcasting over
    the heads of (B, h, T, d_k) queries and keys."""
    cos: np.ndarray
    sin: np.ndarray


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] over the last axis split in halves: each pair (x1_j, x2_j)
    turned by 90 degrees. Composed of split, neg and concat, so the graph shows it."""
    first, second = x.split(x.shape[-1] // 2, axis=-1)
    return mt.concat([-second, first], axis=-1)


def apply_rotary(x, rotation: Rotation):
    """Rotate each pair (x_j, x_{j+d/2}) of x (..., T, d_k) by its position's angle:
    x * cos + rotate_half(x) * sin. The backward is the opposite rotation (a rotation's
    transpose is its inverse); here it comes from the mul, split and concat nodes."""
    if x.shape[-1] != rotation.cos.shape[-1]:
        raise op_error("apply_rotary", f"x {tuple(x.shape)} has head size {x.shape[-1]} but "
                       f"the rotation was made for {rotation.cos.shape[-1]}",
                       fix="make the RotaryEmbedding with head_dim = d_model // n_heads")
    return x * rotation.cos + rotate_half(x) * rotation.sin


class RotaryEmbedding(Module):
    """Angles for rotary positions: `rope(positions)` gives the `Rotation` (cos, sin) that
    `apply_rotary` applies to queries and keys. It has no parameters.

    inv_freq_i = theta^(-2i / head_dim) for i < head_dim / 2, as in Llama (`rope_theta`,
    default 10000). `positions` is (T,) or (B, T) integers: a cached decoder passes the
    positions after the cached ones, and left-padded rows count from their first real
    token, so cached and uncached decoding rotate every key the same way. Angles are
    computed in float64 and then cast to `dtype`.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) \
                or head_dim <= 0 or head_dim % 2:
            raise op_error("RotaryEmbedding", f"head_dim must be a positive even integer "
                           f"(dimensions are rotated in pairs), got {head_dim!r}",
                           fix="choose d_model and n_heads so that d_model // n_heads is even")
        if not (isinstance(theta, (int, float)) and theta > 1):
            raise op_error("RotaryEmbedding", f"theta must be a number > 1, got {theta!r}",
                           fix="Llama uses 10000.0 (Llama 3: 500000.0)")
        self.head_dim, self.theta = int(head_dim), float(theta)
        self.inv_freq = 1.0 / self.theta ** (np.arange(0, head_dim, 2) / head_dim)  # (d/2,)

    def forward(self, positions, dtype=DEFAULT_FLOAT) -> Rotation:
        positions = np.asarray(positions)
        if positions.ndim == 1:
            positions = positions[None, :]
        if positions.ndim != 2 or positions.dtype.kind not in "iu":
            raise op_error("RotaryEmbedding", f"positions must be integers shaped (T,) or "
                           f"(B, T), got dtype {positions.dtype} with shape {positions.shape}",
                           TypeError)
        angles = positions[..., None] * self.inv_freq                  # (B, T, d/2)
        angles = np.concatenate([angles, angles], axis=-1)[:, None]    # (B, 1, T, d)
        return Rotation(np.cos(angles).astype(dtype), np.sin(angles).astype(dtype))

    def extra_repr(self):
        return f"head_dim={self.head_dim}, theta={self.theta:g}"
