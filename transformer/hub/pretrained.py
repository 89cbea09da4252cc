"""Hugging Face model directories: read them into a `DecoderLM`, write a `DecoderLM` as one.

A directory holds `config.json` (the architecture: sizes, activation, LayerNorm epsilon,
...) and `model.safetensors` (the weights by name), the layout `transformers`'
`save_pretrained` writes and the Hugging Face Hub serves. This module does the file work
and picks the mapping by `config["model_type"]`; each mapping (`gpt2.py`, `llama.py`) turns names and
shapes into ours and back.

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=16, d_model=8, n_heads=2, n_layers=1))
    >>> lm.save_pretrained("my-model")                    # transformers can load this
    >>> lm = DecoderLM.from_pretrained("my-model")        # config.json + model.safetensors

Weights are read only from safetensors, which cannot run code. `pytorch_model.bin` files
are pickles: loading one can execute anything its author wrote, so they are refused
(never unpickled) with the command that converts them. Writing builds the whole
directory beside the target and renames it into place, so a crash never leaves half a
model; files of an existing directory that are not weights (a tokenizer's vocab.json and
merges.txt, say) are carried over.
"""
from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np

from microtensor.errors import op_error
from microtensor.files import (
    cannot_write,
    check_target,
    fsync_folder,
    is_read_only,
    keep_mode,
    kind_of,
    read_json_capped,
    remove_entry,
    remove_leftover_temporaries,
    resolve_target,
    stray_temporaries,
    temporary_name,
)
from microtensor.safetensors_io import (
    LazyTensors,
    TensorInfo,
    read_safetensors_header,
    save_safetensors,
)

from .gpt2 import gpt2_from_hf, gpt2_to_hf
from .llama import llama_from_hf, llama_to_hf

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# model_type -> (from_hf(config, tensors) -> model, to_hf(model) -> (config, tensors))
MODEL_TYPES = {"gpt2": (gpt2_from_hf, gpt2_to_hf), "llama": (llama_from_hf, llama_to_hf)}


def from_pretrained(path: str | os.PathLike, *, allow_non_finite: bool = False):
    """The model stored in the Hugging Face directory `path`, by its `model_type`.

    A stranger's directory is read in bounded time and memory, or refused by name:
    config.json only if it is a regular file of at most 64 MB, every config value
    type-checked, and the weights' names, shapes and dtypes checked against the config
    from the safetensors headers before the model is allocated. NaN or infinite weights
    are refused unless `allow_non_finite=True`."""
    config, tensors = read_pretrained_dir(path, lazy=True)
    config_path = os.path.join(os.fspath(path), CONFIG)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise op_error("from_pretrained", f"{config_path} has "
                       f"model_type={model_type!r}; supported: {sorted(MODEL_TYPES)}",
                       fix="load a directory of a supported architecture")
    from_hf, _ = MODEL_TYPES[model_type]
    try:
        return from_hf(config, tensors, allow_non_finite=allow_non_finite,
                       source=config_path)
    except MemoryError as error:
        if getattr(error, "microtensor", False):
            raise
        size = sum(info.nbytes for info in tensors.infos.values()) / 2**30
        raise op_error("from_pretrained", f"the model in '{os.fspath(path)}' ({size:.1f} "
                       "GiB of weights) needs more memory than this process can get",
                       MemoryError, "load it on a machine with more memory") from None


def save_pretrained(model, path: str | os.PathLike) -> None:
    """Write `model` to the directory `path` in the layout its architecture has on the
    Hub (config.json + model.safetensors), atomically."""
    _, to_hf = MODEL_TYPES[model_type_of(model)]
    config, tensors = to_hf(model)
    write_pretrained_dir(path, config, tensors)


def model_type_of(model) -> str:
    """The Hugging Face `model_type` a model is saved as: "llama" for a Llama-style
    DecoderLM, otherwise "gpt2" (`gpt2_to_hf` refuses a model built with parts GPT-2
    cannot express)."""
    config = getattr(model, "config", None)
    return "llama" if getattr(config, "style", "gpt") == "llama" else "gpt2"


# ---------------------------------------------------------------------- reading
def read_pretrained_dir(path: str | os.PathLike,
                        lazy: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, tensors) of a Hugging Face directory: `config.json` parsed, and every
    tensor of `model.safetensors` (or of the shards its index lists) as a NumPy array;
    with `lazy`, a LazyTensors whose headers are read and checked and whose tensors are
    read when looked up. Refuses a missing directory or file, special files (a FIFO, a
    folder, a link loop), pickled weights, and damaged files by name."""
    where = "from_pretrained"
    path = os.fspath(path)
    if not os.path.isdir(path):
        what = "is a file, not a directory" if os.path.exists(path) else "does not exist"
        raise op_error(where, f"'{path}' {what}", FileNotFoundError,
                       f"pass the directory that holds {CONFIG} and {WEIGHTS}")
    files = sorted(os.listdir(path))
    config_path = os.path.join(path, CONFIG)
    if CONFIG not in files:
        raise op_error(where, f"'{path}' has no {CONFIG} (it holds: "
                       f"{', '.join(files) or 'nothing'})", FileNotFoundError,
                       "download config.json with the weights")
    config = _read_json(config_path, where)
    if not isinstance(config, dict):
        raise op_error(where, f"{config_path} holds a {type(config).__name__}, not an "
                       "object of settings")
    if WEIGHTS in files:
        infos = read_safetensors_header(os.path.join(path, WEIGHTS), where)
    elif SHARD_INDEX in files:
        infos = _read_shards(path, where)
    else:
        infos = None
    if infos is not None:
        tensors = LazyTensors(infos, where)
        return config, tensors if lazy else dict(tensors)
    pickled = [name for name in files if name in PICKLED_WEIGHTS]
    if pickled:
        raise op_error(where, f"'{path}' has its weights only in {pickled[0]}, a Python "
                       "pickle: loading it could run any code its author put in it, so it "
                       "is refused and never unpickled", ValueError,
                       "convert it to safetensors where you trust it, e.g. `python -c \"from "
                       "transformers import AutoModelForCausalLM as M; M.from_pretrained("
                       f"'{path}').save_pretrained('{path}-safetensors')\"`, or download "
                       "model.safetensors, which the Hub serves for GPT-2")
    raise op_error(where, f"'{path}' has no {WEIGHTS} (it holds: {', '.join(files)})",
                   FileNotFoundError, f"download {WEIGHTS} into it")


def _read_json(path: str, where: str):
    """Parsed JSON of a regular file of at most 64 MB (`read_json_capped`)."""
    return read_json_capped(path, where, what=os.path.basename(path))


def _read_shards(path: str, where: str) -> dict[str, TensorInfo]:
    """A model split over several files: the index maps each tensor name to its file.
    Every shard's header is read and checked; a tensor must be in the shard the index
    names for it, and in no other (which copy would win is not for us to guess)."""
    index_path = os.path.join(path, SHARD_INDEX)
    weight_map = _read_json(index_path, where)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict):
        raise op_error(where, f"{index_path} has no 'weight_map' object")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or os.path.basename(shard) != shard:
            raise op_error(where, f"{index_path} maps {name!r} to the shard {shard!r}, "
                           "which is not a file name in the directory",
                           fix="each weight_map value is the name of a .safetensors file "
                           "beside the index")
    headers = {shard: read_safetensors_header(os.path.join(path, shard), where)
               for shard in sorted(set(weight_map.values()))}
    missing = [f"{name} (in {shard})" for name, shard in weight_map.items()
               if name not in headers[shard]]
    if missing:
        raise op_error(where, f"{index_path} lists {len(missing)} tensor(s) that their "
                       f"shard does not hold: {', '.join(missing[:8])}",
                       fix="download the index and the shards again, together")
    stray = [f"{name} (in {shard}, which the index puts in "
             f"{weight_map.get(name, 'no shard')})"
             for shard, infos in headers.items() for name in infos
             if weight_map.get(name) != shard]
    if stray:
        raise op_error(where, f"{len(stray)} tensor(s) are in a shard the index does not "
                       f"name for them: {', '.join(stray[:8])}",
                       fix=f"download the index and the shards again, together; "
                       f"{SHARD_INDEX} must name the one shard that holds each tensor")
    return {name: headers[shard][name] for name, shard in weight_map.items()}


# ---------------------------------------------------------------------- writing
def write_pretrained_dir(path: str | os.PathLike, config: dict,
                         tensors: dict[str, np.ndarray]) -> None:
    """Write `config.json` and `model.safetensors` as the directory `path`, atomically:
    everything goes into a new directory beside it, which then replaces `path` by
    rename. An existing `path` is renamed aside just before and deleted just after; a
    crash between those two renames leaves it whole as `.NAME.PID.*.old` beside the new
    one's staging directory, never a half-written model at `path`, and the next save
    puts it back first.

    The other entries of an existing `path` (a tokenizer's vocab.json and merges.txt,
    say) are carried over, never followed: regular files (hard-linked, or copied),
    folders (recreated, the same rules inside) and symbolic links (recreated pointing
    where they pointed, so a link to a folder copies nothing). A FIFO, socket or device
    there is refused before anything is written. The directory keeps its permissions,
    and config.json and the weights keep theirs; a read-only one is refused. A symlink
    `path` is written through to its target; missing parent folders are created
    (docs/reference.md, "Files you write")."""
    where = "save_pretrained"
    given = os.fspath(path)
    target = resolve_target(given, where)
    parent, name = os.path.split(target)
    _restore_or_remove_strays(parent, name)
    existing = check_target(target, given, where, directory=True)
    carried, modes = _entries_to_carry(target, given, where) if existing else ([], {})
    staging = temporary_name(parent, name)
    retired = temporary_name(parent, name, ".old")
    try:
        os.mkdir(staging)
    except OSError as error:
        raise cannot_write(where, given, parent, error) from None
    try:
        _fill_staging(staging, config, tensors, modes)
        _carry_over(target, staging, carried)
        fsync_folder(staging)
        if existing is not None:
            keep_mode(staging, existing)
            os.rename(target, retired)  # kept until the new directory is in place
            os.rename(staging, target)
            remove_entry(retired)
        else:
            os.rename(staging, target)
        fsync_folder(parent)
    except BaseException as error:  # KeyboardInterrupt too: put the old directory back
        if os.path.isdir(retired) and not os.path.lexists(target):
            os.rename(retired, target)
        remove_entry(staging)
        if isinstance(error, OSError) and not getattr(error, "microtensor", False):
            raise cannot_write(where, given, None, error) from None
        raise


def _fill_staging(staging: str, config: dict, tensors: dict[str, np.ndarray],
                  modes: dict) -> None:
    """Write config.json and the weights into the new directory, each with the
    permissions its predecessor had (`modes`: entry name -> the old file's stat)."""
    with open(os.path.join(staging, CONFIG), "w", encoding="utf-8") as file:
        json.dump(config, file, indent=2, sort_keys=True)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    # transformers refuses safetensors whose metadata lacks a "format" it knows
    save_safetensors(tensors, os.path.join(staging, WEIGHTS), metadata={"format": "pt"})
    for replaced, info in modes.items():
        if os.path.exists(os.path.join(staging, replaced)):
            keep_mode(os.path.join(staging, replaced), info)


def _restore_or_remove_strays(parent: str, name: str) -> None:
    """Undo what killed saves of `name` left beside it: a killed save's staging folder
    is deleted; a directory it had moved aside is put back when `name` is missing (the
    save died between its two renames), else deleted (it died while deleting it)."""
    remove_leftover_temporaries(parent, name)
    aside = sorted(stray_temporaries(parent, name, ".old"), key=os.path.getmtime)
    if aside and not os.path.lexists(os.path.join(parent, name)):
        os.rename(aside.pop(), os.path.join(parent, name))    # the newest one
    for stale in aside:
        remove_entry(stale)


def _entries_to_carry(target: str, given: str, where: str) -> tuple[list, dict]:
    """([(relative path, "dir" | "link" | "file")], {replaced top-level file: its stat}):
    what a save carries over from the directory `target`, parents before their contents,
    walked without following links, so neither a loop nor a link to a big tree is
    entered. Refuses special files, and read-only files the save would replace."""
    carried, modes, folders = [], {}, [""]
    while folders:
        folder = folders.pop()
        try:
            entries = sorted(os.scandir(os.path.join(target, folder)), key=lambda e: e.name)
        except OSError as error:
            raise cannot_write(where, given, None, error) from None
        for entry in entries:
            relative = os.path.join(folder, entry.name)
            info = entry.stat(follow_symlinks=False)
            if not folder and _is_weights_or_config(entry.name):
                if stat.S_ISREG(info.st_mode):
                    if is_read_only(entry.path, info):
                        raise op_error(where, f"'{os.path.join(given, relative)}' is "
                                       "read-only, and a save replaces it", PermissionError,
                                       f"make it writable first (chmod u+w "
                                       f"'{os.path.join(given, relative)}'), or save to "
                                       "another directory")
                    modes[entry.name] = info
                continue
            if stat.S_ISLNK(info.st_mode):
                carried.append((relative, "link"))
            elif stat.S_ISDIR(info.st_mode):
                carried.append((relative, "dir"))
                folders.append(relative)
            elif stat.S_ISREG(info.st_mode):
                carried.append((relative, "file"))
            else:
                raise op_error(where, f"'{given}' holds '{relative}', {kind_of(info)}: a "
                               "save carries the directory's other files over, and cannot "
                               "carry that", OSError, "move it out of the directory, or "
                               "save to a new one")
    return carried, modes


def _carry_over(source: str, staging: str, carried: list) -> None:
    """Recreate the `carried` entries of `source` in `staging` (folders get their
    permissions last, so a read-only folder can be filled first)."""
    folders = []
    for relative, kind in carried:
        old, new = os.path.join(source, relative), os.path.join(staging, relative)
        if kind == "dir":
            os.mkdir(new)
            folders.append((old, new))
        elif kind == "link":
            os.symlink(os.readlink(old), new)
        else:
            try:
                os.link(old, new, follow_symlinks=False)   # the same file: no copy
            except OSError:
                shutil.copy2(old, new, follow_symlinks=False)
    for old, new in reversed(folders):
        shutil.copystat(old, new, follow_symlinks=False)


def _is_weights_or_config(name: str) -> bool:
    """Files a new save replaces (stale shards or pickles would shadow the new weights)."""
    return (name == CONFIG or name.endswith((".safetensors", ".bin", ".h5", ".msgpack"))
            or name in (SHARD_INDEX, *PICKLED_WEIGHTS))

