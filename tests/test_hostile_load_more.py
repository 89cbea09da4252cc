"""Hostile and careless files on the load side (issue 29, items 11-18): shard conflicts,
duplicate vocabulary ids, a misleading error, raw errors where ours belong, and the CLI's
tracebacks. Each probe runs bounded, as in test_hostile_load.py."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_hostile_load import (  # noqa: F401  (gpt2_dir, llama_dir: the shared fixtures)
    assert_one_line_error,
    assert_ours,
    bounded,
    cli,
    copy_dir,
    gpt2_dir,
    llama_dir,
    random_gpt2,
    random_llama,
    read_header,
    write_safetensors,
)

import microtensor as mt
from transformer.__main__ import main
from transformer.bpe import byte_to_char


def split_into_shards(source, target, shard_of) -> dict:
    """Copy the directory `source` with its weights split over shards: tensor name ->
    shard file by `shard_of(name)`; returns the header by shard."""
    copy_dir(source, target)
    header, data = read_header(target / "model.safetensors")
    (target / "model.safetensors").unlink()
    shards = {}
    for name, entry in header.items():
        if name != "__metadata__":
            shards.setdefault(shard_of(name), {})[name] = entry
    for shard, entries in shards.items():
        offset, chunks, rewritten = 0, [], {}
        for name, entry in entries.items():
            start, end = entry["data_offsets"]
            chunks.append(data[start:end])
            rewritten[name] = {**entry, "data_offsets": [offset, offset + end - start]}
            offset += end - start
        write_safetensors(target / shard, rewritten, b"".join(chunks))
    index = {"metadata": {}, "weight_map": {name: shard for shard, entries in shards.items()
                                            for name in entries}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return shards


# ---------------------------------------------------------------------- item 11
def test_item11_a_tensor_in_a_shard_the_index_does_not_name_is_refused(gpt2_dir, tmp_path):  # noqa: F811
    """The index puts wte.weight in shard 1 while shard 2 holds it too, with other values
    (before: shard 2's copy was used silently)."""
    def shard_of(name):
        return "one.safetensors" if "h.0." in name or "wte" in name else "two.safetensors"
    folder = tmp_path / "conflict"
    shards = split_into_shards(gpt2_dir, folder, shard_of)
    header, data = read_header(folder / "two.safetensors")
    entry = dict(shards["one.safetensors"]["transformer.wte.weight"])
    size = entry["data_offsets"][1] - entry["data_offsets"][0]
    header["transformer.wte.weight"] = {**entry, "data_offsets": [len(data), len(data) + size]}
    write_safetensors(folder / "two.safetensors", header,
                      data + np.ones(size // 4, np.float32).tobytes())
    good = tmp_path / "good"
    split_into_shards(gpt2_dir, good, shard_of)
    results = bounded(f"""
        probe("conflict", lambda: from_pretrained({str(folder)!r}))
        probe("good", lambda: type(from_pretrained({str(good)!r})).__name__)
    """)
    assert_ours(results["conflict"], "transformer.wte.weight (in two.safetensors, which the "
                "index puts in one.safetensors)")
    assert results["good"]["outcome"] == "loaded"


# ---------------------------------------------------------------------- item 12
def test_item12_duplicate_ids_in_vocab_json_are_refused(tmp_path):
    """With 'Ġthe' sharing an id with 'x', decode(encode("box x")) gave "bo the x"."""
    vocab = {char: byte for byte, char in byte_to_char().items()}
    vocab["Ġthe"] = vocab["x"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    results = bounded(f"""
        probe("vocab", lambda: BPETokenizer.from_pretrained({str(tmp_path)!r}))
        probe("direct", lambda: BPETokenizer({{"a": 1, "b": 1}}, []))
    """)
    assert_ours(results["vocab"], "vocab.json", f"id {ord('x')}", "'x'", "'Ġthe'")
    assert_ours(results["direct"], "gives id 1 to both 'a' and 'b'")


# ---------------------------------------------------------------------- item 13
def test_item13_a_two_byte_pk_file_is_called_corrupt_not_pickled(tmp_path):
    (tmp_path / "pk.npz").write_bytes(b"PK")
    results = bounded(f"""
        probe("pk", lambda: mt.load({str(tmp_path / "pk.npz")!r}))
    """)
    assert_ours(results["pk"], "is corrupt or truncated", "pk.npz")
    assert "pickle" not in results["pk"]["message"]


# ---------------------------------------------------------------------- item 14
GPT2_WRONG_TYPES = {"model_type": ["gpt2"], "activation_function": ["gelu_new"],
                    "resid_pdrop": [0.1], "n_embd": "16", "scale_attn_weights": "true"}
LLAMA_WRONG_TYPES = {"rope_scaling": "linear", "rope_parameters": ["default"],
                     "rope_theta": "abc", "rms_norm_eps": "x", "num_attention_heads": 4.0,
                     "hidden_act": ["silu"], "attention_bias": "false"}


def test_item14_config_values_of_the_wrong_type_are_our_errors(gpt2_dir, llama_dir,  # noqa: F811
                                                               tmp_path):
    """A list, a string or a float where the config wants something else (before: raw
    TypeError, AttributeError or ValueError); each error names the key and value."""
    for source, changes in ((gpt2_dir, GPT2_WRONG_TYPES), (llama_dir, LLAMA_WRONG_TYPES)):
        for key, value in changes.items():
            copy_dir(source, tmp_path / key, {key: value})
    copy_dir(llama_dir, tmp_path / "rms_list", {"rms_norm_eps": [1]})
    labels = [*GPT2_WRONG_TYPES, *LLAMA_WRONG_TYPES, "rms_list"]
    results = bounded(f"""
        for label in {labels!r}:
            probe(label, lambda: from_pretrained({str(tmp_path)!r} + "/" + label))
    """)
    for key, value in {**GPT2_WRONG_TYPES, **LLAMA_WRONG_TYPES}.items():
        assert_ours(results[key], f"{key}={value!r}")
    assert_ours(results["rms_list"], "rms_norm_eps=[1]", "positive finite number")


# ---------------------------------------------------------------------- item 15
def test_item15_config_json_that_is_a_folder_a_loop_or_a_dangling_link(gpt2_dir, tmp_path):  # noqa: F811
    """(before: raw IsADirectoryError, OSError ELOOP, FileNotFoundError)"""
    for name in ("folder", "loop", "dangling"):
        (copy_dir(gpt2_dir, tmp_path / name) / "config.json").unlink()
    (tmp_path / "folder" / "config.json").mkdir()
    (tmp_path / "loop" / "config.json").symlink_to(tmp_path / "loop" / "config.json")
    (tmp_path / "dangling" / "config.json").symlink_to(tmp_path / "nowhere.json")
    results = bounded(f"""
        for name in ["folder", "loop", "dangling"]:
            probe(name, lambda: from_pretrained({str(tmp_path)!r} + "/" + name))
    """)
    assert_ours(results["folder"], "config.json' is a folder, not a regular file")
    assert_ours(results["loop"], "config.json'", "Too many levels of symbolic links")
    assert_ours(results["dangling"], "symbolic link to", "nowhere.json', which does not exist")


# ---------------------------------------------------------------------- item 16
@pytest.mark.parametrize("value", [["x"], 7, None, "", "../model.safetensors"])
def test_item16_weight_map_values_that_are_not_file_names(gpt2_dir, tmp_path, value):  # noqa: F811
    """(before: a raw TypeError for ["x"], 7 and null)"""
    folder = tmp_path / "index"
    split_into_shards(gpt2_dir, folder, lambda name: "one.safetensors")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["transformer.wte.weight"] = value
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    results = bounded(f"""
        probe("index", lambda: from_pretrained({str(folder)!r}))
    """)
    assert_ours(results["index"], f"maps 'transformer.wte.weight' to the shard {value!r}",
                "not a file name")


# ---------------------------------------------------------------------- item 17
def test_item17_unsupported_encodings_are_our_errors(gpt2_dir, tmp_path):  # noqa: F811
    """An F8_E4M3 tensor (raw AttributeError), merges.txt in Latin-1 (raw
    UnicodeDecodeError), a lone surrogate to encode (raw UnicodeEncodeError)."""
    folder = copy_dir(gpt2_dir, tmp_path / "f8")
    header, data = read_header(folder / "model.safetensors")
    header["extra"] = {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [len(data),
                                                                         len(data) + 4]}
    write_safetensors(folder / "model.safetensors", header, data + bytes(4))
    vocab = {char: byte for byte, char in byte_to_char().items()}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_bytes(b"#version: 0.2\nc a\n\xe9 t\n")
    results = bounded(f"""
        from transformer import ByteTokenizer
        probe("f8", lambda: from_pretrained({str(folder)!r}))
        probe("merges", lambda: BPETokenizer.from_pretrained({str(tmp_path)!r}))
        tok = BPETokenizer({{char: byte for byte, char in
                            __import__("transformer.bpe").bpe.byte_to_char().items()}}, [])
        probe("surrogate", lambda: tok.encode("a\\ud800b"))
        probe("bytes", lambda: ByteTokenizer().encode("a\\udcffb"))
    """)
    assert_ours(results["f8"], "tensor 'extra' is stored as F8_E4M3", "Convert")
    assert_ours(results["merges"], "merges.txt' is not UTF-8 text", "0xe9", "line 3")
    assert_ours(results["surrogate"], "'\\ud800' at position 1", "lone surrogate")
    assert_ours(results["bytes"], "'\\udcff' at position 1")


def test_item17_a_prompt_that_is_not_utf8_is_one_line(gpt2_dir, tmp_path):  # noqa: F811
    folder = copy_dir(gpt2_dir, tmp_path / "with_tokenizer")
    vocab = {char: byte for byte, char in byte_to_char().items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    done = cli("generate", "--ckpt", os.fsencode(folder).decode("utf-8", "surrogateescape"),
               "--prompt", b"\xff".decode("utf-8", "surrogateescape"))
    assert_one_line_error(done, "lone surrogate")


# ---------------------------------------------------------------------- item 18
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A two-step charlm run."""
    folder = tmp_path_factory.mktemp("run")
    text = folder / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert main(["train", "--task", "charlm", "--text", str(text), "--steps", "2",
                 "--seq-len", "8", "--d-model", "8", "--n-heads", "2", "--n-layers", "1",
                 "--d-ff", "16", "--batch-size", "2", "--log-every", "1",
                 "--out", str(folder / "run")]) == 0
    return folder / "run"


def damaged_run(run_dir, target, **changes):
    target.mkdir()
    ckpt = mt.load(run_dir / "checkpoint.npz")
    for key, value in changes.items():
        if value is None:
            del ckpt[key]
        else:
            ckpt[key] = value
    mt.save(ckpt, target / "checkpoint.npz")
    return target


def test_item18_the_cli_gives_one_line_for_every_failure(run_dir, llama_dir, tmp_path):  # noqa: F811
    """Every failure is one line and exit 2 (before: tracebacks), naming the problem."""
    llama = copy_dir(llama_dir, tmp_path / "llama")
    config = json.loads((llama / "config.json").read_text())
    del config["intermediate_size"]
    (llama / "config.json").write_text(json.dumps(config))
    assert_one_line_error(cli("generate", "--ckpt", str(llama), "--prompt-ids", "1"),
                          "has no 'intermediate_size'")
    ckpt = mt.load(run_dir / "checkpoint.npz")
    extra_key = json.dumps({**json.loads(ckpt["model_config"]), "colour": "red"})
    cases = {"no_opts": ({"opts": None}, "has no 'opts'"),
             "bad_opts": ({"opts": "{bad"}, "'opts' that is not valid JSON"),
             "extra_key": ({"model_config": extra_key},
                           "keys LMConfig does not take: ['colour']"),
             "bad_step": ({"step": "abc"}, "step='abc'"),
             "bad_rng": ({"rng": json.dumps({"state": 1})}, "'rng' that is not a generator")}
    for name, (changes, words) in cases.items():
        folder = damaged_run(run_dir, tmp_path / name, **changes)
        command = ["train", "--out", str(folder), "--steps", "4", "--resume"]
        assert_one_line_error(cli(*command), words, "checkpoint.npz")
    assert_one_line_error(cli("train", "--task", "charlm", "--text", str(tmp_path / "none.txt"),
                              "--out", str(tmp_path / "r1")), "no --text file at")
    assert_one_line_error(cli("train", "--task", "charlm", "--text", str(tmp_path),
                              "--out", str(tmp_path / "r2")), "is a folder")
    (tmp_path / "a_file").write_text("mine")
    assert_one_line_error(cli("train", "--out", str(tmp_path / "a_file"), "--steps", "1"),
                          "--out", "is a file, not a folder")
    assert (tmp_path / "a_file").read_text() == "mine"


def test_item18_debug_shows_the_traceback(tmp_path):
    done = cli("train", "--task", "charlm", "--text", str(tmp_path / "none.txt"),
               "--out", str(tmp_path / "r"), "--debug")
    assert done.returncode == 1 and b"Traceback" in done.stderr
