"""Tokenizers: characters or UTF-8 bytes to integer ids and back.

Both reserve the same special tokens, `<pad>`, `<bos>`, `<eos>` (and `<unk>` for a
CharTokenizer built with unk=True), and serialise to a plain dict of strings and numbers
(`to_dict` / `tokenizer_from_dict`) that checkpoints store as JSON.

    >>> tok = CharTokenizer("hello world")
    >>> tok.decode(tok.encode("hello"))
    'hello'
    >>> ByteTokenizer().encode("né")      # UTF-8 bytes: n, then two bytes for é
    [110, 195, 169]
"""
from __future__ import annotations

import json
import os

import numpy as np

from microtensor.errors import op_error
from microtensor.files import read_json_capped

SPECIALS = ("<pad>", "<bos>", "<eos>")


def check_text(where: str, text, utf8: bool = False) -> None:
    """Refuse anything but a str (a number or None would fail somewhere less clear); with
    `utf8`, also a str UTF-8 cannot encode: one holding a lone surrogate ('\\ud800'),
    which is how Python spells bytes of a command line that are not UTF-8."""
    if not isinstance(text, str):
        raise op_error(where, f"text must be a str, got {type(text).__name__} {text!r}",
                       TypeError, fix="pass a string, e.g. str(value)")
    if utf8:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            char = text[error.start]
            raise op_error(where, f"text holds {char!r} at position {error.start}, a lone "
                           "surrogate that is not a Unicode character and has no UTF-8 "
                           "bytes (a command line or file name with bytes that are not "
                           "UTF-8 gives these)", ValueError,
                           "pass valid Unicode text, e.g. "
                           "raw_bytes.decode('utf-8', errors='replace')") from None


def as_id_list(where: str, ids) -> list[int]:
    """`ids` (a list, tuple or 1-D array of integers) as a list of Python ints."""
    try:
        items = list(ids)
    except TypeError:
        items = None
    if items is None or isinstance(ids, (str, bytes)):
        raise op_error(where, f"ids must be a sequence of integer ids, got "
                       f"{type(ids).__name__} {ids!r}", TypeError,
                       fix="pass a list or 1-D array of ints, e.g. tok.encode(text)")
    for position, id_ in enumerate(items):
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)):
            raise op_error(where, f"ids must be integers, got {type(id_).__name__} "
                           f"{id_!r} at position {position}", TypeError,
                           fix="pass integer ids, e.g. the output of encode; to encode "
                           "text use encode(text)")
    return [int(id_) for id_ in items]


class CharTokenizer:
    """One id per distinct character of the text it is built from, after the specials
    (`pad_id` = 0, `bos_id` = 1, `eos_id` = 2).

    Unknown characters: by default `encode` raises a ValueError naming the character and
    its position; built with `unk=True`, they map to the `<unk>` id (3) instead, which
    decodes as the replacement character U+FFFD.
    """

    def __init__(self, text: str = "", unk: bool = False, chars: list[str] | None = None):
        self.unk = unk
        specials = SPECIALS + (("<unk>",) if unk else ())
        self.chars = sorted(set(text)) if chars is None else list(chars)
        self.specials = list(specials)
        self.itos = self.specials + self.chars
        self.stoi = {ch: i for i, ch in enumerate(self.chars, start=len(self.specials))}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        self.unk_id = 3 if unk else None

    @property
    def vocab_size(self) -> int:
        """How many token ids there are: the characters and the specials."""
        return len(self.itos)

    def __len__(self) -> int:
        """The vocabulary's size, as `len(tokenizer)`."""
        return self.vocab_size

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """The ids of `text`, one per character (unknown ones as `unk`, else an error naming
        the character); `bos`/`eos` add those ids at the ends."""
        check_text("CharTokenizer.encode", text)
        ids = [self.bos_id] if bos else []
        for position, ch in enumerate(text):
            id_ = self.stoi.get(ch, self.unk_id)
            if id_ is None:
                raise op_error("CharTokenizer.encode", f"character {ch!r} (U+{ord(ch):04X}) "
                               f"at position {position} is not in the vocabulary of "
                               f"{len(self.chars)} characters",
                               fix="build the tokenizer with unk=True to map unknown "
                               "characters to <unk>, or use ByteTokenizer (never fails)")
            ids.append(id_)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids, skip_specials: bool = True) -> str:
        """Text of `ids`; special tokens are dropped (or shown as '<bos>' etc.);
        `<unk>` decodes as U+FFFD."""
        pieces = []
        for id_ in as_id_list("CharTokenizer.decode", ids):
            if not 0 <= id_ < len(self.itos):
                raise op_error("CharTokenizer.decode", f"id {id_} is out of range for a "
                               f"vocabulary of {len(self.itos)}", IndexError)
            if id_ == self.unk_id:
                pieces.append("\ufffd")
            elif id_ < len(self.specials):
                pieces.append("" if skip_specials else self.itos[id_])
            else:
                pieces.append(self.itos[id_])
        return "".join(pieces)

    def to_dict(self) -> dict:
        """The tokenizer as JSON-ready data (`load_tokenizer` reads it back)."""
        return {"kind": "char", "chars": "".join(self.chars), "unk": self.unk}

    def save(self, path: str) -> None:
        """Write the tokenizer to `path` as JSON (`load_tokenizer` reads it back)."""
        save_json(path, self.to_dict())


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, then `<pad>` 256, `<bos>` 257, `<eos>` 258. Encoding
    never fails; decoding replaces invalid byte sequences with U+FFFD."""

    def __init__(self):
        self.specials = list(SPECIALS)
        self.pad_id, self.bos_id, self.eos_id = 256, 257, 258

    @property
    def vocab_size(self) -> int:
        """How many token ids there are: the 256 bytes and the specials."""
        return 256 + len(self.specials)

    def __len__(self) -> int:
        """The vocabulary's size, as `len(tokenizer)`."""
        return self.vocab_size

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """The ids of `text`: its UTF-8 bytes, one id each; `bos`/`eos` add those ids at the
        ends."""
        check_text("ByteTokenizer.encode", text, utf8=True)
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_specials: bool = True) -> str:
        """The text of `ids` (bytes decoded as UTF-8, invalid bytes replaced); specials left
        out unless `skip_specials=False`."""
        out, pieces = bytearray(), []
        for id_ in as_id_list("ByteTokenizer.decode", ids):
            if not 0 <= id_ < self.vocab_size:
                raise op_error("ByteTokenizer.decode", f"id {id_} is out of range for a "
                               f"vocabulary of {self.vocab_size}", IndexError)
            if id_ < 256:
                out.append(id_)
            elif not skip_specials:
                pieces.append(out.decode("utf-8", errors="replace"))
                pieces.append(self.specials[id_ - 256])
                out = bytearray()
        pieces.append(out.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def to_dict(self) -> dict:
        """The tokenizer as JSON-ready data (`load_tokenizer` reads it back)."""
        return {"kind": "byte"}

    def save(self, path: str) -> None:
        """Write the tokenizer to `path` as JSON (`load_tokenizer` reads it back)."""
        save_json(path, self.to_dict())


def tokenizer_from_dict(state: dict):
    """Rebuild a tokenizer from its `to_dict()`."""
    kind = state.get("kind")
    if kind == "char":
        return CharTokenizer(chars=list(state["chars"]), unk=bool(state.get("unk", False)))
    if kind == "byte":
        return ByteTokenizer()
    raise op_error("tokenizer_from_dict", f"unknown tokenizer kind {kind!r}",
                   fix="expected 'char' or 'byte'")


def load_tokenizer(path: str):
    """The tokenizer saved at `path` (a regular JSON file of at most 64 MB)."""
    state = read_json_capped(path, "load_tokenizer", what="tokenizer file")
    if not isinstance(state, dict):
        raise op_error("load_tokenizer", f"'{path}' holds a {type(state).__name__}, not a "
                       "tokenizer's settings", fix="pass a file written by tokenizer.save")
    return tokenizer_from_dict(state)


def save_json(path: str, data: dict) -> None:
    """Write JSON atomically: a temporary file, then a rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
