"""Checkpoints: nested dicts of arrays and numbers in one `.npz` file, without pickle.

`save(obj, path)` writes a dict whose values are arrays, numbers, strings, None, or
nested dicts/lists/tuples of those. So a whole training checkpoint (a model state_dict,
an optimizer state_dict with its per-parameter moment arrays and step counts, a schedule,
the step number) goes into one file, and `load(path)` gives the same structure back.

    >>> import microtensor as mt
    >>> from microtensor import nn, optim
    >>> model = nn.Linear(2, 3); opt = optim.AdamW(model.parameters())
    >>> mt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 100},
    ...         "ckpt.npz")
    >>> ckpt = mt.load("ckpt.npz")
    >>> model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["optimizer"])

File format (readable with plain `np.load(path)`):
- Each leaf is one `.npy` member named by its path, parts joined with "/" (parameter
  names keep their dots): `model/layers.0.weight`, `optimizer/state/0/exp_avg`. A key
  that is not plain (say, with spaces, '/' or non-ASCII) gets a numbered name instead;
  any string key is allowed and round-trips.
  Arrays are stored as they are; Python numbers as 0-d arrays (int64, float64, bool),
  strings as 0-d unicode arrays. Floats round-trip exactly.
- The member `__microtensor__` is a 0-d unicode array holding JSON: the format name, its
  version, and the tree of containers, keys, leaf kinds and entry names, so `load`
  rebuilds dicts, lists, tuples and Python scalars exactly. A file without it is refused as not ours.

Safety: files are written and read with `allow_pickle=False`, so loading a checkpoint
never runs code; a file holding pickled objects is refused. Writing goes to a temporary
file in the same folder, is fsync'ed, then renamed over the target with `os.replace`
(atomic on POSIX and Windows): a crash or Ctrl-C mid-save leaves the previous file
intact and no temporary file behind. A save killed outright (SIGKILL, power loss) cannot
clean up, so the temporary file is named `.NAME.PID.RANDOM.tmp` after the writer's
process id, and the next save to the same path removes those whose process is gone
(never one of a save still running).
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib

import numpy as np

from .errors import op_error
from .files import write_atomically
from .tensor import Tensor

FORMAT_KEY = "__microtensor__"
FORMAT_NAME = "microtensor.checkpoint"
FORMAT_VERSION = 1
SEPARATOR = "/"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, not ours, or holding pickles."""


# ---------------------------------------------------------------------- flatten / rebuild
_SAFE_PART = re.compile(r"[A-Za-z0-9_.\-]+")


def _entry_name(parts: list[str], arrays: dict) -> str:
    """The .npz member name of a leaf: its readable path when every part is plain
    (letters, digits, '_', '.', '-'; not starting with '__', which marks ours), otherwise
    a numbered name. The index records it, so any string key round-trips exactly."""
    if all(_SAFE_PART.fullmatch(part) and not part.startswith("__") and part not in
           (".", "..") for part in parts):
        return SEPARATOR.join(parts)
    return f"__entry{len(arrays)}"


def _flatten(value, parts: list[str], arrays: dict[str, np.ndarray]) -> dict:
    """Describe `value` as a JSON tree and put its leaves into `arrays` by entry name."""
    where = SEPARATOR.join(parts) or "<root>"
    if not parts and not isinstance(value, dict):
        raise op_error("save", f"expected a dict at the top level, got "
                       f"{type(value).__name__}", TypeError,
                       "wrap it: mt.save({'weights': array}, path)")
    if isinstance(value, dict):
        items = []
        for key, child in value.items():
            if not isinstance(key, str):
                raise op_error("save", f"dict keys must be strings, got {key!r} "
                               f"({type(key).__name__}) at '{where}'", TypeError,
                               "convert the key with str()")
            items.append([key, _flatten(child, [*parts, key], arrays)])
        return {"kind": "dict", "items": items}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {"kind": kind, "items": [_flatten(child, [*parts, str(i)], arrays)
                                        for i, child in enumerate(value)]}
    if value is None:
        return {"kind": "none"}
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, bool):
        kind, array = "bool", np.array(value, dtype=np.bool_)
    elif isinstance(value, int):
        kind, array = "int", np.array(value, dtype=np.int64)
    elif isinstance(value, float):
        kind, array = "float", np.array(value, dtype=np.float64)
    elif isinstance(value, str) and value.endswith("\x00"):
        return {"kind": "str", "value": value}  # NumPy's str arrays drop trailing NULs
    elif isinstance(value, str):
        kind, array = "str", np.array(value, dtype=np.str_)
    elif isinstance(value, (np.ndarray, np.generic)):
        kind = "scalar" if isinstance(value, np.generic) else "array"
        array = np.asarray(value)
        if array.dtype.hasobject or array.dtype.kind == "V":
            raise op_error("save", f"'{where}' is an array of dtype {array.dtype}, which "
                           f"can only be stored by pickling", TypeError,
                           "store numbers, strings or numeric arrays")
    else:
        raise op_error("save", f"cannot store '{where}' of type {type(value).__name__} "
                       "without pickle", TypeError, "store arrays, numbers, strings, None, "
                       "or dicts/lists/tuples of them")
    entry = _entry_name(parts, arrays)
    arrays[entry] = array
    return {"kind": kind, "entry": entry}


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _rebuild(node: dict, arrays, where: str):
    kind = node.get("kind")
    if kind == "dict":
        return {key: _rebuild(child, arrays, where) for key, child in node["items"]}
    if kind in ("list", "tuple"):
        items = [_rebuild(child, arrays, where) for child in node["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "none":
        return None
    if "value" in node:
        return node["value"]
    entry = node.get("entry")
    if entry not in arrays:
        raise op_error("load", f"'{where}' is damaged: its index lists entry {entry!r} "
                       "but the file has no such entry", CheckpointError)
    array = arrays[entry]
    if kind in _SCALARS:
        return _SCALARS[kind](array.item())
    if kind == "scalar":
        return array[()]
    if kind == "array":
        return array
    raise op_error("load", f"'{where}' is damaged: unknown entry kind {kind!r} at "
                   f"{entry!r}", CheckpointError)


# ---------------------------------------------------------------------- public API
def save(obj: dict, path: str | os.PathLike) -> None:
    """Write `obj` (a dict of arrays, numbers, strings, None and nested dicts/lists/tuples)
    to `path` as one `.npz`, atomically, without pickle. The path is used as given.

        >>> model = mt.nn.Linear(2, 3)
        >>> mt.save({"model": model.state_dict(), "step": 10}, "ckpt.npz")
    """
    arrays: dict[str, np.ndarray] = {}
    tree = _flatten(obj, [], arrays)
    index = json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "tree": tree})

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            _write_npz(file, {FORMAT_KEY: np.array(index, dtype=np.str_), **arrays})
    write_atomically(path, write, where="save", example="ckpt.npz")


def _write_npz(file, arrays: dict[str, np.ndarray]) -> None:
    """What np.savez does, minus its keyword-argument names (a key named 'file' would
    clash there); every member is a plain .npy written with allow_pickle=False."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load(path: str | os.PathLike) -> dict:
    """Read a file written by `save` and return the same nested structure (arrays as
    NumPy arrays, numbers and strings as Python values). Refuses files that are missing,
    corrupt, not written by microtensor, or holding pickled objects, naming the path.

        >>> mt.save({"step": 10}, "ckpt.npz")
        >>> ckpt = mt.load("ckpt.npz"); ckpt["step"]
        10
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise op_error("load", f"no checkpoint file at '{path}'", FileNotFoundError,
                       "check the path (save writes exactly the path it is given)")
    if os.path.isdir(path):
        raise op_error("load", f"'{path}' is a folder, not a checkpoint file",
                       IsADirectoryError)
    arrays = _read_members(path)
    if FORMAT_KEY not in arrays:
        found = ", ".join(sorted(arrays)[:8]) or "nothing"
        raise op_error("load", f"'{path}' is not a microtensor checkpoint: it has no "
                       f"'{FORMAT_KEY}' entry (it holds {found})", CheckpointError,
                       "load it with np.load, or save it with mt.save / Module.save")
    try:
        index = json.loads(str(arrays.pop(FORMAT_KEY).item()))
        if index.get("format") != FORMAT_NAME:
            raise ValueError(f"format {index.get('format')!r}")
        version = int(index["version"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise op_error("load", f"'{path}' is not a microtensor checkpoint: its "
                       f"'{FORMAT_KEY}' entry is not ours ({error})", CheckpointError) from None
    if version > FORMAT_VERSION:
        raise op_error("load", f"'{path}' has checkpoint format version {version}, newer "
                       f"than this microtensor reads ({FORMAT_VERSION})", CheckpointError,
                       "upgrade microtensor")
    try:
        return _rebuild(index.get("tree"), arrays, path)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError) as error:
        if getattr(error, "microtensor", False):
            raise
        # A tampered or damaged index: wrong kinds, missing fields, absurd nesting.
        raise op_error("load", f"'{path}' is damaged: its '{FORMAT_KEY}' index does not "
                       f"describe a checkpoint ({type(error).__name__}: {error})",
                       CheckpointError, "restore it from a backup or re-save it") from None


# What NumPy and zipfile raise on damaged or pickled files (MemoryError: a damaged .npy
# header can declare an array far larger than the file, and NumPy allocates it first;
# NotImplementedError: zipfile on a damaged version or compression-method field;
# RuntimeError: zipfile on a damaged flags field that marks a member encrypted).
_READ_ERRORS = (ValueError, OSError, EOFError, MemoryError, NotImplementedError,
                RuntimeError, zipfile.BadZipFile, zlib.error)


def _read_members(path: str) -> dict[str, np.ndarray]:
    """Every member of the .npz, read eagerly (so corruption shows here, not later)."""
    # Look at the first bytes first: np.load treats anything it does not recognise as a
    # pickle, which would call a text file "pickled".
    with open(path, "rb") as file:
        magic = file.read(6)
    if not magic:
        raise op_error("load", f"'{path}' is empty (0 bytes)", CheckpointError,
                       "restore it from a backup or re-save it")
    if magic[:1] == b"\x80":
        raise _unreadable(path, ValueError("pickle"))
    if not magic.startswith((b"PK", b"\x93NUMPY")):
        raise op_error("load", f"'{path}' is not a microtensor checkpoint: it is not a "
                       f".npz file (it starts with {magic!r})", CheckpointError,
                       "pass a file written by mt.save or Module.save")
    try:
        content = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise _unreadable(path, error) from None
    if isinstance(content, np.ndarray):
        raise op_error("load", f"'{path}' is not a microtensor checkpoint: it is a single "
                       f".npy array ({content.dtype} {content.shape})", CheckpointError,
                       "load it with np.load")
    with content:
        arrays = {}
        for key in content.files:
            try:
                arrays[key] = content[key]
            except _READ_ERRORS as error:  # CRC errors, truncated members, pickles
                raise _unreadable(path, error, key) from None
            if not isinstance(arrays[key], np.ndarray):
                # NumPy hands back raw bytes for a member it does not see as .npy: a damaged
                # zip directory can make an array's member look like that (with a valid
                # CRC when its sizes were zeroed too), so it would load as b''.
                raise _unreadable(path, ValueError("the entry is not a .npy array"), key)
    return arrays


def _unreadable(path: str, error: Exception, key: str | None = None) -> Exception:
    what = f" (entry '{key}')" if key else ""
    text = str(error)
    if "pickle" in text.lower() or "object arrays" in text.lower():
        return op_error("load", f"'{path}'{what} holds pickled Python objects; refused, "
                        "because unpickling can run arbitrary code", CheckpointError,
                        "re-save it with numeric arrays only (mt.save never pickles)")
    return op_error("load", f"'{path}'{what} is corrupt or truncated and cannot be read "
                    f"as a .npz checkpoint ({type(error).__name__}: {text})",
                    CheckpointError, "restore it from a backup or re-save it")

