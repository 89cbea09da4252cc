"""GPT-2's byte-level BPE tokenizer: merges applied by rank on a vocabulary written by
hand here, any text round-trips, bad input is refused, and (where `tokenizers` and
`transformers` are installed) a BPE trained offline encodes token for token as
transformers.GPT2Tokenizer does on the same files."""
import json
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer import BPETokenizer
from transformer.bpe import byte_to_char

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("c", "a"), ("ca", "t")]


def write_files(folder, vocab, merges):
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return folder


@pytest.fixture
def by_hand(tmp_path):
    """The 256 byte characters (id = byte value), one token per merge, then the special."""
    vocab = {char: byte for byte, char in byte_to_char().items()}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return BPETokenizer.from_pretrained(write_files(tmp_path, vocab, MERGES))


def test_byte_alphabet_is_gpt2s():
    table = byte_to_char()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"


def test_merges_apply_in_the_order_learned(by_hand):
    # "the": (h, e) is the only ranked pair -> t + he. " cat": (c, a) then (ca, t).
    # " the": (Ġ, t) rank 0 first, then (h, e), then (Ġt, he) -> one token.
    assert by_hand.encode("the cat<|endoftext|> the") == [ord("t"), 257, ord(" "), 260,
                                                          261, 258]
    assert by_hand.decode([258, 32, 260]) == " the cat"
    # a merge never crosses the pre-tokenizer's cuts: in "c!at", "c" and "a" are in
    # different pieces ("c", "!", "at"), so (c, a) never applies
    assert by_hand.encode("c!at") == [ord("c"), ord("!"), ord("a"), ord("t")]
    assert by_hand.encode("cat") == [260]


@given(st.text())
def test_any_text_round_trips(text):
    table = {char: byte for byte, char in byte_to_char().items()}
    vocab = {**table, "Ġt": 256, "he": 257}
    tokenizer = BPETokenizer(vocab, [("Ġ", "t"), ("h", "e")])
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_bad_input(by_hand, tmp_path):
    with pytest.raises(IndexError, match="id 999 is not in the vocabulary"):
        by_hand.decode([1, 999])
    with pytest.raises(TypeError, match="text must be a str"):
        by_hand.encode(b"bytes")
    with pytest.raises(TypeError, match="integers"):
        by_hand.decode(["a"])
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        BPETokenizer.from_files(tmp_path / "vocab.json", tmp_path / "nowhere" / "merges.txt")
    no_bytes = BPETokenizer({"a": 0}, [])
    with pytest.raises(ValueError, match="'b'.*not in vocab.json"):
        no_bytes.encode("ab")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match="line 2"):
        BPETokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="integer ids"):
        BPETokenizer.from_pretrained(tmp_path)


def test_decoding_half_a_character_gives_the_replacement_character(by_hand):
    first_byte = "é".encode()[0]
    assert by_hand.decode([first_byte]) == "\ufffd"


# ---------------------------------------------------------------------- against transformers
CORPUS = ["Hello world! The quick brown fox jumps over the lazy dog. It's 2024, isn't it?",
          "naïve café 東京 ünïcödé   spaces\n\nnewlines\ttabs and   more  spaces",
          "numbers 12345 and 3.14159; we'll see they'd've done it", "😀 🇫🇷 z̄ 𝔘 ĠĊ"] * 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 400-token byte-level BPE trained offline with `tokenizers`, and transformers'
    GPT2Tokenizer and ours on its vocab.json + merges.txt."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(CORPUS, trainer)
    folder = tmp_path_factory.mktemp("bpe")
    model.model.save(str(folder))
    theirs = transformers.GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    return BPETokenizer.from_pretrained(folder), theirs


@pytest.mark.parametrize("text", [*CORPUS[:4], "", " ", "  leading and trailing  ",
                                  "a<|endoftext|>b <|endoftext|>", "\x00\x01\x7f",
                                  "I'm you'll we've they'd IT'S", "The   end\n\n\n"])
def test_same_tokens_as_transformers(trained, text):
    ours, theirs = trained
    ids = ours.encode(text)
    assert ids == theirs.encode(text)
    assert ours.decode(ids) == text
    if text in CORPUS:
        assert len(ids) < len(text.encode()) / 2   # the learned merges do merge


@settings(max_examples=60)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
       | st.lists(st.sampled_from(["the", " quick", "  ", "'s", "12", "é", "東", "\n", "!?",
                                   "<|endoftext|>", "fox"]), max_size=12).map("".join))
def test_same_tokens_as_transformers_on_any_text(trained, text):
    ours, theirs = trained
    assert ours.encode(text) == theirs.encode(text)


# ---------------------------------------------------------------------- the merge loop
def rescanning_bpe(word: str, ranks: dict) -> list[str]:
    """The textbook merge loop (GPT-2's encoder.py): find the lowest-ranked adjacent pair,
    merge it everywhere left to right, rescan. Quadratic, and the reference."""
    symbols = list(word)
    while len(symbols) > 1:
        pairs = set(pairwise(symbols))
        first = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if first not in ranks:
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
    return symbols


@st.composite
def merge_tables(draw):
    """Merges over a small alphabet, each of two existing tokens; half of them shuffled,
    so a merge's result may be ranked before the merge (an odd, hostile table)."""
    tokens, merges = list("abc"), []
    for _ in range(draw(st.integers(0, 14))):
        pair = (draw(st.sampled_from(tokens)), draw(st.sampled_from(tokens)))
        if pair not in merges:
            merges.append(pair)
            tokens.append("".join(pair))
    return draw(st.permutations(merges)) if draw(st.booleans()) else merges


@settings(max_examples=300)
@given(merge_tables(), st.text(alphabet="abc", min_size=1, max_size=60))
def test_the_bucketed_merge_loop_gives_the_rescanning_loops_tokens(merges, word):
    vocab = {token: i for i, token in enumerate(dict.fromkeys(
        ["a", "b", "c", *("".join(pair) for pair in merges)]))}
    tokenizer = BPETokenizer(vocab, merges)
    assert tokenizer.bpe(word) == rescanning_bpe(word, tokenizer.ranks)
