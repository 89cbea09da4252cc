"""A decoder-only language model, built from an `LMConfig`. GPT-style
(`LMConfig.gpt2`): token + position embeddings, pre-LN causal blocks, a final LayerNorm
and a projection to the vocabulary. Llama-style (`LMConfig.llama`): token embeddings
only, RMSNorm, rotary positions, SwiGLU, grouped-query attention and no biases
(`llama.py`).

    >>> lm = DecoderLM(LMConfig.gpt2(vocab=96, d_model=64, n_heads=4, n_layers=2,
    ...                              max_len=128))
    >>> ids = np.array([[5, 6, 7], [8, 9, 10]])
    >>> logits = lm(ids)                                   # (B, T, 96)
    >>> out = lm.generate(ids, max_new_tokens=50, temperature=0.8, top_k=10, seed=0)
    >>> llama = DecoderLM(LMConfig.llama(vocab=96, d_model=64, n_heads=4, n_layers=2,
    ...                                  n_kv_heads=2))
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

import microtensor as mt
from microtensor.errors import check_count, op_error
from microtensor.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, RMSNorm

from .cache import KVCache
from .config import LMConfig
from .inputs import as_ids, check_mask, check_not_empty
from .layers import (
    GPTBlock,
    PositionalEncoding,
    check_cache_mode,
    key_mask,
    positions_from_valid,
)
from .llama import LlamaBlock
from .rope import RotaryEmbedding


def decoder_block(config: LMConfig) -> Module:
    """One layer of the config's style, its residual-stream projections scaled as GPT-2
    initialises them: by 1/sqrt(2 n_layers), so the stream's variance does not grow with
    depth (each layer adds two sublayers' outputs to it)."""
    c = config
    if c.style == "llama":
        block = LlamaBlock(c.d_model, c.n_heads, c.d_ff, c.n_kv_heads, c.norm_eps, c.dropout)
        writes = block.self_attn.W_o, block.ffn.W_down
    else:
        block = GPTBlock(c.d_model, c.n_heads, c.d_ff, c.dropout, c.activation, c.norm_eps)
        writes = block.self_attn.W_o, block.ffn.W_2
    for linear in writes:
        linear.weight.data *= 1 / math.sqrt(2 * c.n_layers)
    return block


class DecoderLM(Module):
    """A decoder-only language model with the architecture of `config` (an `LMConfig`).
    `attention_mask` (B, T), True at real tokens, supports left-padded batches: padding is
    never attended to, and each row's positions count its real tokens only, so a padded
    row gives the same logits as the row alone.

    GPT style: learned (or sinusoidal) positions added to the embeddings, `GPTBlock`s, a
    final LayerNorm. Llama style: no added positions (every block rotates its queries and
    keys instead), `LlamaBlock`s, a final RMSNorm. With `config.tie_weights` the output
    projection is the token embedding, transposed.
    """

    # transformer.hub reads and writes Hugging Face directories. It builds DecoderLMs, so
    # it imports this module, and this module never imports it: when the hub is imported
    # (`import transformer` does it), it sets `hub` to its `pretrained` module, whose
    # from_pretrained and save_pretrained the two methods below call.
    hub: ClassVar = None

    def __init__(self, config: LMConfig):
        super().__init__()
        if not isinstance(config, LMConfig):
            raise op_error("DecoderLM", f"expected an LMConfig, got {type(config).__name__}",
                           TypeError, "build one with LMConfig.gpt2(vocab=...) or "
                           "LMConfig.llama(vocab=...); LMConfig(**saved) for a saved dict")
        c = self.config = config
        self.tok_embed = Embedding(c.vocab, c.d_model, std=0.02)
        rope = c.positional == "rope"
        self.position = None if rope else PositionalEncoding(c.d_model, c.max_len, c.positional)
        self.rotary = RotaryEmbedding(c.d_model // c.n_heads, c.rope_theta) if rope else None
        self.dropout = Dropout(c.dropout)
        self.blocks = ModuleList(decoder_block(c) for _ in range(c.n_layers))
        self.norm = (RMSNorm if c.style == "llama" else LayerNorm)(c.d_model, c.norm_eps)
        self.head = None if c.tie_weights else Linear(c.d_model, c.vocab, bias=False)

    @classmethod
    def from_pretrained(cls, path, **options) -> DecoderLM:
        """Load a Hugging Face directory (config.json + model.safetensors) of a GPT-2
        (`model_type: "gpt2"`) or Llama (`"llama"`) model, in eval mode, through
        `transformer.hub` (`options` as `transformer.hub.from_pretrained` takes them, such
        as `allow_non_finite=True`).

            >>> lm = DecoderLM.from_pretrained("gpt2")  # needs the download  # doctest: +SKIP
        """
        return cls.hub.from_pretrained(path, **options)

    def save_pretrained(self, path) -> None:
        """Write this model as a Hugging Face directory (atomically) that
        `transformers.GPT2LMHeadModel.from_pretrained(path)` loads, or
        `LlamaForCausalLM.from_pretrained(path)` for the Llama style."""
        self.hub.save_pretrained(self, path)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty KVCache for `batch` sequences of up to `max_len` (default: the model's)."""
        c = self.config
        return KVCache(len(self.blocks), batch, c.n_kv_heads, c.d_model // c.n_heads,
                       max_len or c.max_len, dtype=self.tok_embed.weight.dtype)

    def forward(self, ids, cache: KVCache | None = None, attention_mask=None):
        """Token ids (B, T) -> next-token logits (B, T, vocab). With `cache` (under
        `mt.no_grad()`), `ids` are the positions after the cached ones."""
        x = self.features(ids, cache, attention_mask)
        if self.head is None:
            return x @ self.tok_embed.weight.swapaxes(0, 1)
        return self.head(x)

    def features(self, ids, cache: KVCache | None = None, attention_mask=None):
        """The last hidden states (B, T, d_model), after the final norm: what the head
        turns into logits."""
        ids, valid, mask, positions = self.read_inputs(ids, cache, attention_mask)
        if self.rotary is None:
            x = self.dropout(self.position(self.tok_embed(ids), positions=positions))
            block_args = {}
        else:
            # Llama style: nothing is added to the embeddings; every block rotates its q and
            # k by the same angles (they depend on the positions alone), computed once here.
            x = self.dropout(self.tok_embed(ids))
            block_args = {"rotation": self.rotary(positions, dtype=x.dtype)}
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, causal=True,
                      cache=None if cache is None else cache.layers[i], **block_args)
        if cache is not None:
            cache.advance(valid)
        return self.norm(x)

    def read_inputs(self, ids, cache=None, attention_mask=None):
        """Checked ids (B, T), which of them are real tokens (B, T), the key mask for
        attention and each token's position (padding is never attended to, and a
        left-padded row's positions count its real tokens only)."""
        ids = as_ids(ids, "DecoderLM")
        check_cache_mode("DecoderLM", cache)
        check_not_empty("DecoderLM", "input", ids)
        valid = check_mask("DecoderLM", attention_mask, ids)
        if cache is not None:
            return (ids, valid, *cache.begin(valid))
        max_len = self.config.max_len
        if ids.shape[1] > max_len:
            raise op_error("DecoderLM", f"sequence of {ids.shape[1]} tokens is longer "
                           f"than max_len={max_len}",
                           fix=f"feed at most the last {max_len} tokens")
        return ids, valid, key_mask(valid), positions_from_valid(valid)

    @mt.no_grad()
    def generate(self, ids, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, use_cache: bool = True, seed: int | None = None,
                 attention_mask=None, return_logits: bool = False):
        """Continue each row of `ids` (B, T) by `max_new_tokens` tokens.

        `temperature=0` is greedy decoding (argmax); a positive temperature samples from
        softmax(logits / temperature), restricted to the `top_k` most likely tokens when
        given. `seed` makes sampling reproducible. When the sequence outgrows `max_len`,
        the model re-reads the last max_len // 2 tokens and continues (cached and
        uncached generation make the same choice, so they give the same tokens).
        Returns ids (B, T + max_new_tokens), and the logits of each new step
        (B, max_new_tokens, vocab) with `return_logits=True`. Dropout is off while
        generating; `self.training` is left as it is (safe with other threads).
        """
        ids = as_ids(ids, "DecoderLM.generate")
        self._check_generate_args(ids, max_new_tokens, temperature, top_k)
        valid = check_mask("DecoderLM.generate", attention_mask, ids)
        rng = np.random.default_rng(seed)
        # The new tokens go into preallocated arrays: no copy of the history per token.
        batch, length = ids.shape
        all_ids = np.empty((batch, length + max_new_tokens), ids.dtype)
        all_valid = np.ones((batch, length + max_new_tokens), bool)
        all_ids[:, :length], all_valid[:, :length] = ids, valid
        step_logits = []     # kept only when asked for: at GPT-2's vocabulary, 200 KB a token
        # dropout_off, not self.eval(): `training` is shared with every other thread
        with mt.dropout_off():
            for end, logits in self._next_logits(all_ids, all_valid, length, use_cache):
                if return_logits:
                    step_logits.append(logits)
                all_ids[:, end] = self._choose(logits.astype(np.float64), temperature,
                                               top_k, rng)
        if return_logits:
            empty = np.zeros((batch, 0, self.config.vocab), np.float32)
            return all_ids, np.stack(step_logits, axis=1) if step_logits else empty
        return all_ids

    def _next_logits(self, all_ids, all_valid, length: int, use_cache: bool):
        """For each position `end` from `length` on: (end, the logits (B, vocab) of the
        token there), from the ids before it, which the caller has filled in by then.
        With a cache, the prompt is read once and each new token fed alone; without, the
        whole window is read again. A sequence longer than max_len slides the window:
        the model re-reads the last max_len // 2 tokens and goes on."""
        max_len, total = self.config.max_len, all_ids.shape[1]
        start, cache = 0, None
        for end in range(length, total):
            ids, valid = all_ids[:, :end], all_valid[:, :end]
            if end - start > max_len:
                start, cache = end - max_len // 2, None
            if not use_cache:
                logits = self(ids[:, start:], attention_mask=valid[:, start:])
            elif cache is None:
                # Room for what is left to feed, not max_len: a loaded model's max_len can
                # be 131,072 positions.
                cache = self.new_cache(len(ids), min(max_len, total - start))
                logits = self(ids[:, start:], cache=cache, attention_mask=valid[:, start:])
            else:
                logits = self(ids[:, -1:], cache=cache, attention_mask=valid[:, -1:])
            yield end, logits.data[:, -1]

    def _check_generate_args(self, ids, max_new_tokens, temperature, top_k) -> None:
        where, max_len, vocab = "DecoderLM.generate", self.config.max_len, self.config.vocab
        if ids.shape[1] == 0:
            raise op_error(where, "the prompt is empty", fix="give at least one token")
        if ids.shape[1] > max_len:
            raise op_error(where, f"prompt of {ids.shape[1]} tokens is longer than the "
                           f"model's max_len={max_len}",
                           fix=f"keep the last {max_len} tokens, e.g. ids[:, -{max_len}:]")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                and temperature >= 0):
            raise op_error(where, f"temperature must be a finite number >= 0, got "
                           f"{temperature!r}", fix="use 0 for greedy decoding, 1 to sample "
                           "from the model's distribution")
        check_count(where, "max_new_tokens", max_new_tokens, smallest=0)
        if top_k is not None and not (isinstance(top_k, (int, np.integer))
                                      and not isinstance(top_k, bool)
                                      and 1 <= top_k <= vocab):
            raise op_error(where, f"top_k must be an integer in [1, {vocab}] (the "
                           f"vocabulary size), got {top_k!r}", fix="or None for no limit")

    @staticmethod
    def _choose(logits: np.ndarray, temperature: float, top_k, rng) -> np.ndarray:
        """One token per row: argmax, or a sample from softmax(logits / temperature)."""
        if temperature == 0:
            return logits.argmax(axis=-1)
        if top_k is not None:
            kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
            logits = np.where(logits < kth, -np.inf, logits)
        scaled = logits / temperature
        probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        # inverse-CDF sampling: one uniform number per row
        cumulative = probs.cumsum(axis=-1)
        draws = rng.random((len(probs), 1)) * cumulative[:, -1:]
        return np.minimum((cumulative < draws).sum(axis=-1), probs.shape[-1] - 1)
