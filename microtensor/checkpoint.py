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
import math
import os
import re
import zipfile
import zlib

import numpy as np

from .errors import op_error
from .files import check_regular_file, open_regular_file, write_atomically
from .tensor import Tensor

FORMAT_KEY = "__microtensor__"
FORMAT_NAME = "microtensor.checkpoint"
FORMAT_VERSION = 1
SEPARATOR = "/"
# How much a checkpoint's arrays may take beyond the file's own size: what compression
# may add (`save` never compresses). `load(path, max_bytes=...)` sets another limit.
MAX_INFLATION = 2**30


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
    to `path` as one `.npz`, atomically, without pickle. The path is used as given:
    missing folders are created, a symlink is written through to its target, a file
    replaced keeps its permissions, and a read-only one is refused (docs/reference.md,
    "Files you write").

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


def load(path: str | os.PathLike, max_bytes: int | None = None) -> dict:
    """Read a file written by `save` and return the same nested structure (arrays as
    NumPy arrays, numbers and strings as Python values). Refuses files that are missing,
    special (a FIFO, a device), corrupt, not written by microtensor, or holding pickled
    objects, naming the path.

    Memory is bounded before anything is inflated: the size each entry declares, and
    their total, may not pass `max_bytes` (default: the file's own size plus 1 GiB, so
    a checkpoint `save` wrote, which is never compressed, always loads, while a
    compressed one, a "zip bomb" say, may grow by at most 1 GiB), and each array's
    header must fit its entry before the array is allocated. Pass a larger `max_bytes`
    for a compressed file you trust.

        >>> mt.save({"step": 10}, "ckpt.npz")
        >>> ckpt = mt.load("ckpt.npz"); ckpt["step"]
        10
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise op_error("load", f"'{path}' is a folder, not a checkpoint file",
                       IsADirectoryError)
    size = check_regular_file(path, "load", "checkpoint file",
                              "check the path (save writes exactly the path it is "
                              "given)").st_size
    arrays = _read_members(path, size + MAX_INFLATION if max_bytes is None else max_bytes)
    index = _read_index(path, arrays)
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


def _read_index(path: str, arrays: dict[str, np.ndarray]) -> dict:
    """The checkpoint's index (format, version, tree), taken out of `arrays`; refuses a
    file that `save` did not write, or that a newer microtensor wrote."""
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
    return index


# What NumPy and zipfile raise on damaged or pickled files (MemoryError: a damaged .npy
# header can declare an array far larger than the file, and NumPy allocates it first;
# NotImplementedError: zipfile on a damaged version or compression-method field;
# RuntimeError: zipfile on a damaged flags field that marks a member encrypted).
_READ_ERRORS = (ValueError, OSError, EOFError, MemoryError, NotImplementedError,
                RuntimeError, zipfile.BadZipFile, zlib.error)


def _read_members(path: str, max_bytes: int) -> dict[str, np.ndarray]:
    """Every member of the .npz, read eagerly (so corruption shows here, not later), from
    one open regular file (nothing can swap a FIFO in between the checks and the read)."""
    with open_regular_file(path, "load", "checkpoint file") as file:
        magic = file.read(6)
        file.seek(0)
        if magic.startswith(b"\x93NUMPY"):
            raise _single_array(path, file)
        if magic.startswith(b"PK"):
            _check_sizes(path, file, max_bytes)
            file.seek(0)
        return _read_npz(path, file, magic)


def _read_npz(path: str, file, magic: bytes) -> dict[str, np.ndarray]:
    # Look at the first bytes first: np.load treats anything it does not recognise as a
    # pickle, which would call a text file "pickled".
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
        content = np.load(file, allow_pickle=False)
    except _READ_ERRORS as error:
        raise _unreadable(path, error) from None
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


def _check_sizes(path: str, file, max_bytes: int) -> None:
    """Refuse a zip whose entries declare more than `max_bytes` in all, or an entry whose
    .npy header declares a larger array than the entry holds, before inflating any."""
    try:
        with zipfile.ZipFile(file) as archive:
            entries = archive.infolist()
            total = sum(entry.file_size for entry in entries)
            if total > max_bytes:
                largest = max(entries, key=lambda entry: entry.file_size)
                raise op_error("load", f"'{path}' declares {total:,} bytes of arrays "
                               f"(its largest entry, '{largest.filename}', "
                               f"{largest.file_size:,}) in a file of "
                               f"{os.fstat(file.fileno()).st_size:,} bytes; the limit is "
                               f"{max_bytes:,}", CheckpointError,
                               f"if you trust the file, load it with max_bytes={total}")
            for entry in entries:
                if entry.filename.endswith(".npy"):
                    _check_header(path, archive, entry)
    except _READ_ERRORS as error:
        if getattr(error, "microtensor", False):
            raise
        raise _unreadable(path, error) from None


def _check_header(path: str, archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> None:
    key = entry.filename.removesuffix(".npy")
    try:
        with archive.open(entry) as member:
            shape, dtype = _array_header(member)
    except (ValueError, EOFError) as error:     # too short or no .npy magic
        raise _unreadable(path, ValueError(f"the entry is not a .npy array ({error})"),
                          key) from None
    except _READ_ERRORS as error:      # an unknown compression method, an encrypted flag
        raise _unreadable(path, error, key) from None
    if dtype is None:
        return                    # a .npy format version NumPy's public readers skip
    if dtype.hasobject:
        raise _unreadable(path, ValueError("pickle"), key)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > entry.file_size:
        # refused before NumPy would allocate it: the MemoryError it would have been
        raise _unreadable(path, MemoryError(f"its header declares a {dtype} {shape} array "
                                            f"of {nbytes:,} bytes in {entry.file_size:,}"),
                          key)


def _array_header(file) -> tuple[tuple, np.dtype | None]:
    """(shape, dtype) from a .npy header, reading no data."""
    version = np.lib.format.read_magic(file)
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        return (), None
    shape, _, dtype = readers[version](file)
    return shape, dtype


def _single_array(path: str, file) -> Exception:
    """The refusal of a plain .npy file, from its header: its array is never read."""
    try:
        shape, dtype = _array_header(file)
    except _READ_ERRORS as error:
        return _unreadable(path, error)
    if dtype is not None and dtype.hasobject:
        return _unreadable(path, ValueError("pickle"))
    return op_error("load", f"'{path}' is not a microtensor checkpoint: it is a single "
                    f".npy array ({dtype} {shape})", CheckpointError, "load it with np.load")


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

