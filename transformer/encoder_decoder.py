"""The encoder-decoder Transformer of "Attention Is All You Need".

    >>> model = Transformer(src_vocab=13, tgt_vocab=13, d_model=32, n_heads=4, n_layers=2,
    ...                     d_ff=64, max_len=16, pad_id=0)
    >>> src, tgt_in = np.array([[3, 4, 5, 6]]), np.array([[1, 6, 5]])
    >>> logits = model(src, tgt_in)                  # (B, T, tgt_vocab)
    >>> out = model.greedy_decode(src, max_len=10, bos=1, eos=2)
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt
from microtensor.errors import check_count, check_sizes, op_error
from microtensor.nn import Dropout, Embedding, Linear, Module

from .cache import KVCache
from .inputs import as_ids, check_not_empty
from .layers import Decoder, Encoder, PositionalEncoding, check_cache_mode, key_mask


class Transformer(Module):
    """Encoder-decoder Transformer. Embeddings are scaled by sqrt(d_model) and added to the
    sinusoidal positional encoding, as in the paper. `pad_id` tokens are masked as keys on
    both sides (source padding in self- and cross-attention, target padding in the
    decoder's self-attention). `norm_first=False` is the paper's post-LN.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 128, n_heads: int = 4,
                 n_layers: int = 2, d_ff: int = 512, dropout: float = 0.1, max_len: int = 256,
                 pad_id: int = 0, norm_first: bool = False, activation: str = "relu"):
        super().__init__()
        check_sizes("Transformer", src_vocab=src_vocab, tgt_vocab=tgt_vocab, d_model=d_model,
                    n_heads=n_heads, n_layers=n_layers, d_ff=d_ff, max_len=max_len)
        self.config = {"src_vocab": src_vocab, "tgt_vocab": tgt_vocab, "d_model": d_model,
                       "n_heads": n_heads, "n_layers": n_layers, "d_ff": d_ff,
                       "dropout": dropout, "max_len": max_len, "pad_id": pad_id,
                       "norm_first": norm_first, "activation": activation}
        self.d_model, self.n_heads, self.max_len, self.pad_id = d_model, n_heads, max_len, pad_id
        # std d_model^-1/2 so that after the paper's sqrt(d_model) scaling tokens have unit size
        self.src_embed = Embedding(src_vocab, d_model, std=d_model ** -0.5)
        self.tgt_embed = Embedding(tgt_vocab, d_model, std=d_model ** -0.5)
        self.position = PositionalEncoding(d_model, max_len, kind="sinusoidal")
        self.dropout = Dropout(dropout)
        self.encoder = Encoder(n_layers, d_model, n_heads, d_ff, dropout, norm_first, activation)
        self.decoder = Decoder(n_layers, d_model, n_heads, d_ff, dropout, norm_first, activation)
        self.out = Linear(d_model, tgt_vocab)

    def _embed(self, table, ids, offset=0):
        x = table(ids) * math.sqrt(self.d_model)
        return self.dropout(self.position(x, offset=offset))

    def source_mask(self, src) -> np.ndarray:
        """(B, 1, 1, S): True at real source tokens (not `pad_id`)."""
        return key_mask(as_ids(src, "Transformer") != self.pad_id)

    def encode(self, src, src_mask=None):
        """Source ids (B, S) -> memory (B, S, d_model). `src_mask` (B, S) or broadcastable
        to (B, h, S, S), True = may attend; default: every non-pad token."""
        src = as_ids(src, "Transformer.encode")
        check_not_empty("Transformer.encode", "source", src)
        mask = self.source_mask(src) if src_mask is None else key_mask(src_mask)
        return self.encoder(self._embed(self.src_embed, src), mask=mask)

    def decode(self, tgt, memory, src_mask=None, tgt_mask=None, cache: KVCache | None = None,
               src=None):
        """Target ids (B, T) and memory -> logits (B, T, tgt_vocab).

        `src_mask`: (B, S) keys of the memory that may be attended (pass the source's, or
        the `src` ids to derive it). `tgt_mask`: (B, T) real target tokens, default
        tgt != pad_id; the self-attention is causal on top of it. With `cache` (under
        `mt.no_grad()`), `tgt` holds only the new positions.
        """
        tgt = as_ids(tgt, "Transformer.decode")
        check_cache_mode("Transformer.decode", cache)
        check_not_empty("Transformer.decode", "target", tgt)
        if tgt.shape[0] != memory.shape[0]:
            raise op_error("Transformer.decode", f"target ids {tgt.shape} and memory "
                           f"{tuple(memory.shape)} have different batch sizes",
                           fix="decode each source's memory with its own target row")
        if src_mask is None and src is not None:
            src_mask = self.source_mask(src)
        memory_mask = None if src_mask is None else key_mask(src_mask)
        valid = (tgt != self.pad_id) if tgt_mask is None else np.asarray(tgt_mask, dtype=bool)
        if cache is None:
            x = self._embed(self.tgt_embed, tgt)
            x = self.decoder(x, memory, key_mask(valid), memory_mask)
        else:
            self_mask, _ = cache.begin(valid)
            x = self._embed(self.tgt_embed, tgt, offset=cache.length)
            x = self.decoder(x, memory, self_mask, memory_mask, cache=cache)
            cache.advance(valid)
        return self.out(x)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None):
        """Teacher forcing: logits (B, T, tgt_vocab) for target inputs `tgt`."""
        src, tgt = as_ids(src, "Transformer"), as_ids(tgt, "Transformer")
        if src.shape[0] != tgt.shape[0]:
            raise op_error("Transformer", f"src {src.shape} and tgt {tgt.shape} have "
                           f"different batch sizes ({src.shape[0]} and {tgt.shape[0]})",
                           fix="pass one target row per source row")
        check_not_empty("Transformer", "source", src)
        check_not_empty("Transformer", "target", tgt)
        if src_mask is None:
            src_mask = self.source_mask(src)
        return self.decode(tgt, self.encode(src, src_mask), src_mask, tgt_mask)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty KVCache for `batch` target sequences of up to `max_len` tokens."""
        return KVCache(len(self.decoder.layers), batch, self.n_heads,
                       self.d_model // self.n_heads, max_len or self.max_len,
                       dtype=self.out.weight.dtype, cross=True)

    @mt.no_grad()
    def greedy_decode(self, src, max_len: int, bos: int, eos: int, use_cache: bool = True,
                      return_logits: bool = False):
        """Decode each source greedily (argmax), up to `max_len` tokens or `eos`.

        Returns the generated ids (B, n) without the leading `bos`; a row that emitted
        `eos` is padded with `pad_id` after it. With `return_logits=True`, also the logits
        of every step, (B, n, tgt_vocab). `use_cache=False` recomputes the whole prefix at
        every step (same tokens and logits, slower). Dropout is off while decoding;
        `self.training` is left as it is (safe with other threads).
        """
        src = as_ids(src, "Transformer.greedy_decode")
        check_count("Transformer.greedy_decode", "max_len", max_len)
        if max_len + 1 > self.max_len:
            raise op_error("Transformer.greedy_decode", f"max_len={max_len} plus the bos "
                           f"token exceeds the model's max_len={self.max_len}",
                           fix=f"ask for at most {self.max_len - 1} tokens")
        # dropout_off, not self.eval(): `training` is shared with every other thread
        with mt.dropout_off():
            src_mask = self.source_mask(src)
            memory = self.encode(src, src_mask)
            batch = src.shape[0]
            tokens = np.full((batch, 1), bos, dtype=np.int64)
            finished = np.zeros(batch, dtype=bool)
            cache = self.new_cache(batch, max_len + 1) if use_cache else None
            step_logits = []
            for _ in range(max_len):
                if cache is not None:
                    logits = self.decode(tokens[:, -1:], memory, src_mask, cache=cache)
                else:
                    logits = self.decode(tokens, memory, src_mask)
                last = logits.data[:, -1]                                  # (B, vocab)
                step_logits.append(last)
                next_token = np.where(finished, self.pad_id, last.argmax(axis=-1))
                tokens = np.concatenate([tokens, next_token[:, None]], axis=1)
                finished |= next_token == eos
                if finished.all():
                    break
        generated = tokens[:, 1:]
        if return_logits:
            return generated, np.stack(step_logits, axis=1)
        return generated
