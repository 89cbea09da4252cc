"""Bad input, the way a user meets it: every mistake gets one error that names the function,
shows the offending shapes or values, and (where there is one) says the fix.

Cases already asserted elsewhere with the same message are not repeated here (targets and
ids out of range at the op level, the generate arguments -1/0/15, unknown characters,
missing and corrupt files for mt.load, unknown lesson names, missing `dot` for render).
This file covers the same mistakes made through the models, the command lines and the
remaining ops, plus the guarantee that loading a checkpoint never runs code.
"""
import io
import json
import os
import pickle
import re
import zipfile
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor import nn
from transformer import CharTokenizer, DecoderLM, LMConfig, MultiHeadAttention, Transformer
from transformer import scaled_dot_product_attention as attention
from transformer.__main__ import main as transformer_main
from transformer.train import load_checkpoint


def raises(kind, message):
    """pytest.raises for an error of our own wording: the message starts with `message`
    (a regex) and the error was built by op_error."""
    class Check:
        def __enter__(self):
            self.context = pytest.raises(kind)
            self.info = self.context.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.context.__exit__(*exc)
            error = self.info.value
            assert re.match(message, str(error)), f"message was: {error}"
            assert getattr(error, "microtensor", False), f"not worded by op_error: {error}"
            return handled
    return Check()


@pytest.fixture(scope="module")
def lm():
    return DecoderLM(LMConfig.gpt2(vocab=9, d_model=8, n_heads=2, n_layers=1, d_ff=16,
                                   max_len=6)).eval()


@pytest.fixture(scope="module")
def seq2seq():
    return Transformer(6, 7, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8,
                       dropout=0.0).eval()


# ---------------------------------------------------------------------- dtypes
def test_float_token_ids_are_refused_by_every_model_entry_point(lm, seq2seq):
    ids = np.array([[1.0, 2.0]])
    with raises(TypeError, r"DecoderLM: token ids must be integers shaped \(B, T\), got "
                           r"dtype float64 with shape \(1, 2\)"):
        lm(ids)
    with raises(TypeError, r"DecoderLM.generate: token ids must be integers .* float64"):
        lm.generate(ids, 2)
    with raises(TypeError, r"Transformer.greedy_decode: token ids must be integers .* "
                           r"float64"):
        seq2seq.greedy_decode(ids, max_len=3, bos=1, eos=2)
    with raises(TypeError, r"Transformer: token ids must be integers .* float64"):
        seq2seq(ids, np.array([[1, 2]]))


def test_boolean_targets_and_a_weight_table_of_the_wrong_rank():
    with raises(TypeError, r"cross_entropy: targets must be integer class ids, got bool "
                           r"\(2,\)\. Convert them with .astype\(np.int64\)"):
        F.cross_entropy(mt.zeros(2, 3), np.array([True, False]))
    # Used to pass the forward and fail in backward with a bare NumPy IndexError.
    with raises(ValueError, r"embedding: weight must be a 2-D table \(vocab, dim\), got "
                            r"float32 \(5,\)\. Reshape it"):
        F.embedding(np.array([0, 1]), mt.randn(5, requires_grad=True))
    with raises(ValueError, r"embedding: weight must be a 2-D table .* float32 \(5, 2, 2\)"):
        F.embedding(np.array([0]), mt.randn(5, 2, 2))


# ---------------------------------------------------------------------- ranks
def test_wrong_ranks_name_the_expected_layout(lm):
    with raises(TypeError, r"DecoderLM: token ids must be integers shaped \(B, T\), got "
                           r"dtype int64 with shape \(1, 1, 2\)"):
        lm(np.zeros((1, 1, 2), dtype=np.int64))
    with raises(ValueError, r"MultiHeadAttention: expected x of shape \(B, T, 8\), got "
                            r"\(3, 8\)"):
        MultiHeadAttention(8, 2)(mt.randn(3, 8))
    with raises(ValueError, r"scaled_dot_product_attention: q, k, v need at least 2 axes "
                            r"\(\.\.\., T, d\), got shapes \(4,\), \(2, 4\), \(2, 4\)"):
        attention(mt.randn(4), mt.randn(2, 4), mt.randn(2, 4))
    with raises(IndexError, r"softmax: axis -1 is out of range for a tensor with shape "
                            r"\(\)\. This needs at least a 1-D tensor"):
        mt.tensor(3.0).softmax()
    with raises(ValueError, r"LayerNorm: expected the last axis to have size 3, got input of "
                            r"shape \(2, 4\)"):
        nn.LayerNorm(3)(mt.randn(2, 4))
    with raises(ValueError, r"reshape: invalid size in shape \(-2, 3\) for a tensor of shape "
                            r"\(2, 3\)\. Sizes must be >= 0, or -1"):
        mt.randn(2, 3).reshape(-2, 3)            # NumPy would read -2 as -1


# ---------------------------------------------------------------------- empty tensors
def test_empty_tensors():
    with raises(ValueError, r"softmax: axis -1 of a tensor with shape \(2, 0\) is empty: "
                            r"there is nothing to normalise over\. Check for an empty"):
        mt.zeros(2, 0).softmax()
    with raises(ValueError, r"log_softmax: axis 1 of a tensor with shape \(2, 0\) is empty"):
        mt.zeros(2, 0).log_softmax(axis=1)
    with raises(ValueError, r"cross_entropy: logits \(2, 0\) have 0 classes"):
        F.cross_entropy(mt.zeros(2, 0), np.array([0, 0]))
    with raises(ValueError, r"mean: mean over an empty axis of a tensor with shape \(0, 3\)"):
        mt.zeros(0, 3).mean()
    with raises(ValueError, r"max: max of an empty tensor \(shape \(0,\)\)"):
        mt.zeros(0).max()
    # Empty rows are not an error where the result is well defined (as in PyTorch).
    assert mt.zeros(0, 3).softmax().shape == (0, 3)


def test_an_empty_prompt_or_sequence(lm):
    with raises(ValueError, r"DecoderLM.generate: the prompt is empty\. Give at least one"):
        lm.generate(np.zeros((2, 0), np.int64), 3)


# ---------------------------------------------------------------------- NaN where it matters
@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5, "hot", None])
def test_temperature_must_be_a_finite_number_at_least_zero(lm, temperature):
    with raises(ValueError, rf"DecoderLM.generate: temperature must be a finite number >= 0, "
                            rf"got {re.escape(repr(temperature))}\. Use 0 for greedy"):
        lm.generate([[1, 2]], 2, temperature=temperature)


def test_nan_settings_and_nan_gradients_are_refused():
    with raises(ValueError, r"Dropout: p must be in \[0, 1\), got nan"):
        nn.Dropout(float("nan"))
    for eps in (float("nan"), 0.0, -1e-5):   # a constant row would become NaN or inf
        with raises(ValueError, rf"LayerNorm: eps must be a positive number, got {eps!r}\. "
                                r"The usual value is 1e-5"):
            nn.LayerNorm(4, eps=eps)
    with raises(ValueError, r"dropout: p must be in \[0, 1\), got nan"):
        F.dropout(mt.ones(3), p=float("nan"))
    param = nn.Parameter(np.ones(3, np.float32))
    param.grad = np.array([np.nan, 1, 1], np.float32)
    with raises(RuntimeError, r"clip_grad_norm_: the gradient norm is nan\. Find where it "
                              r"starts with mt.detect_anomaly\(\)"):
        mt.optim.clip_grad_norm_([param], 1.0, error_if_nonfinite=True)
    with raises(ValueError, r"AdamW: lr must be >= 0.0, got nan"):
        mt.optim.AdamW([param], lr=float("nan"))


def test_nan_made_inside_a_model_is_located_by_detect_anomaly(lm):
    """A NaN input to an op is passed on; the op that *makes* one is named, with the line."""
    with mt.detect_anomaly(), np.errstate(invalid="ignore"), \
            pytest.raises(FloatingPointError, match=r"^log produced nan in its forward pass "
                          r"\(op created at .*test_bad_input.py:\d+"):
        (lm(np.array([[1, 2]])) - 100.0).log()


# ---------------------------------------------------------------------- ids and targets
def test_out_of_range_ids_through_the_models(lm, seq2seq):
    with raises(IndexError, r"embedding: id 9 is out of range for a table of 9 rows\. Ids "
                            r"must be in \[0, 8\]"):
        lm(np.array([[1, 9]]))
    with raises(IndexError, r"embedding: id -1 is out of range for a table of 9 rows"):
        lm.generate(np.array([[1, -1]]), 2)
    with raises(IndexError, r"embedding: id 6 is out of range for a table of 6 rows"):
        seq2seq(np.array([[1, 6]]), np.array([[1, 2]]))            # source vocabulary is 6
    with raises(IndexError, r"embedding: id 7 is out of range for a table of 7 rows"):
        seq2seq(np.array([[1, 2]]), np.array([[1, 7]]))            # target vocabulary is 7
    with raises(IndexError, r"embedding: id 99 is out of range for a table of 7 rows"):
        seq2seq.greedy_decode(np.array([[1, 2]]), max_len=3, bos=99, eos=2)


def test_out_of_range_targets_for_a_model_loss(lm):
    logits = lm(np.array([[1, 2, 3]]))
    with raises(IndexError, r"cross_entropy: target id 9 is out of range for 9 classes\. "
                            r"Targets must be in \[0, 8\] or equal ignore_index \(-100\)"):
        F.cross_entropy(logits, np.array([[2, 3, 9]]))


# ---------------------------------------------------------------------- sizes
@pytest.mark.parametrize("make, message", [
    (lambda: mt.zeros(-1, 2), r"zeros: sizes must be non-negative integers, got \(-1, 2\)"),
    (lambda: mt.ones(2, 2.5), r"ones: sizes must be non-negative integers, got \(2, 2.5\)"),
    (lambda: mt.randn(-3), r"randn: sizes must be non-negative integers, got \(-3,\)"),
    (lambda: mt.rand(-3), r"rand: sizes must be non-negative integers"),
    (lambda: mt.full((2, -1), 0.0), r"full: sizes must be non-negative integers, got \(2, -1\)"),
    (lambda: mt.eye(-1), r"eye: sizes must be non-negative integers, got \(-1,\)"),
    (lambda: mt.arange(0, 5, 0), r"arange: step must not be 0"),
    (lambda: LMConfig.gpt2(vocab=0), r"LMConfig: vocab must be a positive integer, got 0"),
    (lambda: LMConfig.gpt2(vocab=9, n_layers=-1),
     r"LMConfig: n_layers must be a positive integer, got -1"),
    (lambda: LMConfig.gpt2(vocab=9, max_len=0),
     r"LMConfig: max_len must be a positive integer, got 0"),
    (lambda: LMConfig.gpt2(vocab=9, d_model=-8),
     r"LMConfig: d_model must be a positive integer, got -8"),
    (lambda: Transformer(6, 0), r"Transformer: tgt_vocab must be a positive integer, got 0"),
    (lambda: Transformer(6, 6, d_ff=0), r"Transformer: d_ff must be a positive integer, got 0"),
    (lambda: Transformer(6, 6, n_layers=2.5),
     r"Transformer: n_layers must be a positive integer, got 2.5"),
])
def test_zero_and_negative_sizes(make, message):
    with raises(ValueError, message):
        make()


@pytest.mark.parametrize("make", [
    lambda: LMConfig.gpt2(vocab=9, d_model=10, n_heads=3),
    lambda: Transformer(6, 6, d_model=10, n_heads=3),
])
def test_heads_that_do_not_divide_d_model_through_the_models(make):
    with raises(ValueError, r"(LMConfig|MultiHeadAttention): d_model=10 must split evenly into "
                            r"n_heads=3 heads\. Choose n_heads that divides d_model "
                            r"\(e\.g\. \[1, 2\]\)"):
        make()


# ---------------------------------------------------------------------- generation settings
@pytest.mark.parametrize("top_k", [-1, 10, 2.5, "3"])
def test_top_k_out_of_range(lm, top_k):
    with raises(ValueError, rf"DecoderLM.generate: top_k must be an integer in \[1, 9\] \(the "
                            rf"vocabulary size\), got {re.escape(repr(top_k))}\. Or None"):
        lm.generate([[1, 2]], 2, temperature=1.0, top_k=top_k)


def test_prompts_longer_than_the_context_name_both_lengths(lm, seq2seq):
    with raises(ValueError, r"DecoderLM.generate: prompt of 7 tokens is longer than the "
                            r"model's max_len=6\. Keep the last 6 tokens"):
        lm.generate(np.ones((1, 7), np.int64), 1)
    with raises(ValueError, r"PositionalEncoding: position 8 is beyond max_len=8 \(sequence "
                            r"of 9 tokens at offset 0\)"):
        seq2seq(np.ones((1, 9), np.int64), np.array([[1, 2]]))


def test_unknown_characters_beyond_the_basic_plane():
    with raises(ValueError, r"CharTokenizer.encode: character '😀' \(U\+1F600\) at position "
                            r"3 is not in the vocabulary of 3 characters\. Build the tokenizer "
                            r"with unk=True"):
        CharTokenizer("abc").encode("abc😀")


# ---------------------------------------------------------------------- command lines
@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory):
    """A tiny character model trained for 2 steps (context 16)."""
    folder = tmp_path_factory.mktemp("charlm")
    text = folder / "text.txt"
    text.write_text("the cat sat on the mat, and the dog sat on the log. " * 20)
    with redirect_stdout(StringIO()):
        assert transformer_main(["train", "--task", "charlm", "--text", str(text), "--steps",
                                 "2", "--seq-len", "16", "--d-model", "8", "--n-heads", "2",
                                 "--n-layers", "1", "--d-ff", "16", "--batch-size", "2",
                                 "--out", str(folder / "run")]) == 0
    return str(folder / "run")


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "the cat sat on the mat"],
     "DecoderLM.generate: prompt of 22 tokens is longer than the model's max_len=16"),
    (["--prompt", "the", "--temperature", "-1"],
     "DecoderLM.generate: temperature must be a finite number >= 0, got -1.0"),
    (["--prompt", "the", "--top-k", "0"], "DecoderLM.generate: top_k must be an integer in"),
    (["--prompt", "the Zebra"],
     "CharTokenizer.encode: character 'Z' (U+005A) at position 4 is not in the vocabulary"),
])
def test_generate_cli_reports_bad_settings_without_a_traceback(charlm_run, extra, message,
                                                                capsys):
    assert transformer_main(["generate", "--ckpt", charlm_run, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_corrupt_checkpoint_through_the_cli_and_module_load(charlm_run, tmp_path, capsys):
    damaged = tmp_path / "run"
    damaged.mkdir()
    path = damaged / "checkpoint.npz"
    with open(os.path.join(charlm_run, "checkpoint.npz"), "rb") as file:
        whole = file.read()
    path.write_bytes(whole[: len(whole) // 3])
    assert transformer_main(["generate", "--ckpt", str(damaged), "--prompt", "the"]) == 2
    assert f"error: load: '{path}' is corrupt or truncated" in capsys.readouterr().err
    # --resume must not quietly start over (and overwrite) a damaged run.
    assert transformer_main(["train", "--out", str(damaged), "--resume", "--steps", "4"]) == 2
    assert "is corrupt or truncated" in capsys.readouterr().err
    assert path.read_bytes() == whole[: len(whole) // 3]
    with raises(mt.CheckpointError, rf"load: '{re.escape(str(path))}' is corrupt or "
                                    "truncated"):
        nn.Linear(2, 2).load(path)


def test_unknown_lesson_through_the_cli(capsys):
    from viz.__main__ import main as viz_main
    assert viz_main(["lesson", "attention-is-all"]) == 2
    err = capsys.readouterr().err
    assert "error: lesson: no lesson called 'attention-is-all'. Valid lessons: " in err
    assert "backprop" in err and "Traceback" not in err


def test_no_layout_engine_in_a_lesson_that_draws(tmp_path, monkeypatch, capsys):
    from viz.__main__ import main as viz_main
    # Neither system `dot` on PATH nor the bundled graphviz-pure (as if uninstalled).
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    monkeypatch.delenv("MICROTENSOR_DOT", raising=False)
    monkeypatch.setattr("viz.engine.bundled_path", lambda: None)
    assert viz_main(["lesson", "backprop", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "render: no Graphviz layout engine could run" in err
    assert "pip install graphviz-pure" in err and "apt-get install graphviz" in err
    assert "Traceback" not in err
    assert (tmp_path / "out" / "backprop-graph.svg.dot").read_text().startswith("digraph")


def test_a_wrong_engine_choice_in_a_lesson(tmp_path, monkeypatch, capsys):
    from viz.__main__ import main as viz_main
    monkeypatch.setenv("MICROTENSOR_DOT", str(tmp_path / "no-such-dot"))
    assert viz_main(["lesson", "backprop", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"'{tmp_path / 'no-such-dot'}' (from engine= or MICROTENSOR_DOT)" in err
    assert "Traceback" not in err
    assert (tmp_path / "out" / "backprop-graph.svg.dot").read_text().startswith("digraph")


def write_members(path, members):
    """A .npz written member by member: arrays, or raw bytes for hand-made damage."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in members.items():
            with archive.open(name + ".npy", "w") as member:
                if isinstance(value, bytes):
                    member.write(value)
                else:
                    np.lib.format.write_array(member, value, allow_pickle=False)


def index(tree):
    return np.array(json.dumps({"format": "microtensor.checkpoint", "version": 1,
                                "tree": tree}))


@pytest.mark.parametrize("tree", [
    [1, 2],                                                              # not a node
    {"kind": "dict", "items": [["w"]]},                                  # a key without value
    {"kind": "tuple", "items": 5},                                       # items not a list
    {"kind": "dict", "items": [["w", {"kind": "array", "entry": ["x"]}]]},
    {"kind": "dict", "items": [["w", {"kind": "int", "entry": "w"}]]},   # int of 3 numbers
], ids=["list", "missing-value", "items-int", "entry-list", "int-of-array"])
def test_a_tampered_index_is_a_checkpoint_error(tmp_path, tree):
    path = tmp_path / "tampered.npz"
    write_members(path, {"__microtensor__": index(tree), "w": np.ones(3)})
    with raises(mt.CheckpointError, rf"load: '{re.escape(str(path))}' is damaged: its "
                                    r"'__microtensor__' index does not describe a checkpoint"):
        mt.load(path)


def test_absurdly_nested_index_and_a_header_that_lies_about_its_size(tmp_path):
    path = tmp_path / "nested.npz"
    nested = '{"kind": "list", "items": [' * 5000 + '{"kind": "none"}' + "]}" * 5000
    text = '{"format": "microtensor.checkpoint", "version": 1, "tree": ' + nested + "}"
    write_members(path, {"__microtensor__": np.array(text)})
    with raises(mt.CheckpointError, r"load: .* is not a microtensor checkpoint: its "
                                    r"'__microtensor__' entry is not ours \(maximum recursion"):
        mt.load(path)
    # A damaged .npy header declaring 10^12 float64s: NumPy would try to allocate 7 TiB.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10**12,)})
    path = tmp_path / "liar.npz"
    tree = {"kind": "dict", "items": [["w", {"kind": "array", "entry": "w"}]]}
    write_members(path, {"__microtensor__": index(tree), "w": header.getvalue() + bytes(64)})
    with raises(mt.CheckpointError, rf"load: '{re.escape(str(path))}' \(entry 'w'\) is corrupt "
                                    r"or truncated .*MemoryError"):
        mt.load(path)


def damage_directory_entry(path, name, offset, new_bytes):
    """Overwrite bytes of the zip central-directory record of member `name`."""
    data = bytearray(path.read_bytes())
    record = data.rfind(name.encode()) - 46      # the record's fixed part precedes the name
    assert data[record:record + 4] == b"PK\x01\x02"
    data[record + offset:record + offset + len(new_bytes)] = new_bytes
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("offset, new_bytes, cause", [
    (12, bytes(13), "not a .npy array"),          # time, CRC, sizes zeroed: read as b''
    (6, bytes([109]), "NotImplementedError"),      # "needs zip version 10.9"
    (10, bytes([99]), "NotImplementedError"),      # an unknown compression method
    (8, bytes([1]), "RuntimeError: .*encrypted"),   # flags: "encrypted, password required"
], ids=["zeroed-sizes", "zip-version", "compression-method", "encrypted-flag"])
def test_a_damaged_zip_directory_is_a_checkpoint_error(tmp_path, offset, new_bytes, cause):
    """Found by fuzzing damaged files: these loaded b'' as an array, or raised a bare
    NotImplementedError or RuntimeError from zipfile."""
    path = tmp_path / "ckpt.npz"
    mt.save({"model": {"w": np.arange(12, dtype=np.float32)}}, path)
    damage_directory_entry(path, "model/w.npy", offset, new_bytes)
    with raises(mt.CheckpointError, rf"load: '{re.escape(str(path))}'( \(entry 'model/w'\))? "
                                    rf"is corrupt or truncated .*{cause}"):
        mt.load(path)


# ---------------------------------------------------------------------- loading runs no code
class Payload:
    """Unpickling this object creates the file `marker` (a stand-in for any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_npy(path, array):
    with open(path, "wb") as file:   # np.save would append .npy to a .npz name
        np.save(file, array, allow_pickle=True)


def pickled_checkpoints(folder, marker):
    """The payload in every form a checkpoint file could carry it."""
    evil = np.array([Payload(marker)], dtype=object)
    forms = {}
    forms["npz-member"] = folder / "member.npz"
    np.savez(forms["npz-member"], weights=np.ones(3), evil=evil)
    forms["npy-as-npz"] = folder / "single.npz"
    write_npy(forms["npy-as-npz"], evil)
    forms["npy"] = folder / "single.npy"
    write_npy(forms["npy"], evil)
    forms["raw-pickle"] = folder / "raw.npz"
    forms["raw-pickle"].write_bytes(pickle.dumps({"model": Payload(marker)}))
    forms["ours-with-member"] = folder / "ours.npz"
    mt.save({"model": {"w": np.ones(2)}, "step": 3}, forms["ours-with-member"])
    with zipfile.ZipFile(forms["ours-with-member"], "a") as archive, \
            archive.open("model/evil.npy", "w") as member:
        np.lib.format.write_array(member, evil, allow_pickle=True)
    forms["index-is-a-pickle"] = folder / "index.npz"
    np.savez(forms["index-is-a-pickle"], __microtensor__=evil, w=np.ones(2))
    return forms


def test_the_payload_is_live(tmp_path):
    """Control: unpickled by NumPy with pickles allowed, the payload does create the file
    (so the refusals below are what keeps it from running)."""
    marker = tmp_path / "ran"
    path = pickled_checkpoints(tmp_path, marker)["npz-member"]
    with np.load(path, allow_pickle=True) as content:
        content["evil"]
    assert marker.exists()


@pytest.mark.parametrize("form", ["npz-member", "npy-as-npz", "npy", "raw-pickle",
                                  "ours-with-member", "index-is-a-pickle"])
def test_loading_a_pickled_checkpoint_refuses_and_runs_nothing(tmp_path, form):
    marker = tmp_path / "ran"
    path = pickled_checkpoints(tmp_path, marker)[form]
    with raises(mt.CheckpointError, rf"load: '{re.escape(str(path))}'.* holds pickled Python "
                                    "objects; refused, because unpickling can run arbitrary "
                                    "code"):
        mt.load(path)
    with pytest.raises(mt.CheckpointError, match="holds pickled Python objects"):
        nn.Linear(2, 2).load(path)
    with pytest.raises(mt.CheckpointError, match="holds pickled Python objects"):
        load_checkpoint(str(path))
    assert not marker.exists(), "loading ran the pickled code"


def test_a_run_folder_with_a_pickled_checkpoint_is_refused_by_the_cli(tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = tmp_path / "run"
    folder.mkdir()
    os.replace(pickled_checkpoints(tmp_path, marker)["npz-member"], folder / "checkpoint.npz")
    assert transformer_main(["generate", "--ckpt", str(folder), "--prompt", "a"]) == 2
    assert transformer_main(["train", "--out", str(folder), "--resume", "--steps", "2"]) == 2
    assert capsys.readouterr().err.count("holds pickled Python objects; refused") == 2
    assert not marker.exists()
