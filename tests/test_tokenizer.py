"""Tokenizers: round trips, unknown characters (error or <unk>), bytes never fail, and
serialisation for checkpoints."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer import ByteTokenizer, CharTokenizer, tokenizer_from_dict
from transformer.tokenizer import load_tokenizer


def test_char_round_trip_and_specials():
    tok = CharTokenizer("hello world")
    assert tok.vocab_size == 3 + len(set("hello world"))
    ids = tok.encode("hello", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "hello"
    assert tok.decode(ids, skip_specials=False) == "<bos>hello<eos>"
    assert min(tok.encode("dlrow")) >= 3          # specials never collide with characters


def test_unknown_character_is_an_error_naming_it():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"CharTokenizer.encode: character 'z' \(U\+007A\) "
                                         r"at position 2 is not in the vocabulary of 3 "
                                         r"characters.*unk=True.*ByteTokenizer"):
        tok.encode("abz")


def test_unknown_character_maps_to_unk_when_asked():
    tok = CharTokenizer("abc", unk=True)
    ids = tok.encode("azc")
    assert ids[1] == tok.unk_id == 3
    assert tok.decode(ids) == "a\ufffdc"


def test_decode_out_of_range_id():
    with pytest.raises(IndexError, match=r"CharTokenizer.decode: id 99 is out of range for "
                                         r"a vocabulary of 6"):
        CharTokenizer("abc").decode([3, 99])
    with pytest.raises(IndexError, match=r"ByteTokenizer.decode: id 300 is out of range"):
        ByteTokenizer().decode([300])


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_bytes_never_fail_and_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text, bos=True, eos=True)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_bytes_decode_invalid_utf8_with_replacement():
    tok = ByteTokenizer()
    assert tok.decode([104, 0xFF, 105]) == "h\ufffdi"
    assert tok.decode([104, tok.eos_id, 105], skip_specials=False) == "h<eos>i"


@settings(max_examples=20, deadline=None)
@given(st.text(min_size=1), st.booleans())
def test_char_tokenizer_survives_serialisation(text, unk):
    tok = CharTokenizer(text, unk=unk)
    again = tokenizer_from_dict(tok.to_dict())
    assert again.itos == tok.itos and again.encode(text) == tok.encode(text)


def test_save_and_load(tmp_path):
    for tok in (CharTokenizer("héllo\n"), ByteTokenizer()):
        path = tmp_path / "tok.json"
        tok.save(str(path))
        loaded = load_tokenizer(str(path))
        assert loaded.decode(loaded.encode("héllo\n")) == "héllo\n"
        assert loaded.vocab_size == tok.vocab_size
    with pytest.raises(ValueError, match="tokenizer_from_dict: unknown tokenizer kind 'bpe'"):
        tokenizer_from_dict({"kind": "bpe"})


@pytest.mark.parametrize("call, message", [
    (lambda: CharTokenizer("ab").encode(5),
     r"CharTokenizer.encode: text must be a str, got int 5\. Pass a string"),
    (lambda: CharTokenizer("ab").encode(None),
     r"CharTokenizer.encode: text must be a str, got NoneType None"),
    (lambda: ByteTokenizer().encode(None),
     r"ByteTokenizer.encode: text must be a str, got NoneType None\. Pass a string"),
    (lambda: ByteTokenizer().encode(b"ab"),
     r"ByteTokenizer.encode: text must be a str, got bytes"),
    (lambda: CharTokenizer("ab").decode(["a"]),
     (r"CharTokenizer.decode: ids must be integers, got str 'a' at position 0\. Pass integer "
      r"ids, e.g. the output of encode")),
    (lambda: CharTokenizer("ab").decode([3, 4.0]),
     r"CharTokenizer.decode: ids must be integers, got float 4.0 at position 1"),
    (lambda: CharTokenizer("ab").decode(5),
     r"CharTokenizer.decode: ids must be a sequence of integer ids, got int 5"),
    (lambda: ByteTokenizer().decode("ab"),
     r"ByteTokenizer.decode: ids must be a sequence of integer ids, got str 'ab'"),
    (lambda: ByteTokenizer().decode([True]),
     r"ByteTokenizer.decode: ids must be integers, got bool True at position 0"),
])
def test_wrong_types_are_clear_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_numpy_ids_still_decode():
    import numpy as np
    tok = CharTokenizer("hello")
    ids = np.array(tok.encode("hello", bos=True, eos=True))
    assert tok.decode(ids) == "hello"
    assert ByteTokenizer().decode(np.array(ByteTokenizer().encode("né"))) == "né"
