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
   remains; each remaining symbol is a token, looked up in `vocab.json`. Candidate pairs
   wait in a heap over a linked list of symbols, as in the `tokenizers` library, so a
   word of n bytes takes O(n log n): a megabyte of letters without a space is one word.

Decoding concatenates the tokens' strings and maps the characters back to bytes.

    >>> tok = BPETokenizer.from_pretrained("gpt2")  # needs the download  # doctest: +SKIP
    >>> ids = tok.encode("Hello world")             # doctest: +SKIP
    >>> tok.decode(ids)                             # doctest: +SKIP
    'Hello world'

It gives the same ids as `transformers.GPT2Tokenizer` on the same files (tested), with
`<|endoftext|>` in the text encoded as its one special id.
"""
from __future__ import annotations

import heapq
import os
from functools import lru_cache
from itertools import pairwise

import regex

from microtensor.errors import op_error
from microtensor.files import read_json_capped, read_text_capped

from .tokenizer import as_id_list, check_text

VOCAB, MERGES = "vocab.json", "merges.txt"
# GPT-2's pattern: English contractions, then a letter run, a number run or a punctuation
# run (each with at most one leading space), then whitespace (a run of spaces before a
# word leaves its last space to that word: `\s+(?!\S)`).
PRETOKENIZE = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = ("<|endoftext|>",)
# GPT-2's vocab.json is 1 MB and its merges.txt 456 KB; the largest BPE vocabularies
# (about 250k tokens) stay under 16 MB. A 189 MB merges.txt would take gigabytes.
MAX_FILE_BYTES = 16 * 2**20
CACHED_WORD_LENGTH = 256   # longer words are not cached: the cache stays small


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


# str.translate table: the character of code point b (b < 256) -> byte b's character
BYTE_SPELLING = {byte: char for byte, char in byte_to_char().items()}


class BPETokenizer:
    """GPT-2's byte-level BPE. `vocab` maps token strings to ids; `merges` lists the
    learned pairs, first learned first. Tokens in `SPECIAL_TOKENS` that the vocabulary
    has (GPT-2's `<|endoftext|>`) are matched in the text as a whole and never merged."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.vocab = dict(vocab)
        self.tokens = _ids_to_tokens(self.vocab, "the vocabulary")
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.char_to_byte = {char: byte for byte, char in byte_to_char().items()}
        self.specials = {token: self.vocab[token] for token in SPECIAL_TOKENS
                         if token in self.vocab}
        self.special_pattern = (regex.compile("(" + "|".join(
            regex.escape(token) for token in self.specials) + ")") if self.specials else None)
        self.cache: dict[str, list[str]] = {}

    @classmethod
    def from_files(cls, vocab_path: str | os.PathLike, merges_path: str | os.PathLike,
                   max_bytes: int = MAX_FILE_BYTES) -> BPETokenizer:
        """Read `vocab.json` (token -> id) and `merges.txt` (one pair per line). Each must
        be a regular file of at most `max_bytes` (16 MB) in UTF-8; two tokens with one id
        are refused (decoding would give the wrong one back)."""
        where = "BPETokenizer"
        fix = f"a GPT-2 tokenizer needs {VOCAB} and {MERGES}"
        vocab = read_json_capped(vocab_path, where, max_bytes, VOCAB, fix)
        if not isinstance(vocab, dict) or not all(
                type(id_) is int and id_ >= 0 for id_ in vocab.values()):
            raise op_error(where, f"{os.fspath(vocab_path)} must map token strings to "
                           "integer ids >= 0")
        _ids_to_tokens(vocab, os.fspath(vocab_path))
        text = read_text_capped(merges_path, where, max_bytes, MERGES, fix=fix)
        merges = []
        for number, line in enumerate(text.split("\n"), start=1):
            if line.startswith("#version") or not line.strip():
                continue
            pair = line.split()
            if len(pair) != 2:
                raise op_error(where, f"{os.fspath(merges_path)} line {number} is "
                               f"{line.rstrip()[:80]!r}; expected two symbols separated by "
                               "a space")
            merges.append(tuple(pair))
        return cls(vocab, merges)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> BPETokenizer:
        """The tokenizer of a Hugging Face GPT-2 directory (its vocab.json + merges.txt)."""
        return cls.from_files(os.path.join(path, VOCAB), os.path.join(path, MERGES))

    @property
    def vocab_size(self) -> int:
        """How many token ids there are (the vocabulary, merged tokens and specials)."""
        return len(self.vocab)

    def __len__(self) -> int:
        """The vocabulary's size, as `len(tokenizer)`."""
        return self.vocab_size

    # ------------------------------------------------------------------ encode
    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (any str; nothing is added before or after)."""
        check_text("BPETokenizer.encode", text, utf8=True)
        ids = []
        pieces = self.special_pattern.split(text) if self.special_pattern else [text]
        for piece in pieces:
            if piece in self.specials:
                ids.append(self.specials[piece])
                continue
            for word in PRETOKENIZE.findall(piece):
                # the word's UTF-8 bytes, each spelled as its character (in C, not a loop)
                spelled = word.encode("utf-8").decode("latin-1").translate(BYTE_SPELLING)
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
        adjacent pair of lowest rank, everywhere it occurs (left to right), until no pair
        has a rank. Short words are cached: words repeat."""
        if word in self.cache:
            return self.cache[word]
        tokens = self._merge_by_rank(word)
        if len(self.cache) < 100_000 and len(word) <= CACHED_WORD_LENGTH:
            self.cache[word] = tokens              # words repeat; the cache stays small
        return tokens

    def _merge_by_rank(self, word: str) -> list[str]:
        """The tokens `bpe` gives for `word`, merged in O(n log n) for n letters.

        Rescanning the word after every merge costs O(n) per merge, O(n^2) in all: a
        100,000-letter word took 17 s. Instead the symbols form a linked list, and each
        adjacent pair with a rank waits in the bucket of its rank; a heap gives the
        lowest rank with a bucket. A bucket's positions are sorted once, then merged left
        to right; a merge makes at most two new pairs, so a word takes O(n log n).
        `pair_rank[i]` is the rank of the pair starting at position i now: a queued
        position whose pair has changed since (one of its symbols has merged) no longer
        matches it and is skipped. New pairs reach the heap only once the rank being
        merged is done, as in the rescanning algorithm (where a merge's result can be
        ranked before the merge, in an odd merges.txt)."""
        n, ranks = len(word), self.ranks
        symbols = list(word)                       # symbols[i]: the token starting at i
        after = list(range(1, n + 1))              # where the next token starts (n: none)
        before = list(range(-1, n - 1))
        pair_rank = [*map(ranks.get, pairwise(symbols)), None]
        buckets = _positions_by_rank(pair_rank)
        lowest = list(buckets)
        heapq.heapify(lowest)
        while lowest:
            current = heapq.heappop(lowest)
            new_ranks = []
            for i in sorted(buckets.pop(current)):
                if pair_rank[i] != current:
                    continue                       # stale: a symbol of the pair merged
                j = after[i]
                symbols[i] += symbols[j]
                symbols[j] = pair_rank[j] = pair_rank[i] = None
                after[i] = k = after[j]
                if k < n:
                    before[k] = i
                for start in (before[i], i):       # the new pairs on either side
                    if start < 0 or after[start] == n:
                        continue
                    rank = pair_rank[start] = ranks.get((symbols[start],
                                                         symbols[after[start]]))
                    if rank is None:
                        continue
                    if rank not in buckets:
                        buckets[rank] = []
                        new_ranks.append(rank)
                    buckets[rank].append(start)
            for rank in new_ranks:
                heapq.heappush(lowest, rank)
        return [symbol for symbol in symbols if symbol is not None]

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


def _ids_to_tokens(vocab: dict[str, int], source: str) -> dict[int, str]:
    """{id: token}, refusing two tokens with one id: `decode` could return only one of
    them, so encoding then decoding would change the text."""
    tokens = {}
    for token, id_ in vocab.items():
        if id_ in tokens:
            raise op_error("BPETokenizer", f"{source} gives id {id_} to both "
                           f"{tokens[id_]!r} and {token!r}", ValueError,
                           "each token needs its own id: download vocab.json again")
        tokens[id_] = token
    return tokens


def _positions_by_rank(pair_rank: list) -> dict[int, list[int]]:
    """The positions of the pairs that have a rank, grouped by that rank."""
    buckets: dict[int, list[int]] = {}
    for i, rank in enumerate(pair_rank):
        if rank is not None:
            buckets.setdefault(rank, []).append(i)
    return buckets
