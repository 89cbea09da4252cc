"""The architecture of a `DecoderLM`, as one dataclass with two presets.

    >>> gpt = LMConfig.gpt2(vocab=96, d_model=64, n_heads=4, n_layers=2, max_len=128)
    >>> gpt.d_ff, gpt.positional, gpt.activation
    (256, 'learned', 'gelu')
    >>> llama = LMConfig.llama(vocab=96, d_model=64, n_heads=4, n_kv_heads=2)
    >>> llama.d_ff, llama.positional, llama.rope_theta, llama.norm_eps
    (176, 'rope', 10000.0, 1e-06)

A field left out takes its style's default, written into the config, so a saved config
(`dataclasses.asdict`) rebuilds the same model with `LMConfig(**saved)`. A value the
style cannot use is refused, naming the field, the value and the fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from microtensor.errors import check_sizes, op_error

from .attention import check_heads

# What each style may be built with; the first choice of each is its default.
STYLES = {
    "gpt": {"positional": ("learned", "sinusoidal"), "activation": ("gelu", "relu"),
            "norm_eps": 1e-5},
    "llama": {"positional": ("rope",), "activation": ("silu",), "norm_eps": 1e-6,
              "rope_theta": 10000.0},
}


def default_d_ff(style: str, d_model: int) -> int:
    """4 d_model for GPT's two-matrix feed-forward; for Llama's SwiGLU, which has three
    matrices, 8/3 d_model rounded up to a multiple of 8 costs the same."""
    return -(-8 * d_model // 3 // 8) * 8 if style == "llama" else 4 * d_model


@dataclass(frozen=True)
class LMConfig:
    """The settings of a decoder-only language model. Build one with a preset,
    `LMConfig.gpt2(...)` or `LMConfig.llama(...)`; `LMConfig(**saved)` reads back a saved
    one.

    - `style`: "gpt" (GPTBlock: LayerNorm, a GELU or ReLU feed-forward, biases) or "llama"
      (LlamaBlock: RMSNorm, SwiGLU, grouped-query attention, no biases);
    - `positional`: "learned" or "sinusoidal" positions added to the embeddings (GPT), or
      "rope", queries and keys rotated by position (Llama);
    - `d_ff`: the feed-forward's width (default: `default_d_ff`);
    - `n_kv_heads`: K/V heads of grouped-query attention (Llama; GPT has n_heads);
    - `rope_theta`: the base of the rotary frequencies (Llama);
    - `norm_eps`: the LayerNorm's or RMSNorm's epsilon;
    - `tie_weights`: the output projection is the token embedding, transposed.
    """

    vocab: int
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int | None = None
    max_len: int = 256
    dropout: float = 0.0
    tie_weights: bool = False
    style: str = "gpt"
    positional: str | None = None
    activation: str | None = None
    n_kv_heads: int | None = None
    rope_theta: float | None = None
    norm_eps: float | None = None

    @classmethod
    def gpt2(cls, vocab: int, **options) -> LMConfig:
        """GPT-2's architecture at the sizes given: learned positions, pre-LN blocks with
        LayerNorm (eps 1e-5), a GELU feed-forward of 4 d_model, biases. The 2017 paper's
        choices are `positional="sinusoidal"` and `activation="relu"`.

            >>> LMConfig.gpt2(vocab=96, d_model=64, tie_weights=True).d_ff
            256
        """
        return cls(vocab, style="gpt", **options)

    @classmethod
    def llama(cls, vocab: int, **options) -> LMConfig:
        """Llama's architecture at the sizes given: rotary positions (`rope_theta` 10000),
        RMSNorm (eps 1e-6), a SwiGLU feed-forward of about 8/3 d_model, grouped-query
        attention with `n_kv_heads` K/V heads (default n_heads), no biases.

            >>> LMConfig.llama(vocab=96, d_model=64, n_heads=4, n_kv_heads=1).n_kv_heads
            1
        """
        return cls(vocab, style="llama", **options)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every parameter of a `DecoderLM` of this config, by name, without
        building it: a loader checks a stranger's checkpoint against these before it
        allocates a model of the sizes the checkpoint claims (a test holds them equal to
        the built model's). A checkpoint's layer count is checked first: this lists
        every layer.

            >>> LMConfig.gpt2(vocab=96, d_model=64, n_layers=1).parameter_shapes()["head.weight"]
            (64, 96)
        """
        d, ff, vocab = self.d_model, self.d_ff, self.vocab
        shapes = {"tok_embed.weight": (vocab, d)}
        if self.positional == "learned":
            shapes["position.table.weight"] = (self.max_len, d)
        for i in range(self.n_layers):
            shapes.update({f"blocks.{i}.{name}": shape
                           for name, shape in self._block_shapes(d, ff).items()})
        shapes["norm.weight"] = (d,)
        if self.style == "gpt":
            shapes["norm.bias"] = (d,)
        if not self.tie_weights:
            shapes["head.weight"] = (d, vocab)
        return shapes

    def _block_shapes(self, d: int, ff: int) -> dict[str, tuple[int, ...]]:
        if self.style == "llama":   # no biases; K and V have n_kv_heads heads of d_k
            kv = self.n_kv_heads * (d // self.n_heads)
            return {"norm1.weight": (d,), "norm2.weight": (d,),
                    "self_attn.W_q.weight": (d, d), "self_attn.W_k.weight": (d, kv),
                    "self_attn.W_v.weight": (d, kv), "self_attn.W_o.weight": (d, d),
                    "ffn.W_gate.weight": (d, ff), "ffn.W_up.weight": (d, ff),
                    "ffn.W_down.weight": (ff, d)}
        shapes = {f"{norm}.{kind}": (d,) for norm in ("norm1", "norm2")
                  for kind in ("weight", "bias")}
        for W in ("W_q", "W_k", "W_v", "W_o"):
            shapes.update({f"self_attn.{W}.weight": (d, d), f"self_attn.{W}.bias": (d,)})
        return {**shapes, "ffn.W_1.weight": (d, ff), "ffn.W_1.bias": (ff,),
                "ffn.W_2.weight": (ff, d), "ffn.W_2.bias": (d,)}

    def __post_init__(self):
        where = "LMConfig"
        if not isinstance(self.style, str) or self.style not in STYLES:
            raise op_error(where, f"style={self.style!r} is not one of {sorted(STYLES)}",
                           fix="build the config with LMConfig.gpt2(...) or LMConfig.llama(...)")
        check_sizes(where, vocab=self.vocab, d_model=self.d_model, n_heads=self.n_heads,
                    n_layers=self.n_layers, max_len=self.max_len)
        choices = STYLES[self.style]
        for name in ("positional", "activation"):
            self._fill(name, self._choose(name, getattr(self, name), choices[name]))
        self._fill("d_ff", default_d_ff(self.style, self.d_model) if self.d_ff is None
                   else self.d_ff)
        check_sizes(where, d_ff=self.d_ff)
        self._fill("n_kv_heads", self._kv_heads())
        check_heads(where, self.d_model, self.n_heads, self.n_kv_heads)
        self._fill("rope_theta", self._rope_theta())
        self._fill("norm_eps", self._positive("norm_eps", self.norm_eps, choices["norm_eps"]))
        if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
                and 0 <= self.dropout < 1):
            raise op_error(where, f"dropout={self.dropout!r} must be a number in [0, 1)",
                           fix="use 0 for none, about 0.1 for a small model")
        self._fill("dropout", float(self.dropout))
        if not isinstance(self.tie_weights, bool):
            raise op_error(where, f"tie_weights={self.tie_weights!r} must be True or False",
                           TypeError)

    def _fill(self, name: str, value) -> None:
        object.__setattr__(self, name, value)   # frozen: only here, while it is made

    def _choose(self, name: str, value, choices: tuple) -> str:
        if value is None:
            return choices[0]
        if value not in choices:
            other = "gpt2" if self.style == "llama" else "llama"
            raise op_error("LMConfig", f"style={self.style!r} takes {name} in "
                           f"{list(choices)}, got {value!r}",
                           fix=f"leave {name} out (default {choices[0]!r}), or use "
                           f"LMConfig.{other}(...) if {value!r} is that style's")
        return value

    def _kv_heads(self) -> int:
        if self.style == "llama" or self.n_kv_heads in (None, self.n_heads):
            return self.n_heads if self.n_kv_heads is None else self.n_kv_heads
        raise op_error("LMConfig", f"n_kv_heads={self.n_kv_heads!r} with style='gpt': a "
                       "GPT block has one K/V head per query head",
                       fix="leave n_kv_heads out, or use LMConfig.llama(...) for "
                       "grouped-query attention")

    def _rope_theta(self) -> float | None:
        if self.positional == "rope":
            return self._positive("rope_theta", self.rope_theta, STYLES["llama"]["rope_theta"])
        if self.rope_theta is not None:
            raise op_error("LMConfig", f"rope_theta={self.rope_theta!r} with "
                           f"positional={self.positional!r}: it sets rotary positions only",
                           fix="leave rope_theta out, or use LMConfig.llama(...)")
        return None

    def _positive(self, name: str, value, default: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise op_error("LMConfig", f"{name}={value!r} must be a positive number",
                           fix=f"leave it out for the default, {default}")
        return float(value)
