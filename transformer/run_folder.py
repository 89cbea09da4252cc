"""Reading a training run's folder back: `checkpoint.npz` as `train` wrote it, every field
checked before it is used.

A run folder may come from someone else, or be damaged or hand-edited. Each field is
refused by name when it is missing or of the wrong kind (`opts`, `model_config` and
`tokenizer` are JSON strings; `step` a whole number; `rng` a NumPy generator state), and
the model's config is checked against the stored weights' shapes before a model is
built: a `model_config` claiming 10**9 layers beside two stored layers is refused with
both numbers, in microseconds, instead of allocating until memory runs out.

    >>> ckpt = load_checkpoint("runs/gpl")                  # doctest: +SKIP
    >>> model, tokenizer, opts = model_from_checkpoint(ckpt)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import fields

import numpy as np

import microtensor as mt
from microtensor.errors import op_error

from .config import LMConfig
from .encoder_decoder import Transformer
from .lm import DecoderLM
from .tokenizer import tokenizer_from_dict

CHECKPOINT = "checkpoint.npz"
WHERE = "checkpoint"
TASKS = ("reverse", "copy", "charlm")
# A resumed run's saved options: (name, kind) the training loop uses.
RESUMED_OPTIONS = {"seed": int, "steps": int, "seq_len": int, "d_model": int, "n_heads": int,
                   "n_layers": int, "d_ff": int, "batch_size": int, "warmup": int,
                   "eval_every": int, "ckpt_every": int, "lr": float, "weight_decay": float,
                   "clip": float, "dropout": float}
ENCODER_DECODER_SIZES = ("src_vocab", "tgt_vocab", "d_model", "n_heads", "n_layers", "d_ff",
                         "max_len")


def load_checkpoint(folder: str) -> dict:
    """The checkpoint of the run folder `folder` (or of the checkpoint file it names),
    with the path it was read from under the key "__path__"."""
    path = os.path.join(folder, CHECKPOINT) if os.path.isdir(folder) else folder
    if not os.path.lexists(path):
        raise op_error(WHERE, f"no checkpoint at '{path}'", FileNotFoundError,
                       "pass the --out folder of a training run")
    ckpt = mt.load(path)
    ckpt["__path__"] = path      # for errors that name the file
    return ckpt


def damaged(ckpt: dict, message: str, kind: type = ValueError):
    """Our error for a run folder's checkpoint that cannot be read, naming the file."""
    return op_error(WHERE, f"'{ckpt.get('__path__', CHECKPOINT)}' {message}", kind,
                    "pass the checkpoint.npz of a training run, or train again")


def run_json(ckpt: dict, key: str, kind: type = dict):
    """The JSON field `key` of a run checkpoint, parsed; refused when absent, not JSON,
    or not a `kind`."""
    if key not in ckpt:
        raise damaged(ckpt, f"has no {key!r}: it is not the checkpoint of a training run",
                      KeyError)
    text = ckpt[key]
    if not isinstance(text, str):
        raise damaged(ckpt, f"has a {key!r} that is a {type(text).__name__}, not JSON text")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise damaged(ckpt, f"has a {key!r} that is not valid JSON ({error})") from None
    if not isinstance(value, kind):
        raise damaged(ckpt, f"has a {key!r} that is a {type(value).__name__}, not a "
                      f"{kind.__name__}")
    return value


def run_options(ckpt: dict, resumed: bool = False) -> dict:
    """The run's saved options: its task at least; with `resumed`, every option the
    training loop reads, each of its kind (a number, not a string)."""
    opts = run_json(ckpt, "opts")
    if opts.get("task") not in TASKS:
        raise damaged(ckpt, f"has opts task={opts.get('task')!r}, not one of {list(TASKS)}")
    needed = dict(RESUMED_OPTIONS) if resumed else {}
    if opts["task"] != "charlm":
        needed["seq_len"] = int
    for name, kind in needed.items():
        value = opts.get(name)
        ok = (type(value) is int and value >= 0) if kind is int else (
            type(value) in (int, float) and math.isfinite(value))
        if not ok:
            raise damaged(ckpt, f"has opts {name}={value!r}, not a "
                          f"{'whole number' if kind is int else 'finite number'}")
    return opts


def run_step(ckpt: dict) -> int:
    """The training step a checkpoint was saved at (a whole number >= 0, or our error)."""
    step = ckpt.get("step")
    if type(step) is not int or step < 0:
        raise damaged(ckpt, f"has step={step!r}, not a whole number >= 0")
    return step


def restore_rng(ckpt: dict) -> None:
    """Put the dropout generator back in the state the run saved."""
    state = run_json(ckpt, "rng")
    try:
        mt.generator().bit_generator.state = state
    except (ValueError, TypeError, KeyError) as error:
        raise damaged(ckpt, f"has an 'rng' that is not a generator state ({error})") from None


def model_from_checkpoint(ckpt: dict):
    """Rebuild (model, tokenizer, opts) from a loaded checkpoint dict, every field checked
    first. A DecoderLM's `model_config` is its LMConfig as a dict (older runs wrote the
    same names)."""
    opts = run_options(ckpt)
    try:
        tokenizer = tokenizer_from_dict(run_json(ckpt, "tokenizer"))
    except (KeyError, TypeError) as error:
        raise damaged(ckpt, f"has a 'tokenizer' we cannot rebuild ({error!r})") from None
    config = run_json(ckpt, "model_config")
    state = ckpt.get("model")
    if not isinstance(state, dict) or not all(isinstance(a, np.ndarray)
                                              for a in state.values()):
        raise damaged(ckpt, "has no 'model' state dict of arrays")
    if opts["task"] == "charlm":
        model = DecoderLM(lm_config(ckpt, config, state))
    else:
        check_encoder_decoder(ckpt, config, state)
        model = Transformer(**config)
    model.load_state_dict(state)
    return model, tokenizer, opts


def lm_config(ckpt: dict, config: dict, state: dict) -> LMConfig:
    """The LMConfig of a run, checked against the stored weights' shapes."""
    known = {field.name for field in fields(LMConfig)}
    if set(config) - known:
        raise damaged(ckpt, f"has model_config keys LMConfig does not take: "
                      f"{sorted(set(config) - known)}")
    settings = LMConfig(**config)       # its own checks: types, sizes, choices
    stored = {name: array.shape for name, array in state.items()}
    layers = len({name.split(".")[1] for name in stored if name.startswith("blocks.")})
    if settings.n_layers > layers:
        raise damaged(ckpt, f"has model_config n_layers={settings.n_layers:,} but its "
                      f"weights hold {layers} layer(s)")
    expected = settings.parameter_shapes()
    wrong = [f"{name}: stored {stored.get(name)}, the config implies {shape}"
             for name, shape in expected.items() if stored.get(name) != shape]
    if wrong:
        raise damaged(ckpt, f"has a model_config that does not fit its weights "
                      f"({len(wrong)} tensor(s)): {'; '.join(wrong[:4])}")
    check_position_table(ckpt, settings.max_len, settings.d_model, state,
                         settings.positional == "sinusoidal")
    return settings


def check_encoder_decoder(ckpt: dict, config: dict, state: dict) -> None:
    """Refuse an encoder-decoder config whose sizes disagree with the stored weights."""
    known = set(ENCODER_DECODER_SIZES) | {"dropout", "pad_id", "norm_first", "activation"}
    if set(config) - known or not set(ENCODER_DECODER_SIZES) <= set(config):
        raise damaged(ckpt, f"has a model_config with keys {sorted(config)}; an "
                      f"encoder-decoder takes {sorted(known)}")
    bad = [f"{key}={config[key]!r}" for key in ENCODER_DECODER_SIZES
           if type(config[key]) is not int or config[key] <= 0]
    if bad:
        raise damaged(ckpt, f"has model_config {', '.join(bad)}: sizes are positive integers")
    shapes = {name: array.shape for name, array in state.items()}
    layers = len({name.split(".")[2] for name in shapes if name.startswith("encoder.layers.")})
    d, ff = config["d_model"], config["d_ff"]
    claims = {"src_embed.weight": (config["src_vocab"], d),
              "tgt_embed.weight": (config["tgt_vocab"], d),
              "encoder.layers.0.ffn.W_1.weight": (d, ff)}
    wrong = [f"{name}: stored {shapes.get(name)}, the config implies {shape}"
             for name, shape in claims.items() if shapes.get(name) != shape]
    if config["n_layers"] != layers:
        wrong.append(f"n_layers={config['n_layers']:,} but the weights hold {layers}")
    if wrong:
        raise damaged(ckpt, f"has a model_config that does not fit its weights: "
                      f"{'; '.join(wrong)}")
    check_position_table(ckpt, config["max_len"], d, state, True)


def check_position_table(ckpt: dict, max_len: int, d_model: int, state: dict,
                         built: bool) -> None:
    """A sinusoidal table of max_len x d_model numbers is built, not stored: refuse one
    larger than all the stored weights together (real runs' tables are far smaller)."""
    stored = sum(array.size for array in state.values())
    if built and max_len * d_model > stored:
        raise damaged(ckpt, f"has max_len={max_len:,}: its position table of "
                      f"{max_len * d_model:,} numbers would outweigh the model's "
                      f"{stored:,} weights")
