"""GPT-2's names and shapes, mapped onto a `DecoderLM` and back.

Our DecoderLM already is GPT-2's architecture: pre-LN blocks, learned positions, tanh
GELU (`gelu_new`), a final LayerNorm and a tied head. GPT-2's `Conv1D` stores its weight
(in, out), as our `Linear` does, so weights copy over without a transpose. The one real
difference is attention: GPT-2 computes Q, K and V with one fused projection `c_attn`
of width 3 * d_model, which splits column-wise into our `W_q`, `W_k`, `W_v`.

    GPT-2 (transformers)              DecoderLM
    wte.weight                        tok_embed.weight
    wpe.weight                        position.table.weight
    h.{i}.ln_1                        blocks.{i}.norm1
    h.{i}.attn.c_attn (d, 3d)         blocks.{i}.self_attn.W_q | W_k | W_v   (d, d) each
    h.{i}.attn.c_proj                 blocks.{i}.self_attn.W_o
    h.{i}.ln_2                        blocks.{i}.norm2
    h.{i}.mlp.c_fc                    blocks.{i}.ffn.W_1
    h.{i}.mlp.c_proj                  blocks.{i}.ffn.W_2
    ln_f                              norm
    lm_head.weight (vocab, d)         head.weight (d, vocab), only when not tied

Dropout: GPT-2 has three rates (`resid_pdrop`, `embd_pdrop`, `attn_pdrop`) and we have
one, so they must agree. Our feed-forward also drops its hidden activations while
training, which GPT-2 does not; at inference (and with dropout 0) the two compute the same.
"""
from __future__ import annotations

import numpy as np

from microtensor.errors import op_error
from microtensor.nn import GELU, LayerNorm, ReLU, skip_init
from microtensor.safetensors_io import tensor_infos

from ..config import LMConfig
from ..layers import FeedForward, GPTBlock
from ..lm import DecoderLM
from .checks import ConfigReader, check_float_dtypes, check_layer_count, read_weight

# HF activation_function -> ours. "gelu" in transformers is the exact erf form, which we
# do not have; "gelu_new" and "gelu_pytorch_tanh" are both the tanh form we compute.
ACTIVATIONS_FROM_HF = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu": "gelu_new", "relu": "relu"}
# Settings that must have GPT-2's default value for the model to compute what ours does.
REQUIRED = {"scale_attn_weights": (True, "we always scale scores by 1/sqrt(d_k)"),
            "scale_attn_by_inverse_layer_idx": (False, "we do not scale scores by layer"),
            "add_cross_attention": (False, "a DecoderLM has no cross-attention")}
SIZES = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
PREFIX = "transformer."  # GPT2LMHeadModel's body; files saved from GPT2Model lack it


def parameter_pairs(n_layers: int, d_model: int):
    """(our name, GPT-2 name, columns) for every weight: `columns` is the slice of a fused
    c_attn tensor's last axis that is ours, or None for a tensor copied whole."""
    pairs = [("tok_embed.weight", "wte.weight", None),
             ("position.table.weight", "wpe.weight", None)]
    for i in range(n_layers):
        ours, theirs = f"blocks.{i}.", f"h.{i}."
        for kind in ("weight", "bias"):
            pairs.append((f"{ours}norm1.{kind}", f"{theirs}ln_1.{kind}", None))
            for k, W in enumerate(("W_q", "W_k", "W_v")):
                pairs.append((f"{ours}self_attn.{W}.{kind}", f"{theirs}attn.c_attn.{kind}",
                              slice(k * d_model, (k + 1) * d_model)))
            pairs += [(f"{ours}self_attn.W_o.{kind}", f"{theirs}attn.c_proj.{kind}", None),
                      (f"{ours}norm2.{kind}", f"{theirs}ln_2.{kind}", None),
                      (f"{ours}ffn.W_1.{kind}", f"{theirs}mlp.c_fc.{kind}", None),
                      (f"{ours}ffn.W_2.{kind}", f"{theirs}mlp.c_proj.{kind}", None)]
    pairs += [("norm.weight", "ln_f.weight", None), ("norm.bias", "ln_f.bias", None)]
    return pairs


def gpt2_name(hf_name: str, columns: slice | None) -> str:
    """How the drawing shows where a weight came from: 'h.0.attn.c_attn.weight[..., 0:64]'."""
    return hf_name if columns is None else f"{hf_name}[..., {columns.start}:{columns.stop}]"


# ---------------------------------------------------------------------- reading
def gpt2_from_hf(config: dict, tensors, *, allow_non_finite: bool = False,
                 source: str = "config") -> DecoderLM:
    """A DecoderLM with the architecture of a transformers GPT-2 `config` and the weights
    in `tensors` (names as in its model.safetensors: a dict of arrays, or a LazyTensors
    that reads each from disk when needed). Each parameter's `.name` records its GPT-2
    name, which `viz.draw` shows beside ours.

    Every name, shape and dtype is checked against the config before the model is
    built, so a config that claims sizes the weights do not have costs nothing; a NaN
    or infinite weight is refused unless `allow_non_finite`. `source` names config.json
    in errors."""
    where = "from_pretrained (gpt2)"
    settings = lm_config_from_hf(config, where, source)
    infos = tensor_infos(tensors)
    names = _gpt2_names(infos, settings.tie_weights)         # GPT-2 name -> file's name
    check_layer_count(where, source, "n_layer", settings.n_layers, names, r"h\.(\d+)\.")
    _check_gpt2_tensors(where, settings, infos, names)

    with skip_init():          # every weight is read from the file below
        model = DecoderLM(settings)
    # Each weight goes into its parameter as it is read (a whole one straight from the
    # file), so loading never holds a second copy of the model.
    params, hf_names, arrays = dict(model.named_parameters()), {}, {}
    for ours, theirs, columns in parameter_pairs(settings.n_layers, settings.d_model):
        if columns is None:
            read_weight(where, tensors, names[theirs], allow_non_finite, out=params[ours].data)
        else:
            if theirs not in arrays:       # c_attn feeds three of ours: read it once
                arrays = {theirs: read_weight(where, tensors, names[theirs],
                                              allow_non_finite)}
            np.copyto(params[ours].data, arrays[theirs][..., columns], casting="same_kind")
        hf_names[ours] = gpt2_name(theirs, columns)
    if not settings.tie_weights:   # torch Linear stores (out, in)
        np.copyto(params["head.weight"].data, read_weight(
            where, tensors, names["lm_head.weight"], allow_non_finite).T, casting="same_kind")
        hf_names["head.weight"] = "lm_head.weight (transposed)"
    for ours, param in model.named_parameters():
        param.name = f"{ours} (GPT-2: {hf_names[ours]})"
    return model.eval()


def _check_gpt2_tensors(where: str, settings: LMConfig, infos: dict, names: dict) -> None:
    """Refuse weights that do not fit the config: one error lists every missing,
    unexpected and misshapen tensor; an integer one is refused after."""
    expected = _gpt2_shapes(settings)
    problems = [f"missing tensor {name} {shape}" for name, shape in expected.items()
                if name not in names]
    problems += [f"unexpected tensor {name} {infos[names[name]].shape}" for name in names
                 if name not in expected]
    problems += [f"{name} has shape {infos[names[name]].shape}, the config implies {shape}"
                 for name, shape in expected.items()
                 if name in names and infos[names[name]].shape != shape]
    if problems:
        raise op_error(where, f"the weights do not fit the config ({len(problems)} "
                       "problem(s)):" + "".join(f"\n  - {p}" for p in problems[:20]),
                       fix="check that config.json and model.safetensors belong together "
                       "and are a GPT2LMHeadModel (or GPT2Model)")
    check_float_dtypes(where, infos, [names[name] for name in expected])


def _gpt2_shapes(settings: LMConfig) -> dict[str, tuple]:
    """The shape of every tensor a GPT-2 file of this size holds, by GPT-2 name, from our
    parameters' shapes (c_attn is W_q | W_k | W_v side by side)."""
    ours, d_model = settings.parameter_shapes(), settings.d_model
    shapes = {}
    for name, theirs, columns in parameter_pairs(settings.n_layers, d_model):
        shape = ours[name]
        shapes[theirs] = shape if columns is None else (*shape[:-1], 3 * d_model)
    if not settings.tie_weights:
        shapes["lm_head.weight"] = ours["head.weight"][::-1]
    return shapes


def lm_config_from_hf(config: dict, where: str, source: str = "config") -> LMConfig:
    """The LMConfig of a transformers GPT-2 config, refusing what we cannot compute by
    the config key and value. Every value is type-checked (`ConfigReader`): a size is a
    positive integer, a flag true or false, a rate or epsilon a finite number."""
    read = ConfigReader(config, where, source)
    missing = [key for key in SIZES if key not in config]
    if missing:
        raise op_error(where, f"{source} lacks {', '.join(missing)}",
                       fix="a GPT-2 config names every size: " + ", ".join(SIZES))
    sizes = {key: read.size(key) for key in SIZES}
    if sizes["n_embd"] % sizes["n_head"]:
        raise op_error(where, f"{source} has n_embd={sizes['n_embd']} not divisible by "
                       f"n_head={sizes['n_head']}", fix="each head gets n_embd / n_head")
    for key, (value, why) in REQUIRED.items():
        if read.flag(key, value) != value:
            read.refuse(key, config[key], f"is not supported ({why}); only {key}={value!r}")
    activation = read.text("activation_function", "gelu_new")
    if activation not in ACTIVATIONS_FROM_HF:
        read.refuse("activation_function", activation, "is not supported",
                    fix=f"supported: {sorted(ACTIVATIONS_FROM_HF)} (transformers' 'gelu' "
                    "is the exact erf form; ours is the tanh form, 'gelu_new')")
    rates = {key: read.number(key, 0.1, below=1) for key in ("resid_pdrop", "embd_pdrop",
                                                             "attn_pdrop")}
    if len(set(rates.values())) > 1:
        raise op_error(where, f"{source} has different dropout rates "
                       f"{', '.join(f'{k}={v}' for k, v in rates.items())}; a DecoderLM has "
                       "one", fix="set the three to one value in config.json (dropout only "
                       "acts while training)")
    eps = read.number("layer_norm_epsilon", 1e-5, positive=True)
    d_ff = 4 * sizes["n_embd"] if config.get("n_inner") is None else read.size("n_inner")
    return LMConfig.gpt2(sizes["vocab_size"], d_model=sizes["n_embd"],
                         n_heads=sizes["n_head"], n_layers=sizes["n_layer"], d_ff=d_ff,
                         max_len=sizes["n_positions"], dropout=rates["resid_pdrop"],
                         tie_weights=read.flag("tie_word_embeddings", True),
                         positional="learned", activation=ACTIVATIONS_FROM_HF[activation],
                         norm_eps=eps)


def _gpt2_names(infos: dict, tied: bool) -> dict[str, str]:
    """{GPT-2 name: the file's name}: names without the 'transformer.' prefix, without
    the causal-mask buffers old files store (h.{i}.attn.bias, h.{i}.attn.masked_bias:
    constants, not weights), and without lm_head.weight when the head is tied (it is
    wte.weight)."""
    kept = {}
    for stored in infos:
        name = stored.removeprefix(PREFIX)
        if name.endswith((".attn.bias", ".attn.masked_bias")) or (
                tied and name == "lm_head.weight"):
            continue
        if name in kept:
            raise op_error("from_pretrained (gpt2)", f"the weights hold {name} twice, as "
                           f"{kept[name]!r} and {stored!r}", fix="keep one of the two")
        kept[name] = stored
    return kept


# ---------------------------------------------------------------------- writing
def gpt2_to_hf(model: DecoderLM) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, tensors) of `model` as transformers' GPT2LMHeadModel stores them. An
    architecture GPT-2 cannot express is refused, naming the difference."""
    config = _config_of(model)
    state, pairs = model.state_dict(), parameter_pairs(len(model.blocks), model.config.d_model)
    expected = {ours for ours, _, _ in pairs}
    expected |= set() if model.config.tie_weights else {"head.weight"}
    extra, absent = sorted(set(state) - expected), sorted(expected - set(state))
    if extra or absent:
        raise op_error("save_pretrained (gpt2)", "the model's parameters differ from "
                       f"GPT-2's: {'extra ' + ', '.join(extra) if extra else ''}"
                       f"{'; ' if extra and absent else ''}"
                       f"{'without ' + ', '.join(absent) if absent else ''}")
    fused: dict[str, list] = {}
    tensors = {}
    for ours, theirs, columns in pairs:
        if columns is None:
            tensors[PREFIX + theirs] = state[ours]
        else:
            fused.setdefault(PREFIX + theirs, []).append(state[ours])
    for name, parts in fused.items():               # W_q | W_k | W_v side by side
        tensors[name] = np.concatenate(parts, axis=-1)
    if not model.config.tie_weights:
        tensors["lm_head.weight"] = np.ascontiguousarray(state["head.weight"].T)
    return config, tensors


def _config_of(model: DecoderLM) -> dict:
    where = "save_pretrained (gpt2)"
    if not isinstance(model, DecoderLM):
        raise op_error(where, f"expected a DecoderLM, got {type(model).__name__}", TypeError)
    c = model.config
    if c.positional != "learned":
        raise op_error(where, f"the model has positional={c.positional!r}; GPT-2 "
                       "can only learn its position table (wpe)",
                       fix="build it from LMConfig.gpt2(...) with positional='learned'")
    if c.activation not in ACTIVATIONS_TO_HF:
        raise op_error(where, f"the model has activation={c.activation!r}, which "
                       f"GPT-2 configs cannot name (they can: {sorted(ACTIVATIONS_TO_HF)})")
    for i, block in enumerate(model.blocks):
        if type(block) is not GPTBlock:
            raise op_error(where, f"block {i} is a {type(block).__name__}, where GPT-2 has "
                           "GPTBlock (pre-LN attention and feed-forward)")
        if not (type(block.norm1) is type(block.norm2) is LayerNorm
                and type(block.ffn) is FeedForward
                and type(block.ffn.activation) in (GELU, ReLU)):
            raise op_error(where, f"block {i} has {type(block.norm1).__name__} / "
                           f"{type(block.ffn).__name__} where GPT-2 has LayerNorm / "
                           "FeedForward (Linear, GELU, Linear)")
    eps = {m.eps for m in model.modules() if isinstance(m, LayerNorm)}
    if len(eps) != 1 or type(model.norm) is not LayerNorm:
        raise op_error(where, f"GPT-2 has one layer_norm_epsilon; the model's LayerNorms "
                       f"use {sorted(eps)}")
    vocab = c.vocab
    end_of_text = vocab - 1 if vocab == 50257 else None   # GPT-2's <|endoftext|>
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": vocab, "n_positions": c.max_len, "n_embd": c.d_model,
            "n_layer": c.n_layers, "n_head": c.n_heads, "n_inner": c.d_ff,
            "activation_function": ACTIVATIONS_TO_HF[c.activation],
            "layer_norm_epsilon": eps.pop(), "resid_pdrop": c.dropout,
            "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
            "tie_word_embeddings": c.tie_weights,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "add_cross_attention": False,
            "initializer_range": 0.02, "bos_token_id": end_of_text,
            "eos_token_id": end_of_text,
            "dtype": str(model.tok_embed.weight.dtype)}
