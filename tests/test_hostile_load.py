"""Hostile and careless files on the load side (issue 29, items 1-10; 11-18 are in
test_hostile_load_more.py): each probe runs in a fresh Python whose address space is
capped with resource.setrlimit and whose time is limited, and must end in our error
(naming the function, the file and the key) or load what the files describe. Before the
fixes these probes hung, allocated gigabytes, raised raw errors or loaded wrong models.
"""
from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import microtensor as mt
from transformer import DecoderLM, LMConfig
from transformer.bpe import byte_to_char

MEMORY = 2**30            # 1 GiB of address space per probe: Python with NumPy needs ~0.4
SECONDS = 120             # per probe process, on a shared 2-core machine
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = """
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
import numpy as np
import microtensor as mt
from transformer import BPETokenizer, DecoderLM
from transformer.hub import from_pretrained
from microtensor.safetensors_io import load_safetensors


def probe(label, call):
    try:
        value = call()
        result = {{"outcome": "loaded", "value": repr(value)[:300]}}
    except BaseException as error:   # a pyo3 PanicException is a BaseException
        result = {{"outcome": type(error).__name__, "exception": isinstance(error, Exception),
                  "ours": bool(getattr(error, "microtensor", False)),
                  "message": str(error)[:3000]}}
    print(json.dumps({{"label": label, **result}}), flush=True)
"""


def _limit(memory: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return apply


def _environment() -> dict:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": ROOT}


def bounded(code: str, memory: int = MEMORY, seconds: int = SECONDS) -> dict[str, dict]:
    """Run `code` (which calls probe(label, fn) for each case) in a fresh Python capped at
    `memory` bytes of address space and `seconds`; {label: outcome}."""
    script = PRELUDE.format(memory=memory) + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          timeout=seconds, env=_environment(), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            results[record.pop("label")] = record
    return results


def cli(*args: str, memory: int = MEMORY, seconds: int = SECONDS) -> subprocess.CompletedProcess:
    """`python -m transformer ARGS`, capped like `bounded`."""
    return subprocess.run([sys.executable, "-m", "transformer", *args], capture_output=True,
                          check=False, timeout=seconds, env=_environment(), cwd=ROOT,
                          preexec_fn=_limit(memory))


def assert_ours(result: dict, *words: str) -> None:
    """Our error (an Exception marked as ours) whose message holds every word."""
    assert result["outcome"] != "loaded", result
    assert result["exception"] and result["ours"], result
    missing = [word for word in words if word not in result["message"]]
    assert not missing, f"{missing} not in: {result['message']}"


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    """A CLI failure: exit 2, one line on stderr naming the problem, no traceback."""
    err = done.stderr.decode("utf-8", "replace") if isinstance(done.stderr, bytes) \
        else done.stderr
    assert done.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: "), err
    assert all(word in err for word in words), err


# ---------------------------------------------------------------------- fixtures
def random_gpt2(tie: bool = False) -> DecoderLM:
    mt.manual_seed(0)
    return DecoderLM(LMConfig.gpt2(vocab=61, d_model=16, n_heads=2, n_layers=2, max_len=16,
                                   tie_weights=tie)).eval()


def random_llama() -> DecoderLM:
    mt.manual_seed(0)
    return DecoderLM(LMConfig.llama(vocab=61, d_model=16, n_heads=4, n_kv_heads=2,
                                    n_layers=2, max_len=16)).eval()


def copy_dir(source, target, config_changes: dict | None = None):
    target.mkdir()
    for name in os.listdir(source):
        (target / name).write_bytes((source / name).read_bytes())
    if config_changes:
        config = json.loads((target / "config.json").read_text())
        config.update(config_changes)
        (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "gpt2"
    random_gpt2().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "llama"
    random_llama().save_pretrained(path)
    return path


def read_header(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def write_safetensors(path, header: dict, data: bytes, total_data: int | None = None):
    """A .safetensors file of `header` and `data`, its data section made `total_data`
    bytes long by a sparse extension (nothing is written for the extra bytes)."""
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text + data)
        if total_data is not None:
            file.truncate(8 + len(text) + total_data)


# ---------------------------------------------------------------------- item 1
def test_item01_sizes_are_checked_against_the_weights_before_anything_is_allocated(
        gpt2_dir, llama_dir, tmp_path):
    """A config claiming 10**9 layers, 10**7-wide embeddings or 2**40 positions beside a
    small model.safetensors: refused from the headers with both numbers, in seconds
    (before: a MemoryError after 40 s at 3.8 GB, or NumPy's _ArrayMemoryError)."""
    cases = {"n_layer": 10**9, "n_embd": 10**7, "vocab_size": 2**40, "n_positions": 2**40,
             "n_inner": 10**12}
    for key, value in cases.items():
        copy_dir(gpt2_dir, tmp_path / key, {key: value})
    copy_dir(llama_dir, tmp_path / "llama", {"num_hidden_layers": 10**9})
    results = bounded(f"""
        for key in {list(cases)!r} + ["llama"]:
            probe(key, lambda: from_pretrained({str(tmp_path)!r} + "/" + key))
    """)
    assert_ours(results["n_layer"], "n_layer=1,000,000,000", "2 layer(s)", "config.json")
    assert_ours(results["n_embd"], "wte.weight", "(61, 16)", "(61, 10000000)")
    assert_ours(results["vocab_size"], "wte.weight", "(61, 16)", f"({2**40}, 16)")
    assert_ours(results["n_positions"], "wpe.weight", "(16, 16)", f"({2**40}, 16)")
    assert_ours(results["n_inner"], "mlp.c_fc.weight", "(16, 64)", "(16, 1000000000000)")
    assert_ours(results["llama"], "num_hidden_layers=1,000,000,000", "2 layer(s)")


def test_item01_a_run_folders_model_config_is_checked_against_its_weights(tmp_path):
    """A charlm run whose model_config claims 10**9 layers (or a 2**40 position table):
    `generate` refuses it in one line, before building the model."""
    model = DecoderLM(LMConfig.gpt2(vocab=9, d_model=8, n_heads=2, n_layers=1, max_len=8))
    for name, change in {"layers": {"n_layers": 10**9},
                         "positions": {"positional": "sinusoidal", "max_len": 2**40}}.items():
        config = {**LMConfig.gpt2(vocab=9, d_model=8, n_heads=2, n_layers=1,
                                  max_len=8).__dict__, **change}
        state = dict(model.state_dict())
        if name == "positions":
            del state["position.table.weight"]
        (tmp_path / name).mkdir()
        mt.save({"model": state, "opts": json.dumps({"task": "charlm"}),
                 "model_config": json.dumps(config),
                 "tokenizer": json.dumps({"kind": "char", "chars": "abcdef"})},
                str(tmp_path / name / "checkpoint.npz"))
    assert_one_line_error(cli("generate", "--ckpt", str(tmp_path / "layers"), "--prompt", "ab"),
                          "n_layers=1,000,000,000", "1 layer(s)", "checkpoint.npz")
    assert_one_line_error(cli("generate", "--ckpt", str(tmp_path / "positions"), "--prompt",
                              "ab"), "max_len=1,099,511,627,776", "position table")


# ---------------------------------------------------------------------- item 2
def test_item02_special_files_are_refused_before_they_are_opened(gpt2_dir, tmp_path):
    """config.json as a FIFO (hung) or a link to /dev/zero (MemoryError after 13 s);
    mt.load on a FIFO (hung); generate --ckpt fifo.npz and train --text FIFO (hung);
    --text /dev/zero (MemoryError)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for name, target in {"fifo_config": fifo, "zero_config": "/dev/zero"}.items():
        folder = copy_dir(gpt2_dir, tmp_path / name)
        (folder / "config.json").unlink()
        (folder / "config.json").symlink_to(target)
    results = bounded(f"""
        probe("fifo_config", lambda: from_pretrained({str(tmp_path / "fifo_config")!r}))
        probe("zero_config", lambda: from_pretrained({str(tmp_path / "zero_config")!r}))
        probe("load_fifo", lambda: mt.load({str(fifo)!r}))
    """, seconds=60)
    assert_ours(results["fifo_config"], "FIFO", "config.json")
    assert_ours(results["zero_config"], "character device", "config.json")
    assert_ours(results["load_fifo"], "load:", "FIFO", str(fifo))
    os.mkfifo(tmp_path / "fifo.npz")
    assert_one_line_error(cli("generate", "--ckpt", str(tmp_path / "fifo.npz"), "--prompt", "a",
                              seconds=60), "FIFO")
    for text in (str(fifo), "/dev/zero"):
        assert_one_line_error(cli("train", "--task", "charlm", "--text", text, "--steps", "1",
                                  "--out", str(tmp_path / "run"), seconds=60),
                              "not a regular file", text)


def test_item02_text_and_json_reads_are_capped(gpt2_dir, tmp_path):
    """A 70 MB config.json and a 70 MB --text (sparse files: nothing is written) are
    refused by size, with the limit."""
    folder = copy_dir(gpt2_dir, tmp_path / "big_config")
    with open(folder / "config.json", "r+b") as file:
        file.truncate(70 * 2**20)
    big_text = tmp_path / "big.txt"
    with open(big_text, "wb") as file:
        file.truncate(70 * 2**20)
    results = bounded(f"""
        probe("config", lambda: from_pretrained({str(folder)!r}))
    """)
    assert_ours(results["config"], "73,400,320 bytes", "67,108,864", "config.json")
    assert_one_line_error(cli("train", "--task", "charlm", "--text", str(big_text), "--steps", "1",
                              "--out", str(tmp_path / "run")), "73,400,320 bytes", "big.txt")


# ---------------------------------------------------------------------- item 3
def write_bomb(path, n_bytes: int) -> None:
    """A microtensor checkpoint whose one array is `n_bytes` of zeros, deflated: a few
    MB on disk."""
    index = {"format": "microtensor.checkpoint", "version": 1,
             "tree": {"kind": "dict", "items": [["w", {"kind": "array", "entry": "w"}]]}}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.array(json.dumps(index)))
        archive.writestr("__microtensor__.npy", buffer.getvalue())
        with archive.open("w.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {
                "descr": "<f8", "fortran_order": False, "shape": (n_bytes // 8,)})
            chunk = bytes(2**24)
            for _ in range(n_bytes // len(chunk)):
                member.write(chunk)


def test_item03_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A 5 MB .npz whose array inflates to 1.2 GB: refused from the zip's declared sizes
    (before: loaded, or a MemoryError); `max_bytes` raises the limit for a file one
    trusts (a 64 MB one here, refused at 32 MB and loaded at 128 MB)."""
    bomb, small = tmp_path / "bomb.npz", tmp_path / "small.npz"
    write_bomb(bomb, 1200 * 2**20)
    write_bomb(small, 64 * 2**20)
    assert os.path.getsize(bomb) < 10 * 2**20
    results = bounded(f"""
        probe("bomb", lambda: mt.load({str(bomb)!r}))
        probe("small_refused", lambda: mt.load({str(small)!r}, max_bytes=32 * 2**20))
        probe("small_allowed", lambda: mt.load({str(small)!r}, max_bytes=128 * 2**20)["w"].shape)
    """)
    assert_ours(results["bomb"], "declares 1,258,291,", "the limit is", "max_bytes=")
    assert_ours(results["small_refused"], "the limit is 33,554,432")
    assert results["small_allowed"] == {"outcome": "loaded", "value": f"({8 * 2**20},)"}


# ---------------------------------------------------------------------- item 4
@pytest.mark.parametrize("gigabytes", [3.5, 6])
def test_item04_a_huge_tensor_is_checked_from_the_header(gpt2_dir, tmp_path, gigabytes):
    """model.safetensors with an extra 3.5 GB or 6 GB tensor (a sparse file): from_pretrained
    refuses the unexpected tensor without reading it, and load_safetensors gives our
    MemoryError naming it (before: a pyo3 PanicException, a BaseException, or a raw
    MemoryError)."""
    folder = copy_dir(gpt2_dir, tmp_path / "huge")
    header, data = read_header(folder / "model.safetensors")
    count = int(gigabytes * 2**30) // 4
    header["extra"] = {"dtype": "F32", "shape": [count], "data_offsets": [len(data),
                                                                          len(data) + 4 * count]}
    write_safetensors(folder / "model.safetensors", header, data, len(data) + 4 * count)
    results = bounded(f"""
        probe("from_pretrained", lambda: from_pretrained({str(folder)!r}))
        probe("load_safetensors", lambda: load_safetensors({str(folder / "model.safetensors")!r}))
    """)
    assert_ours(results["from_pretrained"], "unexpected tensor extra", f"({count},)")
    assert_ours(results["load_safetensors"], "'extra'", f"({count},)", "GiB")
    assert results["load_safetensors"]["outcome"] == "MemoryError"


# ---------------------------------------------------------------------- item 5
def test_item05_a_189_mb_merges_txt_is_refused_by_size(tmp_path):
    """A merges.txt of 189 MB of valid lines (before: MemoryError at 3.75 GB)."""
    vocab = {char: byte for byte, char in byte_to_char().items()}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_bytes(b"a b\n" * (189 * 2**20 // 4))
    results = bounded(f"""
        probe("merges", lambda: BPETokenizer.from_pretrained({str(tmp_path)!r}))
    """)
    assert_ours(results["merges"], "merges.txt", "198,180,864 bytes", "16,777,216")


# ---------------------------------------------------------------------- item 6
def test_item06_bpe_on_a_long_word_looks_up_each_pair_a_bounded_number_of_times():
    """100,000 letters without a space are one word. The rescanning merge loop looked up
    every pair of the word after every merge (quadratic: 17 s here before); now each
    merge ranks at most two new pairs, so the lookups stay under 3 per letter. The time
    is measured in tests/bench/bench_bpe.py, not here."""
    results = bounded("""
        import random, string, sys
        sys.path.insert(0, "tests/bench")
        from bench_bpe import letter_merges
        from transformer.bpe import byte_to_char

        class CountingRanks(dict):
            lookups = 0
            def get(self, key, default=None):
                CountingRanks.lookups += 1
                return super().get(key, default)

        merges = letter_merges(20_000)
        vocab = {char: byte for byte, char in byte_to_char().items()}
        for a, b in merges:
            vocab.setdefault(a + b, len(vocab))
        tok = BPETokenizer(vocab, merges)
        tok.ranks = CountingRanks(tok.ranks)
        text = "".join(random.Random(0).choices(string.ascii_lowercase, k=100_000))
        ids = tok.encode(text)
        probe("lookups", lambda: (CountingRanks.lookups, len(ids), tok.decode(ids) == text))
    """)
    lookups, tokens, round_trip = eval(results["lookups"]["value"])
    assert round_trip and tokens < 80_000
    assert lookups <= 3 * 100_000, lookups


# ---------------------------------------------------------------------- item 7
def test_item07_generate_refuses_a_billion_new_tokens(gpt2_dir):
    """generate --max-new-tokens 1000000000 (before: a traceback from a 7.45 GiB
    allocation): one line with the most this model generates in bounded memory."""
    done = cli("generate", "--ckpt", str(gpt2_dir), "--prompt-ids", "1,2",
               "--max-new-tokens", "1000000000")
    assert_one_line_error(done, "--max-new-tokens 1,000,000,000", "at most")


# ---------------------------------------------------------------------- item 8
def test_item08_deeply_nested_json_is_our_error(gpt2_dir, tmp_path):
    """200,000 nested '[' in config.json, the shard index or vocab.json (before: a raw
    RecursionError)."""
    deep = "[" * 200_000
    config = copy_dir(gpt2_dir, tmp_path / "config")
    (config / "config.json").write_text(deep)
    index = copy_dir(gpt2_dir, tmp_path / "index")
    (index / "model.safetensors").rename(index / "model-00001.safetensors")
    (index / "model.safetensors.index.json").write_text(deep)
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "vocab.json").write_text(deep)
    (vocab / "merges.txt").write_text("#version: 0.2\n")
    results = bounded(f"""
        probe("config", lambda: from_pretrained({str(config)!r}))
        probe("index", lambda: from_pretrained({str(index)!r}))
        probe("vocab", lambda: BPETokenizer.from_pretrained({str(vocab)!r}))
    """)
    assert_ours(results["config"], "config.json", "nests its JSON too deeply")
    assert_ours(results["index"], "model.safetensors.index.json", "too deeply")
    assert_ours(results["vocab"], "vocab.json", "too deeply")


# ---------------------------------------------------------------------- item 9
def test_item09_a_flag_given_as_a_string_is_refused(gpt2_dir, tmp_path):
    """"tie_word_embeddings": "false" loaded as tied and dropped lm_head.weight (logits
    off by 0.95)."""
    copy_dir(gpt2_dir, tmp_path / "string", {"tie_word_embeddings": "false"})
    copy_dir(gpt2_dir, tmp_path / "number", {"tie_word_embeddings": 0})
    results = bounded(f"""
        probe("string", lambda: from_pretrained({str(tmp_path / "string")!r}))
        probe("number", lambda: from_pretrained({str(tmp_path / "number")!r}))
    """)
    assert_ours(results["string"], "tie_word_embeddings='false'", "true or false",
                "config.json")
    assert_ours(results["number"], "tie_word_embeddings=0", "true or false")


# ---------------------------------------------------------------------- item 10
def test_item10_values_that_load_a_wrong_model_are_refused(gpt2_dir, llama_dir, tmp_path):
    """layer_norm_epsilon Infinity (every logit 0), NaN/inf weights (greedy decoding gives
    token 0), num_key_value_heads 0 (read as n_heads), and I64/BOOL/U8 weights (cast to
    float32): each refused naming the key or tensor; non-finite weights load with
    allow_non_finite=True."""
    eps = copy_dir(gpt2_dir, tmp_path / "eps")
    (eps / "config.json").write_text((eps / "config.json").read_text().replace(
        '"layer_norm_epsilon": 1e-05', '"layer_norm_epsilon": Infinity'))
    copy_dir(llama_dir, tmp_path / "kv", {"num_key_value_heads": 0})
    header, data = read_header(gpt2_dir / "model.safetensors")
    name = "transformer.h.0.mlp.c_fc.weight"
    start, end = header[name]["data_offsets"]
    weights = np.frombuffer(data[start:end], np.float32).copy()
    weights[3] = np.nan
    nan = copy_dir(gpt2_dir, tmp_path / "nan")
    write_safetensors(nan / "model.safetensors", header,
                      data[:start] + weights.tobytes() + data[end:])
    for dtype, width in {"I64": 8, "BOOL": 1, "U8": 1}.items():
        changed = json.loads(json.dumps(header))
        entry = changed["transformer.ln_f.bias"]
        entry["dtype"] = dtype
        size = int(np.prod(entry["shape"])) * width
        entry["data_offsets"] = [len(data), len(data) + size]
        # the old float bytes stay in the file, named by no tensor
        folder = copy_dir(gpt2_dir, tmp_path / dtype)
        write_safetensors(folder / "model.safetensors", changed, data + bytes(size))
    results = bounded(f"""
        for name in ["eps", "kv", "nan", "I64", "BOOL", "U8"]:
            probe(name, lambda: from_pretrained({str(tmp_path)!r} + "/" + name))
        probe("nan_allowed", lambda: type(from_pretrained({str(nan)!r},
                                                          allow_non_finite=True)).__name__)
    """)
    assert_ours(results["eps"], "layer_norm_epsilon=inf", "positive finite number")
    assert_ours(results["kv"], "num_key_value_heads=0", "positive integer")
    assert_ours(results["nan"], "h.0.mlp.c_fc.weight", "1 NaN or infinite",
                "allow_non_finite=True")
    for dtype in ("I64", "BOOL", "U8"):
        assert_ours(results[dtype], f"transformer.ln_f.bias ({dtype})", "not floating point")
    assert results["nan_allowed"] == {"outcome": "loaded", "value": "'DecoderLM'"}


def test_reading_a_safetensors_header_allocates_nothing(tmp_path):
    """The header of a file declaring 2**40 float32s (a sparse file) is read and checked
    in a process capped at 1 GiB."""
    path = tmp_path / "huge.safetensors"
    write_safetensors(path, {"w": {"dtype": "F32", "shape": [2**40],
                                   "data_offsets": [0, 2**42]}}, b"", 2**42)
    results = bounded(f"""
        from microtensor.safetensors_io import read_safetensors_header
        probe("header", lambda: read_safetensors_header({str(path)!r})["w"].shape)
    """)
    assert results["header"] == {"outcome": "loaded", "value": f"({2**40},)"}


def test_bf16_weights_load_as_float32(tmp_path):
    """bfloat16 (the dtype most Llama checkpoints ship in) is widened to float32."""
    values = np.array([1.5, -2.25, 2.0**100, 0.0], np.float32)   # exact in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    path = tmp_path / "bf16.safetensors"
    write_safetensors(path, {"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}},
                      raw)
    from microtensor.safetensors_io import load_safetensors
    np.testing.assert_array_equal(load_safetensors(path)["w"], values)
