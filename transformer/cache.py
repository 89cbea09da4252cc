"""The KV cache: keys and values of past positions, kept so decoding one more token costs
one position's work instead of recomputing the whole prefix.

Per layer, self-attention K and V live in buffers preallocated at (B, n_kv_heads, max_len,
d_k) (with grouped-query attention, only the shared K/V heads, not one per query head);
each step writes its new positions in place (no concatenation of the history). The
cross-attention K and V of the encoder memory depend only on the source, so they are
projected once per source and reused at every step.

    >>> from transformer import DecoderLM, LMConfig
    >>> model = DecoderLM(LMConfig.gpt2(vocab=16, d_model=8, n_heads=2, n_layers=1, d_ff=16,
    ...                                 max_len=8))
    >>> prompt_ids, next_ids = np.array([[1, 2, 3], [4, 5, 6]]), np.array([[7], [8]])
    >>> cache = model.new_cache(batch=2)           # DecoderLM or Transformer
    >>> with mt.no_grad():
    ...     logits = model(prompt_ids, cache=cache)  # prefill
    ...     logits = model(next_ids, cache=cache)    # one more position
"""
from __future__ import annotations

import numpy as np

import microtensor as mt
from microtensor.errors import op_error


class SelfAttentionCache:
    """One self-attention layer's K and V buffers, (B, n_kv_heads, max_len, d_k) each."""

    def __init__(self, owner: KVCache, shape: tuple, dtype):
        self.owner = owner
        self.keys = np.zeros(shape, dtype=dtype)
        self.values = np.zeros(shape, dtype=dtype)
        # The attention's projections for decoding without a graph, made at the first
        # such step (transformer/fast/decode.py `AttentionStep`).
        self.fast_step = None

    def update(self, project, x):
        """Project this step's positions, write them after the cached ones, and return
        K and V of every position so far (views into the buffers, not copies)."""
        keys, values = project(x)                                # (B, h_kv, T, d_k)
        start = self.owner.length
        end = start + keys.shape[2]
        self.owner.check_room(keys.shape[2])
        self.keys[:, :, start:end] = keys.data
        self.values[:, :, start:end] = values.data
        return mt.from_numpy(self.keys[:, :, :end]), mt.from_numpy(self.values[:, :, :end])


class CrossAttentionCache:
    """One cross-attention layer's K and V of the encoder memory, projected on first use."""

    def __init__(self):
        self.keys = self.values = None
        self.projections = 0  # how many times the memory was projected (1 per source)

    def update(self, project, context):
        """The keys and values of `context`, projected by `project` on the first call and
        reused after (cross-attention reads one context)."""
        if self.keys is None:
            self.keys, self.values = project(context)
            self.projections += 1
        return self.keys, self.values


class LayerCache:
    """What one decoder layer keeps: `self_attn` buffers and, with an encoder,
    `cross_attn` K/V."""

    def __init__(self, owner, shape, dtype, cross: bool):
        self.self_attn = SelfAttentionCache(owner, shape, dtype)
        self.cross_attn = CrossAttentionCache() if cross else None


class KVCache:
    """Cached keys and values for `n_layers` decoder layers and `batch` sequences, up to
    `max_len` positions, `n_kv_heads` K/V heads of size `d_k` per layer (the model's
    n_heads without grouped-query attention).

    `length` counts the positions written so far (the same for every row). `key_valid`
    (B, max_len) records which cached positions are real tokens (False for padding), so a
    cached step masks the same keys as a full recomputation would. `n_valid` (B,) counts
    each row's real tokens, from which left-padded rows get their positions.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, d_k: int, max_len: int,
                 dtype=np.float32, cross: bool = False):
        self.max_len = max_len
        self.length = 0
        self.key_valid = np.zeros((batch, max_len), dtype=bool)
        self.n_valid = np.zeros(batch, dtype=np.int64)
        shape = (batch, n_kv_heads, max_len, d_k)
        self.layers = [LayerCache(self, shape, dtype, cross) for _ in range(n_layers)]
        # A DecoderLM's folded weights for decoding without a graph
        # (transformer/fast/decode.py), made at this cache's first such step.
        self.fast_decoder = None

    @property
    def batch(self) -> int:
        """How many sequences the cache holds."""
        return self.key_valid.shape[0]

    def check_room(self, n_new: int) -> None:
        """Refuse, with the fix, `n_new` positions that would not fit in the cache."""
        if self.length + n_new > self.max_len:
            raise op_error("KVCache", f"cannot add {n_new} positions to {self.length} cached "
                           f"ones: the cache holds max_len={self.max_len}",
                           fix="start a new cache (model.new_cache) or a shorter sequence")

    def begin(self, valid_new: np.ndarray):
        """Record the validity of the positions about to be added (B, T).

        Returns the key mask of every position so far, (B, 1, 1, length + T), and the
        positions (B, T) of the new tokens counted over real tokens only.
        """
        batch, n_new = valid_new.shape
        if batch != self.batch:
            raise op_error("KVCache", f"the cache was made for batch {self.batch}, got input "
                           f"with batch {batch}", fix="make a cache per batch size")
        self.check_room(n_new)
        end = self.length + n_new
        self.key_valid[:, self.length:end] = valid_new
        positions = self.n_valid[:, None] + valid_new.cumsum(axis=1) - 1
        return self.key_valid[:, None, None, :end], np.maximum(positions, 0)

    def advance(self, valid_new: np.ndarray) -> None:
        """Count the positions just written (call after every layer has seen them)."""
        self.length += valid_new.shape[1]
        self.n_valid += valid_new.sum(axis=1)

    def cross_projections(self) -> int:
        """Total number of encoder-memory K/V projections made through this cache."""
        return sum(layer.cross_attn.projections for layer in self.layers
                   if layer.cross_attn is not None)
