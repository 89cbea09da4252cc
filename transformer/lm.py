"""A decoder-only language model. GPT-style (the default): token + position embeddings,
pre-LN causal blocks, a final LayerNorm and a projection to the vocabulary. Llama-style
(`style="llama"`): token embeddings only, RMSNorm, rotary positions, SwiGLU, grouped-query
attention and no biases (`llama_layers.py`).

    >>> lm = DecoderLM(vocab=96, d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=128)
    >>> ids = np.array([[5, 6, 7], [8, 9, 10]])
    >>> logits = lm(ids)                                   # (B, T, 96)
    >>> out = lm.generate(ids, max_new_tokens=50, temperature=0.8, top_k=10, seed=0)
    >>> llama = DecoderLM(vocab=96, d_model=64, n_heads=4, n_layers=2, style="llama",
    ...                   n_kv_heads=2, rope_theta=10000.0)
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt
from microtensor.errors import check_count, check_sizes, op_error
from microtensor.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, RMSNorm

from .cache import KVCache
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


class DecoderLM(Module):
    """A decoder-only language model. `tie_weights=True` uses the token embedding
    (transposed) as the output projection. `attention_mask` (B, T), True at real tokens,
    supports left-padded batches: padding is never attended to, and each row's positions
    count its real tokens only, so a padded row gives the same logits as the row alone.

    `style="gpt"` (default): learned (or `positional="sinusoidal"`) positions added to the
    embeddings, pre-LN blocks with LayerNorm, a GELU (or `activation="relu"`) feed-forward,
    biases, d_ff = 4 d_model by default.

    `style="llama"`: no added positions (queries and keys are rotated instead, RoPE with
    `rope_theta`, default 10000), `LlamaBlock`s (RMSNorm with `norm_eps`, default 1e-6;
    SwiGLU; grouped-query attention with `n_kv_heads` K/V heads, default n_heads), a final
    RMSNorm, no biases. d_ff defaults to 8/3 d_model rounded up to a multiple of 8 (three
    matrices cost what GPT's two do at 4 d_model). `n_kv_heads`, `rope_theta` and
    `norm_eps` belong to this style only.
    """

    STYLES = ("gpt", "llama")

    def __init__(self, vocab: int, d_model: int = 128, n_heads: int = 4, n_layers: int = 4,
                 d_ff: int | None = None, max_len: int = 256, dropout: float = 0.0,
                 tie_weights: bool = False, positional: str | None = None,
                 activation: str | None = None, style: str = "gpt",
                 n_kv_heads: int | None = None, rope_theta: float | None = None,
                 norm_eps: float | None = None):
        super().__init__()
        check_sizes("DecoderLM", vocab=vocab, d_model=d_model, n_heads=n_heads,
                    n_layers=n_layers, max_len=max_len)
        if style not in self.STYLES:
            raise op_error("DecoderLM", f"style must be one of {self.STYLES}, got {style!r}")
        llama = style == "llama"
        if llama:
            positional = self._llama_choice("positional", positional, "rope")
            activation = self._llama_choice("activation", activation, "silu")
            d_ff = d_ff or -(-8 * d_model // 3 // 8) * 8       # ceil(8/3 d / 8) * 8
            n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
            rope_theta = 10000.0 if rope_theta is None else rope_theta
            norm_eps = 1e-6 if norm_eps is None else norm_eps
        else:
            given = [name for name, value in (("n_kv_heads", n_kv_heads),
                     ("rope_theta", rope_theta), ("norm_eps", norm_eps)) if value is not None]
            if given:
                raise op_error("DecoderLM", f"{', '.join(given)} belong to the Llama style, "
                               f"but style={style!r}", fix="pass style='llama'")
            positional, activation = positional or "learned", activation or "gelu"
            d_ff = d_ff or 4 * d_model
        check_sizes("DecoderLM", d_ff=d_ff)
        self.config = {"vocab": vocab, "d_model": d_model, "n_heads": n_heads,
                       "n_layers": n_layers, "d_ff": d_ff, "max_len": max_len,
                       "dropout": dropout, "tie_weights": tie_weights,
                       "positional": positional, "activation": activation, "style": style}
        if llama:
            self.config.update(n_kv_heads=n_kv_heads, rope_theta=float(rope_theta),
                               norm_eps=float(norm_eps))
        self.vocab, self.d_model, self.n_heads, self.max_len = vocab, d_model, n_heads, max_len
        self.style = style
        self.n_kv_heads = n_kv_heads if llama else n_heads
        self.tok_embed = Embedding(vocab, d_model, std=0.02)
        if llama:
            self.position = None
            self.rotary = RotaryEmbedding(d_model // n_heads, rope_theta)
            self.dropout = Dropout(dropout)
            self.blocks = ModuleList(LlamaBlock(d_model, n_heads, d_ff, n_kv_heads, norm_eps,
                                                dropout) for _ in range(n_layers))
            self.norm = RMSNorm(d_model, norm_eps)
        else:
            self.position = PositionalEncoding(d_model, max_len, kind=positional)
            self.rotary = None
            self.dropout = Dropout(dropout)
            self.blocks = ModuleList(GPTBlock(d_model, n_heads, d_ff, dropout, activation)
                                     for _ in range(n_layers))
            self.norm = LayerNorm(d_model)
        self.tie_weights = tie_weights
        self.head = None if tie_weights else Linear(d_model, vocab, bias=False)
        # GPT-2: scale the projections that write into the residual stream by
        # 1/sqrt(2 n_layers), so the stream's variance does not grow with depth.
        for block in self.blocks:
            for linear in (block.self_attn.W_o, block.ffn.W_down if llama else block.ffn.W_2):
                linear.weight.data *= 1 / math.sqrt(2 * n_layers)

    @classmethod
    def from_pretrained(cls, path) -> DecoderLM:
        """Load a Hugging Face directory (config.json + model.safetensors) of a GPT-2
        (`model_type: "gpt2"`) or Llama (`"llama"`) model, in eval mode. See
        `transformer.hub`.

            >>> lm = DecoderLM.from_pretrained("gpt2")  # needs the download  # doctest: +SKIP
        """
        from .hub import from_pretrained  # imported here: the hub imports this module
        return from_pretrained(path)

    def save_pretrained(self, path) -> None:
        """Write this model as a Hugging Face directory (atomically) that
        `transformers.GPT2LMHeadModel.from_pretrained(path)` loads, or
        `LlamaForCausalLM.from_pretrained(path)` for `style="llama"`."""
        from .hub import save_pretrained
        save_pretrained(self, path)

    @staticmethod
    def _llama_choice(name: str, value, only: str) -> str:
        if value not in (None, only):
            raise op_error("DecoderLM", f"style='llama' uses {name}={only!r}, got {value!r}",
                           fix=f"leave {name} out (or use style='gpt')")
        return only

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty KVCache for `batch` sequences of up to `max_len` (default: the model's)."""
        return KVCache(len(self.blocks), batch, self.n_kv_heads, self.d_model // self.n_heads,
                       max_len or self.max_len, dtype=self.tok_embed.weight.dtype)

    def forward(self, ids, cache: KVCache | None = None, attention_mask=None):
        """Token ids (B, T) -> next-token logits (B, T, vocab). With `cache` (under
        `mt.no_grad()`), `ids` are the positions after the cached ones."""
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
        x = self.norm(x)
        if self.tie_weights:
            return x @ self.tok_embed.weight.swapaxes(0, 1)
        return self.head(x)

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
        if ids.shape[1] > self.max_len:
            raise op_error("DecoderLM", f"sequence of {ids.shape[1]} tokens is longer "
                           f"than max_len={self.max_len}",
                           fix=f"feed at most the last {self.max_len} tokens")
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
        # dropout_off, not self.eval(): `training` is shared with every other thread
        # The new tokens go into preallocated arrays: no copy of the history per token.
        batch, length = ids.shape
        all_ids = np.empty((batch, length + max_new_tokens), ids.dtype)
        all_valid = np.ones((batch, length + max_new_tokens), bool)
        all_ids[:, :length], all_valid[:, :length] = ids, valid
        with mt.dropout_off():
            start, cache, step_logits = 0, None, []
            for end in range(length, length + max_new_tokens):
                ids, valid = all_ids[:, :end], all_valid[:, :end]
                if end - start > self.max_len:
                    start, cache = end - self.max_len // 2, None  # slide the window
                if not use_cache:
                    logits = self(ids[:, start:], attention_mask=valid[:, start:])
                elif cache is None:
                    # Room for what is left to feed, not max_len: a loaded model's
                    # max_len can be 131,072 positions.
                    cache = self.new_cache(batch, min(self.max_len,
                                                      length + max_new_tokens - start))
                    logits = self(ids[:, start:], cache=cache, attention_mask=valid[:, start:])
                else:
                    logits = self(ids[:, -1:], cache=cache, attention_mask=valid[:, -1:])
                last = logits.data[:, -1].astype(np.float64)               # (B, vocab)
                step_logits.append(logits.data[:, -1])
                all_ids[:, end] = self._choose(last, temperature, top_k, rng)
        ids = all_ids
        if return_logits:
            empty = np.zeros((ids.shape[0], 0, self.vocab), np.float32)
            return ids, np.stack(step_logits, axis=1) if step_logits else empty
        return ids

    def _check_generate_args(self, ids, max_new_tokens, temperature, top_k) -> None:
        where = "DecoderLM.generate"
        if ids.shape[1] == 0:
            raise op_error(where, "the prompt is empty", fix="give at least one token")
        if ids.shape[1] > self.max_len:
            raise op_error(where, f"prompt of {ids.shape[1]} tokens is longer than the "
                           f"model's max_len={self.max_len}",
                           fix=f"keep the last {self.max_len} tokens, e.g. ids[:, "
                           f"-{self.max_len}:]")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                and temperature >= 0):
            raise op_error(where, f"temperature must be a finite number >= 0, got "
                           f"{temperature!r}", fix="use 0 for greedy decoding, 1 to sample "
                           "from the model's distribution")
        check_count(where, "max_new_tokens", max_new_tokens, smallest=0)
        if top_k is not None and not (isinstance(top_k, (int, np.integer))
                                      and not isinstance(top_k, bool)
                                      and 1 <= top_k <= self.vocab):
            raise op_error(where, f"top_k must be an integer in [1, {self.vocab}] (the "
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
