"""Llama-architecture checkpoints in the layout of Hugging Face `transformers`
(`model_type: "llama"`): a config dict and a dict of named arrays, to and from a
Llama-style `DecoderLM`.

    >>> from transformer import DecoderLM, LMConfig
    >>> llama = DecoderLM(LMConfig.llama(vocab=16, d_model=8, n_heads=2, n_layers=1))
    >>> config, tensors = llama_to_hf(llama)       # a config.json dict and HF-named arrays
    >>> model = llama_from_hf(config, tensors)

Names and shapes (L = layer index; `transformers` stores a Linear weight as (out, in), we
store (in, out), so every projection is transposed on the way in and out):

    model.embed_tokens.weight                    (vocab, d)   tok_embed.weight
    model.layers.L.input_layernorm.weight        (d,)         blocks.L.norm1.weight
    model.layers.L.self_attn.q_proj.weight       (h d_k, d)   blocks.L.self_attn.W_q.weight.T
    model.layers.L.self_attn.k_proj.weight       (h_kv d_k, d)         ... W_k.weight.T
    model.layers.L.self_attn.v_proj.weight       (h_kv d_k, d)         ... W_v.weight.T
    model.layers.L.self_attn.o_proj.weight       (d, h d_k)            ... W_o.weight.T
    model.layers.L.post_attention_layernorm.weight (d,)       blocks.L.norm2.weight
    model.layers.L.mlp.gate_proj.weight          (d_ff, d)    blocks.L.ffn.W_gate.weight.T
    model.layers.L.mlp.up_proj.weight            (d_ff, d)    blocks.L.ffn.W_up.weight.T
    model.layers.L.mlp.down_proj.weight          (d, d_ff)    blocks.L.ffn.W_down.weight.T
    model.norm.weight                            (d,)         norm.weight
    lm_head.weight                               (vocab, d)   head.weight.T (absent if tied)

q_proj and k_proj need no permutation: our rotary embedding pairs dimension j with
j + d_k/2, the "rotate-half" layout `transformers` uses. Config values this model cannot
compute (rope scaling, biases, a head_dim other than hidden_size / heads, an activation
other than SiLU, attention dropout) are refused with an error naming the key and value,
rather than loaded into a model that would compute something else.
"""
from __future__ import annotations

import numpy as np

from microtensor.errors import op_error
from microtensor.nn import skip_init
from microtensor.safetensors_io import tensor_infos

from ..config import LMConfig
from ..lm import DecoderLM
from .checks import ConfigReader, check_float_dtypes, check_layer_count, read_weight

# Other config keys (token ids, dtype, initializer_range, use_cache, ...) do not change
# what a forward pass computes and are ignored.
_ALLOWED_ROPE_KEYS = {"rope_type", "type", "rope_theta"}


def _read_config(config: dict, source: str = "config") -> LMConfig:
    """The LMConfig of a Hugging Face Llama config, or a clear refusal naming the key and
    value. Every value is type-checked (`ConfigReader`)."""
    where = "llama_from_hf"
    read = ConfigReader(config, where, source, missing_kind=KeyError)

    def refuse(key, value, why, fix=None):
        read.refuse(key, value, f"is not supported: {why}", fix)

    model_type = config.get("model_type")
    if model_type != "llama":
        refuse("model_type", model_type, "this reads Llama checkpoints",
               "convert only configs with model_type 'llama'")
    d_model, n_heads = read.size("hidden_size"), read.size("num_attention_heads")
    checks = [
        ("hidden_act", read.text("hidden_act", "silu"), "silu",
         "the feed-forward is SwiGLU with SiLU"),
        ("attention_bias", read.flag("attention_bias", False), False,
         "the projections have no biases"),
        ("mlp_bias", read.flag("mlp_bias", False), False, "the feed-forward has no biases"),
        ("attention_dropout", read.number("attention_dropout", 0.0, below=1), 0.0,
         "no dropout on attention weights"),
        ("partial_rotary_factor", read.number("partial_rotary_factor", 1.0), 1.0,
         "rotary positions turn every dimension of a head"),
    ]
    for key, value, supported, why in checks:
        if value != supported:
            refuse(key, config[key], why, f"only {key}={supported!r} is supported")
    head_dim = None if config.get("head_dim") is None else read.size("head_dim")
    if head_dim is not None and head_dim * n_heads != d_model:
        refuse("head_dim", head_dim, f"heads here have hidden_size / num_attention_heads = "
               f"{d_model}/{n_heads} dimensions")
    # null (older configs) means one K/V head per query head; 0 is refused, not read as null
    n_kv_heads = (n_heads if config.get("num_key_value_heads") is None
                  else read.size("num_key_value_heads"))
    return LMConfig.llama(read.size("vocab_size"), d_model=d_model, n_heads=n_heads,
                          n_layers=read.size("num_hidden_layers"),
                          d_ff=read.size("intermediate_size"),
                          max_len=read.size("max_position_embeddings", 2048),
                          tie_weights=read.flag("tie_word_embeddings", False),
                          n_kv_heads=n_kv_heads, rope_theta=_rope_theta(read, refuse),
                          norm_eps=read.number("rms_norm_eps", 1e-6, positive=True))


def _rope_theta(read: ConfigReader, refuse) -> float:
    """RoPE's base, refusing scaled rotary positions. transformers 5 writes
    rope_parameters {rope_type, rope_theta}; earlier versions wrote rope_theta and
    rope_scaling (None, or a dict naming a scaled type)."""
    rope_theta = read.number("rope_theta", 10000.0, positive=True)
    for key in ("rope_parameters", "rope_scaling"):
        rope = read.mapping(key)
        if rope is None:
            continue
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        extra = sorted(set(rope) - _ALLOWED_ROPE_KEYS)
        if rope_type != "default" or extra:
            refuse(key, rope, "only plain rotary positions (rope_type 'default', no "
                   "scaling) are implemented")
        if "rope_theta" in rope:
            rope_theta = ConfigReader(rope, read.where, f"{read.source} {key}").number(
                "rope_theta", positive=True)
    return rope_theta


def _name_map(n_layers: int, tied: bool) -> list[tuple[str, str, bool]]:
    """(our name, Hugging Face name, transposed?) for every parameter."""
    names = [("tok_embed.weight", "model.embed_tokens.weight", False)]
    for layer in range(n_layers):
        ours, theirs = f"blocks.{layer}.", f"model.layers.{layer}."
        names += [(ours + "norm1.weight", theirs + "input_layernorm.weight", False),
                  (ours + "norm2.weight", theirs + "post_attention_layernorm.weight", False)]
        names += [(f"{ours}self_attn.W_{x}.weight", f"{theirs}self_attn.{x}_proj.weight", True)
                  for x in "qkvo"]
        names += [(f"{ours}ffn.W_{x}.weight", f"{theirs}mlp.{x}_proj.weight", True)
                  for x in ("gate", "up", "down")]
    names.append(("norm.weight", "model.norm.weight", False))
    if not tied:
        names.append(("head.weight", "lm_head.weight", True))
    return names


def llama_from_hf(config: dict, tensors, *, allow_non_finite: bool = False,
                  source: str = "config") -> DecoderLM:
    """A Llama-style `DecoderLM` with the weights of a Hugging Face Llama checkpoint:
    `config` as read from config.json, `tensors` as read from model.safetensors (a dict
    of arrays, or a LazyTensors that reads each from disk when needed). Weights become
    float32 arrays of our (in, out) layout. Missing, unexpected, misshapen or integer
    tensors are refused by name before the model is built (a tied checkpoint may carry
    lm_head.weight if it equals the embedding; older checkpoints' rotary_emb.inv_freq
    buffers are recomputed, not read); NaN or infinite weights are refused unless
    `allow_non_finite`. `source` names config.json in errors."""
    where = "llama_from_hf"
    settings = _read_config(config, source)
    infos = tensor_infos(tensors)
    check_layer_count(where, source, "num_hidden_layers", settings.n_layers, infos,
                      r"model\.layers\.(\d+)\.")
    names = _name_map(settings.n_layers, settings.tie_weights)
    _check_llama_tensors(where, settings, tensors, infos, names)
    with skip_init():              # every weight is read from the file below
        model = DecoderLM(settings)
    # Each weight goes into its parameter as it is read (an untransposed one straight
    # from the file), so loading never holds a second copy of the model.
    params = dict(model.named_parameters())
    for ours, theirs, transposed in names:
        if transposed:
            array = read_weight(where, tensors, theirs, allow_non_finite)
            np.copyto(params[ours].data, array.T, casting="same_kind")
        else:
            read_weight(where, tensors, theirs, allow_non_finite, out=params[ours].data)
    return model.eval()


def _check_llama_tensors(where: str, settings: LMConfig, tensors, infos: dict,
                         names: list) -> None:
    """Refuse, by name, missing, unexpected (a tied head equal to the embedding aside),
    misshapen or integer tensors."""
    expected = {theirs for _, theirs, _ in names}
    missing = sorted(expected - set(infos))
    if missing:
        raise op_error(where, f"{len(missing)} tensors are missing, e.g. {missing[:3]}",
                       KeyError, "pass every tensor of model.safetensors (all shards)")
    unexpected = sorted(name for name in set(infos) - expected
                        if not name.endswith("rotary_emb.inv_freq"))
    embedding = "model.embed_tokens.weight"
    if unexpected == ["lm_head.weight"] and infos["lm_head.weight"].shape == \
            infos[embedding].shape and infos["lm_head.weight"].is_float and np.array_equal(
            tensors["lm_head.weight"], tensors[embedding]):
        unexpected = []                      # a tied head saved anyway: the same numbers
    if unexpected:
        raise op_error(where, f"{len(unexpected)} tensors are not part of a Llama model, "
                       f"e.g. {unexpected[:3]}", KeyError,
                       "is this checkpoint a Llama (model_type 'llama') one?")
    shapes = settings.parameter_shapes()
    for ours, theirs, transposed in names:
        stored, want = infos[theirs].shape, shapes[ours][::-1] if transposed else shapes[ours]
        if stored != want:
            raise op_error(where, f"tensor {theirs} has shape {stored}, but the config "
                           f"makes it {want}", ValueError,
                           "check that config.json belongs to these weights")
    check_float_dtypes(where, infos, expected)


def llama_to_hf(model: DecoderLM) -> tuple[dict, dict[str, np.ndarray]]:
    """The Hugging Face config dict and named float32 arrays of a Llama-style
    `DecoderLM`, ready for config.json and `safetensors.numpy.save_file`. A tied model
    stores no lm_head.weight (as `transformers` does)."""
    where = "llama_to_hf"
    if not isinstance(model, DecoderLM) or model.config.style != "llama":
        raise op_error(where, "expected a Llama-style DecoderLM, got "
                       f"{type(model).__name__}"
                       + (f"(style={model.config.style!r})"
                          if isinstance(model, DecoderLM) else ""), TypeError,
                       "only the Llama style has a Llama checkpoint layout")
    c = model.config
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab, "hidden_size": c.d_model, "intermediate_size": c.d_ff,
        "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "head_dim": c.d_model // c.n_heads,
        "hidden_act": "silu", "max_position_embeddings": c.max_len,
        "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "tie_word_embeddings": c.tie_weights, "attention_bias": False,
        "mlp_bias": False, "attention_dropout": 0.0, "dtype": "float32",
    }
    parameters = dict(model.named_parameters())
    tensors = {}
    for ours, theirs, transposed in _name_map(c.n_layers, c.tie_weights):
        array = parameters[ours].data
        tensors[theirs] = np.ascontiguousarray(array.T if transposed else array,
                                               dtype=np.float32)
    return config, tensors
