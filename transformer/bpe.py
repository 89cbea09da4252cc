"""GPT-2's byte-level BPE tokenizer, read from `vocab.json` + `merges.txt`.

Three steps turn text into ids:

1. **Pre-tokenize.** A regular expression cuts the text into words, numbers, runs of
   punctuation and runs of spaces, each keeping the one space before it (" world"). It
   needs Unicode classes (`\\p{L}` letters, `\\p{N}` numbers) that Python's `re` lacks; we
   use the `regex` package, as GPT-2's own encoder does. Merges never cross these cuts.
2. **Bytes as characters.** Each piece's UTF-8 bytes are spelled with 256 printable
   characters (`byte_to_char`: printable bytes stand for themselves, the others are
   moved above U+0100, so a space is 'Ġ'). Any text becomes a string over 256 symbols,
   so encoding never meets an unknown character.
3. **Merge.** `merges.txt` lists pairs of symbols in the order training learned them.
   Repeatedly merge the adjacent pair that was learned first, until no listed pair
   remains; each remaining symbol is a token, looked up in `vocab.json`.

Decoding concatenates the tokens' strings and maps the characters back to bytes.

    >>> tok = BPETokenizer.from_pretrained("gpt2")  # needs the download  # doctest: +SKIP
    >>> ids = tok.encode("Hello world")             # doctest: +SKIP
    >>> tok.decode(ids)                             # doctest: +SKIP
    'Hello world'

It gives the same ids as `transformers.GPT2Tokenizer` on the same files (tested), with
`<|endoftext|>` in the text encoded as its one special id.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from itertools import pairwise

import regex

from microtensor.errors import op_error

from .tokenizer import as_id_list, check_text

VOCAB, MERGES = "vocab.json", "merges.txt"
# GPT-2's pattern: English contractions, then a letter run, a number run or a punctuation
# run (each with at most one leading space), then whitespace (a run of spaces before a
# word leaves its last space to that word: `\s+(?!\S)`).
PRETOKENIZE = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = ("<|endoftext|>",)


@lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """Each byte 0..255 as a printable character: the bytes that print ('!'..'~',
    '¡'..'¬', '®'..'ÿ') stand for themselves; the rest (controls, space, ...) take
    the characters from U+0100 up, in order. GPT-2's table, so vocab.json reads."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


class BPETokenizer:
    """GPT-2's byte-level BPE. `vocab` maps token strings to ids; `merges` lists the
    learned pairs, first learned first. Tokens in `SPECIAL_TOKENS` that the vocabulary
    has (GPT-2's `<|endoftext|>`) are matched in the text as a whole and never merged."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.vocab = dict(vocab)
        self.tokens = {id_: token for token, id_ in self.vocab.items()}
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.char_to_byte = {char: byte for byte, char in byte_to_char().items()}
        self.specials = {token: self.vocab[token] for token in SPECIAL_TOKENS
                         if token in self.vocab}
        self.special_pattern = (regex.compile("(" + "|".join(
            regex.escape(token) for token in self.specials) + ")") if self.specials else None)
        self.cache: dict[str, list[str]] = {}

    @classmethod
    def from_files(cls, vocab_path: str | os.PathLike,
                   merges_path: str | os.PathLike) -> BPETokenizer:
        """Read `vocab.json` (token -> id) and `merges.txt` (one pair per line)."""
        where = "BPETokenizer"
        for path in (vocab_path, merges_path):
            if not os.path.isfile(path):
                raise op_error(where, f"no file at '{os.fspath(path)}'", FileNotFoundError,
                               f"a GPT-2 tokenizer needs {VOCAB} and {MERGES}")
        try:
            with open(vocab_path, encoding="utf-8") as file:
                vocab = json.load(file)
        except (ValueError, UnicodeDecodeError) as error:
            raise op_error(where, f"{os.fspath(vocab_path)} is not valid JSON ({error})") \
                from None
        if not isinstance(vocab, dict) or not all(
                isinstance(id_, int) and not isinstance(id_, bool) for id_ in vocab.values()):
            raise op_error(where, f"{os.fspath(vocab_path)} must map token strings to "
                           "integer ids")
        merges = []
        with open(merges_path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if line.startswith("#version") or not line.strip():
                    continue
                pair = line.split()
                if len(pair) != 2:
                    raise op_error(where, f"{os.fspath(merges_path)} line {number} is "
                                   f"{line.rstrip()!r}; expected two symbols separated by "
                                   "a space")
                merges.append(tuple(pair))
        return cls(vocab, merges)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> BPETokenizer:
        """The tokenizer of a Hugging Face GPT-2 directory (its vocab.json + merges.txt)."""
        return cls.from_files(os.path.join(path, VOCAB), os.path.join(path, MERGES))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return self.vocab_size

    # ------------------------------------------------------------------ encode
    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (any str; nothing is added before or after)."""
        check_text("BPETokenizer.encode", text)
        ids = []
        pieces = self.special_pattern.split(text) if self.special_pattern else [text]
        for piece in pieces:
            if piece in self.specials:
                ids.append(self.specials[piece])
                continue
            for word in PRETOKENIZE.findall(piece):
                spelled = "".join(byte_to_char()[byte] for byte in word.encode("utf-8"))
                for token in self.bpe(spelled):
                    if token not in self.vocab:
                        raise op_error("BPETokenizer.encode", f"token {token!r} (from "
                                       f"{word!r}) is not in vocab.json", ValueError,
                                       "vocab.json must hold all 256 byte characters and "
                                       "every merge result")
                    ids.append(self.vocab[token])
        return ids

    def bpe(self, word: str) -> list[str]:
        """The tokens of one pre-tokenized word (spelled in byte characters): merge the
        adjacent pair of lowest rank, everywhere it occurs, until no pair has a rank."""
        if word in self.cache:
            return self.cache[word]
        symbols = list(word)
        while len(symbols) > 1:
            pairs = set(pairwise(symbols))
            first = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if first not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == first:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        if len(self.cache) < 100_000:  # words repeat; the cache is bounded for long runs
            self.cache[word] = symbols
        return symbols

    # ------------------------------------------------------------------ decode
    def decode(self, ids) -> str:
        """The text of `ids`. Byte sequences that are not valid UTF-8 (a prefix of a
        multi-byte character, say) become U+FFFD, as in transformers."""
        out = bytearray()
        for id_ in as_id_list("BPETokenizer.decode", ids):
            if id_ not in self.tokens:
                raise op_error("BPETokenizer.decode", f"id {id_} is not in the vocabulary "
                               f"({len(self.vocab)} tokens, ids 0..{max(self.tokens)})",
                               IndexError)
            token = self.tokens[id_]
            if all(char in self.char_to_byte for char in token):
                out += bytes(self.char_to_byte[char] for char in token)
            else:  # a token added as plain text, outside the byte alphabet
                out += token.encode("utf-8")
        return out.decode("utf-8", errors="replace")
