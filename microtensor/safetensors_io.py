"""Weights as `.safetensors`: the format Hugging Face and PyTorch users exchange models in.

A safetensors file is an 8-byte header length, a JSON header (each tensor's dtype, shape
and byte range, plus optional string metadata) and the raw bytes of the tensors. Reading
one never runs code (unlike a pickle), which is why the ecosystem moved to it. Only flat
name -> array mappings fit: that is a `state_dict`, not a training checkpoint with nested
optimizer state (those stay in `mt.save`'s `.npz`; see `microtensor.checkpoint`).

    >>> from microtensor.safetensors_io import load_safetensors, save_safetensors
    >>> model = mt.nn.Linear(2, 3)
    >>> save_safetensors(model.state_dict(), "model.safetensors")
    >>> state = load_safetensors("model.safetensors")        # {name: np.ndarray}

`Module.save(path)` / `Module.load(path)` use these when the path ends in `.safetensors`.
Writing goes through the `safetensors` package's NumPy API. Reading parses the header
here first (`read_safetensors_header`), so every size is checked against the file
before a byte of a tensor is allocated, then reads each tensor with `np.fromfile`.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from .errors import op_error
from .files import check_regular_file, open_regular_file, write_atomically
from .tensor import Tensor

EXTENSION = ".safetensors"


class SafetensorsFileError(ValueError):
    """A .safetensors file that cannot be read: damaged, truncated or not safetensors."""


def save_safetensors(tensors, path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> array or Tensor) to `path` atomically: the bytes go to a
    temporary file beside it, which is renamed over `path` only once complete (the rules
    of every writer: docs/reference.md, "Files you write").

        >>> save_safetensors({"weight": np.ones((2, 3), np.float32)}, "w.safetensors")
    """
    path = os.fspath(path)
    arrays = {}
    for name, value in dict(tensors).items():
        array = np.ascontiguousarray(value.data if isinstance(value, Tensor) else value)
        if not isinstance(name, str) or array.dtype.hasobject or array.dtype.kind not in "biuf":
            raise op_error("save_safetensors", f"'{name}' ({array.dtype}) cannot be stored: "
                           "safetensors holds numeric arrays under string names", TypeError,
                           "store only a state_dict (name -> numeric array)")
        arrays[name] = array

    def write(temporary: str) -> None:
        try:   # straight to the file: no second copy of the weights in memory
            safetensors.numpy.save_file(arrays, temporary, metadata=metadata)
        except (SafetensorError, ValueError, TypeError) as error:
            raise op_error("save_safetensors", f"cannot write '{path}': {error}",
                           ValueError) from None
    write_atomically(path, write, where="save_safetensors", example="model.safetensors")


# ---------------------------------------------------------------------- reading
# Each dtype the format names -> the NumPy dtype its bytes are read as (little-endian, as
# the format stores them). BF16 has no NumPy dtype: a bfloat16 is the top two bytes of a
# float32, so it is read as uint16 and widened to float32. The 8-bit floats (F8_E4M3,
# F8_E5M2, ...) are not read.
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
          "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
MAX_HEADER_BYTES = 100 * 2**20   # the safetensors package's own limit


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a .safetensors file, as its header says: the dtype's
    name in the format ("F32", "BF16", "I64", ...), the shape, and the byte range."""
    path: str
    dtype: str
    shape: tuple[int, ...]
    start: int      # offset of the first byte in the file
    nbytes: int

    @property
    def is_float(self) -> bool:
        """Whether the dtype is a floating-point one ("F32", "BF16", ...)."""
        return self.dtype in FLOAT_DTYPES


def read_safetensors_header(path: str | os.PathLike,
                            where: str = "load_safetensors") -> dict[str, TensorInfo]:
    """Every tensor's dtype, shape and place in the file, from the header alone: no
    tensor is read, so sizes can be checked before anything is allocated. A header that
    is damaged, names a dtype we do not read, or gives a tensor a byte range that does not
    fit its shape or the file is refused, naming the tensor.

        >>> save_safetensors({"weight": np.ones((2, 3), np.float32)}, "w.safetensors")
        >>> read_safetensors_header("w.safetensors")["weight"].shape
        (2, 3)
    """
    path = os.fspath(path)
    size = check_regular_file(path, where, "safetensors file").st_size
    with open_regular_file(path, where, "safetensors file") as file:
        head = file.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else None
        if length is None or length > min(MAX_HEADER_BYTES, size - 8):
            raise _damaged(where, path, size, "its first 8 bytes do not give a header "
                           "length that fits the file" if length is not None else
                           "it is shorter than the 8 bytes of its header length")
        text = file.read(length)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _damaged(where, path, size, f"its header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise _damaged(where, path, size, "its header is not a JSON object")
    header.pop("__metadata__", None)
    data_start, data_size = 8 + length, size - 8 - length
    infos, ranges = {}, []
    for name, entry in header.items():
        info = _tensor_info(where, path, size, name, entry, data_start, data_size)
        infos[name] = info
        ranges.append((info.start, info.start + info.nbytes, name))
    ranges.sort()
    for (_, end, first), (start, _, second) in pairwise(r for r in ranges if r[0] < r[1]):
        if start < end:
            raise _damaged(where, path, size, f"tensors {first!r} and {second!r} share bytes")
    return infos


def _tensor_info(where, path, size, name, entry, data_start, data_size) -> TensorInfo:
    def bad(what):
        return _damaged(where, path, size, f"the header's entry for tensor {name!r} {what}")
    if not isinstance(entry, dict):
        raise bad("is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise bad(f"has dtype {dtype!r}")
    if dtype not in DTYPES:
        raise op_error(where, f"'{path}': tensor {name!r} is stored as {dtype}, a dtype "
                       f"this loader does not read (it reads {', '.join(DTYPES)})",
                       SafetensorsFileError, "convert the weights to F32, F16 or BF16 "
                       "where they were made, e.g. tensor.float() in PyTorch")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
        raise bad(f"has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(n) is int for n in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise bad(f"has data_offsets {offsets!r}, not [begin, end]")
    nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise bad(f"gives {offsets[1] - offsets[0]:,} bytes to a {dtype} {tuple(shape)} "
                  f"tensor, which takes {nbytes:,}")
    if offsets[1] > data_size:
        raise bad(f"ends at byte {offsets[1]:,} of a data section of {data_size:,}")
    return TensorInfo(path, dtype, tuple(shape), data_start + offsets[0], nbytes)


def _damaged(where: str, path: str, size: int, why: str) -> SafetensorsFileError:
    return op_error(where, f"'{path}' is damaged, truncated or not a safetensors file "
                    f"({size:,} bytes; {why})", SafetensorsFileError,
                    "download or save it again")


def read_tensor(info: TensorInfo, name: str = "", where: str = "load_safetensors",
                file=None, out: np.ndarray | None = None) -> np.ndarray:
    """One tensor of a .safetensors file as a new NumPy array (BF16 widened to float32),
    or written into `out` (an array of its shape; bytes of the same dtype go straight
    into a contiguous `out`, others are read and cast). Its size comes from the header,
    already checked against the file; a tensor larger than the memory this process can
    get is our MemoryError, naming it."""
    dtype = np.dtype(DTYPES[info.dtype])
    count = info.nbytes // dtype.itemsize if dtype.itemsize else 0
    if out is not None and tuple(out.shape) != info.shape:
        raise op_error(where, f"tensor {name!r} has shape {info.shape}, not the "
                       f"{tuple(out.shape)} it is read into", ValueError)
    if file is None:
        with open_regular_file(info.path, where, "safetensors file") as opened:
            return read_tensor(info, name, where, opened, out)
    if out is not None and not (out.dtype == dtype and out.flags.c_contiguous
                                and out.flags.writeable):
        np.copyto(out, read_tensor(info, name, where, file), casting="same_kind")
        return out
    try:
        file.seek(info.start)
        if out is not None:
            if out.size and file.readinto(memoryview(out).cast("B")) != info.nbytes:
                raise _damaged(where, info.path, os.path.getsize(info.path),
                               f"tensor {name!r} is cut short")
            return out
        array = np.fromfile(file, dtype=dtype, count=count)
        if len(array) != count:
            raise _damaged(where, info.path, os.path.getsize(info.path),
                           f"tensor {name!r} is cut short")
        if info.dtype == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.reshape(info.shape)
    except MemoryError:
        raise op_error(where, f"'{info.path}': tensor {name!r} ({info.dtype} "
                       f"{info.shape}) needs {info.nbytes / 2**30:.1f} GiB, more memory "
                       "than this process can get", MemoryError,
                       "load it on a machine with more memory, or check that the file "
                       "is the one you meant") from None


class LazyTensors(Mapping):
    """Tensors of one or more .safetensors files by name, read from disk only when
    looked up. `infos` gives every tensor's dtype and shape without reading it."""

    def __init__(self, infos: dict[str, TensorInfo], where: str = "load_safetensors"):
        self.infos, self.where = dict(infos), where

    def __getitem__(self, name: str) -> np.ndarray:
        """`tensors[name]`: that tensor read from its file now, as an array."""
        return read_tensor(self.infos[name], name, self.where)

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        """Read tensor `name` into the array `out` (its shape, any float dtype): a float32
        tensor into a float32 array goes from the file straight into it, so loading a
        model into its parameters never holds a second copy of a weight."""
        return read_tensor(self.infos[name], name, self.where, out=out)

    def __iter__(self):
        """The tensor names, without reading any tensor."""
        return iter(self.infos)

    def __len__(self) -> int:
        """How many tensors the files hold."""
        return len(self.infos)


def tensor_infos(tensors) -> dict[str, TensorInfo]:
    """Dtype and shape of every tensor in `tensors`: a LazyTensors (from its header) or a
    dict of arrays (from the arrays, dtypes named as safetensors names them)."""
    if isinstance(tensors, LazyTensors):
        return tensors.infos
    names = {np.dtype(value): key for key, value in DTYPES.items() if key != "BF16"}
    infos = {}
    for name, array in tensors.items():
        array = np.asarray(array.data if isinstance(array, Tensor) else array)
        dtype = names.get(array.dtype, str(array.dtype))
        infos[name] = TensorInfo("", dtype, tuple(array.shape), 0, array.nbytes)
    return infos


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file as a NumPy array, by name. A missing,
    damaged or truncated file is refused with an error naming it, before any tensor is
    read; BF16 tensors come back as float32.

        >>> save_safetensors({"weight": np.ones((2, 3), np.float32)}, "w.safetensors")
        >>> load_safetensors("w.safetensors")["weight"].shape
        (2, 3)
    """
    path = os.fspath(path)
    infos = read_safetensors_header(path)
    with open_regular_file(path, "load_safetensors", "safetensors file") as file:
        return {name: read_tensor(info, name, file=file) for name, info in infos.items()}
