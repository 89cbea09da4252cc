"""Hugging Face GPT-2 directories without torch or transformers: what save_pretrained
writes is GPT-2's layout (names, shapes, the fused c_attn), a GPT-2 forward pass written
here in NumPy from those tensors gives our logits, a directory reads back exactly, and bad
directories are refused by name. The comparison with transformers itself is in
test_hf_oracle.py (skipped without it)."""
import json
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
import microtensor.functional as F
from microtensor import nn
from microtensor.safetensors_io import SafetensorsFileError, load_safetensors, save_safetensors
from transformer import BPETokenizer, DecoderLM, EncoderLayer, LMConfig
from transformer.__main__ import main
from transformer.bpe import byte_to_char
from transformer.hub import pretrained as pretrained_module
from transformer.hub.pretrained import read_pretrained_dir, write_pretrained_dir

SIZES = {"vocab": 61, "d_model": 32, "n_heads": 4, "n_layers": 2, "max_len": 16}


def random_model(seed=0, **options) -> DecoderLM:
    """A DecoderLM whose every parameter (LayerNorm scales and biases included) is random,
    so a mapping that swapped or dropped any of them would show."""
    mt.manual_seed(seed)
    model = DecoderLM(LMConfig(**{**SIZES, "tie_weights": True, **options}))
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
        param.data[...] = centre + 0.2 * rng.standard_normal(param.shape)
    return model.eval()


def numpy_gpt2(config: dict, tensors: dict, ids: np.ndarray) -> np.ndarray:
    """GPT-2's forward pass, written from its tensor names (transformers' GPT2LMHeadModel
    in NumPy, float64): the reference the mapping is checked against."""
    t = {name.removeprefix("transformer."): a.astype(np.float64) for name, a in tensors.items()}
    eps, heads = config["layer_norm_epsilon"], config["n_head"]

    def layer_norm(x, prefix):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * t[prefix + ".weight"] + t[prefix + ".bias"]

    def conv1d(x, prefix):  # GPT-2's Conv1D: x @ W + b with W stored (in, out)
        return x @ t[prefix + ".weight"] + t[prefix + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    length = ids.shape[1]
    x = t["wte.weight"][ids] + t["wpe.weight"][np.arange(length)]
    for i in range(config["n_layer"]):
        h = f"h.{i}"
        q, k, v = np.split(conv1d(layer_norm(x, f"{h}.ln_1"), f"{h}.attn.c_attn"), 3, axis=-1)
        q, k, v = (a.reshape(*a.shape[:2], heads, -1).swapaxes(1, 2) for a in (q, k, v))
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
        scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = (weights @ v).swapaxes(1, 2).reshape(x.shape)
        x = x + conv1d(attended, f"{h}.attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(layer_norm(x, f"{h}.ln_2"), f"{h}.mlp.c_fc")),
                       f"{h}.mlp.c_proj")
    x = layer_norm(x, "ln_f")
    head = t["wte.weight"] if config["tie_word_embeddings"] else t["lm_head.weight"]
    return x @ head.T


@pytest.fixture
def saved(tmp_path):
    model = random_model()
    path = tmp_path / "gpt2-small-random"
    model.save_pretrained(path)
    return model, path


# ---------------------------------------------------------------------- the mapping
def test_written_directory_has_gpt2_names_and_shapes(saved):
    model, path = saved
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    config, tensors = read_pretrained_dir(path)
    d, vocab = SIZES["d_model"], SIZES["vocab"]
    assert (config["model_type"], config["architectures"]) == ("gpt2", ["GPT2LMHeadModel"])
    assert (config["n_embd"], config["n_layer"], config["n_head"], config["vocab_size"],
            config["n_positions"], config["n_inner"]) == (d, 2, 4, vocab, 16, 4 * d)
    assert config["activation_function"] == "gelu_new" and config["tie_word_embeddings"]
    assert tensors["transformer.wte.weight"].shape == (vocab, d)
    assert tensors["transformer.wpe.weight"].shape == (16, d)
    assert tensors["transformer.h.1.attn.c_attn.weight"].shape == (d, 3 * d)
    assert tensors["transformer.h.1.mlp.c_fc.weight"].shape == (d, 4 * d)
    assert "lm_head.weight" not in tensors   # tied: it is wte
    assert len(tensors) == 4 + 12 * 2
    # c_attn is W_q | W_k | W_v side by side, (in, out) as our Linear and GPT-2's Conv1D
    attention = model.blocks[1].self_attn
    fused = np.concatenate([attention.W_q.weight.data, attention.W_k.weight.data,
                            attention.W_v.weight.data], axis=1)
    np.testing.assert_array_equal(tensors["transformer.h.1.attn.c_attn.weight"], fused)
    np.testing.assert_array_equal(tensors["transformer.h.0.ln_2.bias"],
                                  model.blocks[0].norm2.bias.data)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_numpy_gpt2_on_the_written_tensors_gives_our_logits(tmp_path, tie_weights):
    model = random_model(tie_weights=tie_weights)
    model.save_pretrained(tmp_path / "m")
    config, tensors = read_pretrained_dir(tmp_path / "m")
    assert ("lm_head.weight" in tensors) is not tie_weights
    ids = np.random.default_rng(1).integers(0, SIZES["vocab"], (2, 11))
    reference = numpy_gpt2(config, tensors, ids)
    np.testing.assert_allclose(model(ids).data, reference, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(DecoderLM.from_pretrained(tmp_path / "m")(ids).data,
                               reference, atol=2e-4, rtol=1e-4)


def test_round_trip_is_exact(saved, tmp_path):
    model, path = saved
    loaded = DecoderLM.from_pretrained(path)
    assert loaded.config == model.config and not loaded.training
    for (name, ours), (_, theirs) in zip(model.state_dict().items(),
                                         loaded.state_dict().items()):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    ids = np.arange(10)[None]
    np.testing.assert_array_equal(model(ids).data, loaded(ids).data)
    loaded.save_pretrained(tmp_path / "again")
    first, second = (load_safetensors(p / "model.safetensors") for p in (path, tmp_path / "again"))
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_config_settings_are_honoured(tmp_path):
    model = random_model(activation="relu", tie_weights=False, dropout=0.1, norm_eps=1e-3)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["activation_function"], config["layer_norm_epsilon"],
            config["tie_word_embeddings"], config["resid_pdrop"]) == ("relu", 1e-3, False, 0.1)
    loaded = DecoderLM.from_pretrained(tmp_path / "m")
    assert loaded.norm.eps == loaded.blocks[1].norm2.eps == 1e-3
    assert loaded.config == model.config
    ids = np.arange(9)[None]
    np.testing.assert_array_equal(model(ids).data, loaded(ids).data)


def test_hub_layout_without_prefix_and_with_mask_buffers_loads(saved, tmp_path):
    """The Hub's gpt2 file names tensors without 'transformer.' and stores each layer's
    causal mask (h.{i}.attn.bias) and masked_bias: constants we skip."""
    model, path = saved
    config, tensors = read_pretrained_dir(path)
    hub = {name.removeprefix("transformer."): array for name, array in tensors.items()}
    for i in range(2):
        hub[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
        hub[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    write_pretrained_dir(tmp_path / "hub", config, hub)
    ids = np.arange(7)[None]
    np.testing.assert_array_equal(DecoderLM.from_pretrained(tmp_path / "hub")(ids).data,
                                  model(ids).data)


def test_sharded_weights_load(saved, tmp_path):
    model, path = saved
    config, tensors = read_pretrained_dir(path)
    names = sorted(tensors)
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    weight_map = {}
    for part, chunk in enumerate((names[:10], names[10:])):
        shard = f"model-0000{part + 1}-of-00002.safetensors"
        save_safetensors({n: tensors[n] for n in chunk}, folder / shard)
        weight_map.update(dict.fromkeys(chunk, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = np.arange(5)[None]
    np.testing.assert_array_equal(DecoderLM.from_pretrained(folder)(ids).data, model(ids).data)


# ---------------------------------------------------------------------- refusals
def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("key, value, words", [
    ("activation_function", "gelu", ["activation_function='gelu'", "gelu_new"]),
    ("scale_attn_by_inverse_layer_idx", True, ["scale_attn_by_inverse_layer_idx=True"]),
    ("scale_attn_weights", False, ["scale_attn_weights=False"]),
    ("add_cross_attention", True, ["add_cross_attention=True"]),
    ("attn_pdrop", 0.3, ["attn_pdrop=0.3", "resid_pdrop=0.0"]),
    ("layer_norm_epsilon", -1, ["layer_norm_epsilon=-1"]),
    ("model_type", "bert", ["model_type='bert'", "['gpt2', 'llama']"]),
    ("n_head", 5, ["n_embd=32 not divisible by n_head=5"]),
    ("n_layer", 0, ["n_layer=0"]),
    ("n_embd", 48, ["wte.weight", "(61, 32)", "(61, 48)"]),
])
def test_config_we_cannot_honour_is_refused_by_key_and_value(saved, key, value, words):
    _, path = saved
    edit_config(path, **{key: value})
    with pytest.raises(ValueError) as error:
        DecoderLM.from_pretrained(path)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_missing_config_key_is_named(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    del config["n_head"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lacks n_head"):
        DecoderLM.from_pretrained(path)


def test_missing_and_unexpected_tensors_are_named(saved, tmp_path):
    _, path = saved
    config, tensors = read_pretrained_dir(path)
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    tensors["score.weight"] = np.zeros((2, 32), np.float32)
    write_pretrained_dir(tmp_path / "bad", config, tensors)
    with pytest.raises(ValueError) as error:
        DecoderLM.from_pretrained(tmp_path / "bad")
    assert "missing tensor h.1.mlp.c_fc.bias" in str(error.value)
    assert "unexpected tensor score.weight" in str(error.value)


def test_missing_directory_and_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DecoderLM.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        DecoderLM.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        DecoderLM.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        DecoderLM.from_pretrained(tmp_path / "empty")


class RunsCode:
    """Unpickling this calls os.mkdir: what a hostile pytorch_model.bin could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_weights_are_refused_and_never_unpickled(saved):
    _, path = saved
    os.remove(path / "model.safetensors")
    marker = str(path / "unpickled")
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ValueError, match="pickle") as error:
        DecoderLM.from_pretrained(path)
    assert "safetensors" in str(error.value) and not os.path.exists(marker)


@pytest.mark.parametrize("damage", ["truncated", "header", "empty"])
def test_damaged_safetensors_is_refused(saved, damage):
    _, path = saved
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2],
                         "header": data[:8] + b"#" * 16 + data[24:], "empty": b""}[damage])
    with pytest.raises(SafetensorsFileError, match="damaged, truncated"):
        DecoderLM.from_pretrained(path)


def test_architecture_gpt2_cannot_express_is_refused(tmp_path):
    with pytest.raises(ValueError, match="positional='sinusoidal'"):
        random_model(positional="sinusoidal").save_pretrained(tmp_path / "a")
    post_ln = random_model()
    post_ln.blocks = nn.ModuleList([post_ln.blocks[0], EncoderLayer(
        SIZES["d_model"], SIZES["n_heads"], 4 * SIZES["d_model"], norm_first=False)])
    with pytest.raises(ValueError, match="block 1 is a EncoderLayer, where GPT-2 has GPTBlock"):
        post_ln.save_pretrained(tmp_path / "b")
    mixed = random_model()
    mixed.norm.eps = 1e-6
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        mixed.save_pretrained(tmp_path / "c")
    extended = random_model()
    extended.blocks[0].gate = nn.Parameter(np.ones(32, np.float32))
    del extended.blocks[1].ffn.W_2.bias
    with pytest.raises(ValueError, match="extra blocks.0.gate; without blocks.1.ffn.W_2.bias"):
        extended.save_pretrained(tmp_path / "d")
    assert sorted(os.listdir(tmp_path)) == []   # nothing half-written


def test_save_replaces_a_directory_whole_and_keeps_tokenizer_files(saved):
    _, path = saved
    (path / "vocab.json").write_text("{}")
    (path / "pytorch_model.bin").write_bytes(b"stale")
    random_model(seed=1).save_pretrained(path)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "vocab.json"]
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_interrupted_save_leaves_the_old_directory(saved, monkeypatch):
    _, path = saved
    before = (path / "model.safetensors").read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrained_module, "save_safetensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        random_model(seed=2).save_pretrained(path)
    assert (path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]   # no staging directory left


# ---------------------------------------------------------------------- state dicts
def test_module_state_dict_as_safetensors(tmp_path):
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    model.save(tmp_path / "weights.safetensors")
    assert set(load_safetensors(tmp_path / "weights.safetensors")) == set(model.state_dict())
    fresh = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).load(
        tmp_path / "weights.safetensors")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value)
    (tmp_path / "weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(SafetensorsFileError, match="weights.safetensors"):
        fresh.load(tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        model.save(tmp_path / "w.safetensors")
        nn.Linear(3, 4).load(tmp_path / "w.safetensors")


def test_why_training_checkpoints_stay_npz(tmp_path):
    """A flipped byte inside the weights: the .npz's CRC-32 refuses it, while safetensors
    (no checksum) loads a different number. Resuming must never continue from that."""
    state = {"weight": np.arange(64, dtype=np.float32)}
    save_safetensors(state, tmp_path / "w.safetensors")
    mt.save(state, tmp_path / "w.npz")
    for name in ("w.safetensors", "w.npz"):
        data = bytearray((tmp_path / name).read_bytes())
        data[data.index(np.float32(40).tobytes()) + 3] ^= 0x01
        (tmp_path / name).write_bytes(bytes(data))
    assert load_safetensors(tmp_path / "w.safetensors")["weight"][40] != 40
    with pytest.raises(ValueError, match="corrupt"):
        mt.load(tmp_path / "w.npz")


# ---------------------------------------------------------------------- command line, drawing
def test_generate_command_on_a_directory(saved, capsys):
    model, path = saved
    prompt = [3, 14, 15]
    assert main(["generate", "--ckpt", str(path), "--prompt-ids", "3,14,15",
                 "--max-new-tokens", "6", "--temperature", "0"]) == 0
    printed = [int(i) for i in capsys.readouterr().out.strip().split(",")]
    expected = model.generate([prompt], max_new_tokens=6, temperature=0)[0]
    assert printed == list(expected)
    assert main(["generate", "--ckpt", str(path), "--prompt", "hello"]) == 2
    assert "--prompt-ids" in capsys.readouterr().err


def test_generate_command_with_text_on_a_directory_with_tokenizer_files(tmp_path, capsys):
    vocab = {char: byte for byte, char in byte_to_char().items()}
    merges = [("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    model = random_model(vocab=len(vocab))
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "m" / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = BPETokenizer.from_pretrained(tmp_path / "m")
    assert tokenizer.encode("a cat") == [ord("a"), 258]
    assert main(["generate", "--ckpt", str(tmp_path / "m"), "--prompt", "a cat",
                 "--max-new-tokens", "5", "--temperature", "0"]) == 0
    expected = model.generate([[ord("a"), 258]], max_new_tokens=5, temperature=0)[0]
    assert capsys.readouterr().out == tokenizer.decode(expected) + "\n"
    with pytest.raises(SystemExit):
        main(["generate", "--ckpt", str(tmp_path / "m"), "--prompt-ids", "1,x"])
    assert "comma-separated" in capsys.readouterr().err


def test_drawing_a_loaded_block_shows_both_names(saved):
    viz = pytest.importorskip("viz")
    _, path = saved
    model = DecoderLM.from_pretrained(path)
    ids = np.arange(6)[None]
    block = model.blocks[0]
    x = model.position(model.tok_embed(ids))
    logits = model.norm(block(x, causal=True)) @ model.tok_embed.weight.swapaxes(0, 1)
    loss = F.cross_entropy(logits.reshape(6, SIZES["vocab"]), np.arange(1, 7))
    source = viz.draw(loss, params=model, collapse=False).source
    assert "blocks.0.self_attn.W_k.weight (GPT-2: h.0.attn.c_attn.weight[..., 32:64])" in source
    assert "norm.bias (GPT-2: ln_f.bias)" in source
    assert block.self_attn.last_weights.shape == (1, 4, 6, 6)   # per layer and head


# ---------------------------------------------------------------------- shapes before building
@settings(max_examples=40, deadline=None)
@given(style=st.sampled_from(["gpt", "llama"]), heads=st.sampled_from([1, 2, 4]),
       kv_divisor=st.sampled_from([1, 2, 4]), layers=st.integers(1, 3),
       tie=st.booleans(), positional=st.sampled_from(["learned", "sinusoidal"]),
       d_ff=st.integers(1, 24), vocab=st.integers(1, 40))
def test_parameter_shapes_are_the_built_models(style, heads, kv_divisor, layers, tie,
                                               positional, d_ff, vocab):
    """LMConfig.parameter_shapes, which loaders check a stranger's weights against before
    they allocate a model, lists exactly the parameters DecoderLM builds."""
    options = {"d_model": 4 * heads, "n_heads": heads, "n_layers": layers, "d_ff": d_ff,
               "max_len": 8, "tie_weights": tie}
    if style == "llama":
        config = LMConfig.llama(vocab, n_kv_heads=max(1, heads // kv_divisor), **options)
    else:
        config = LMConfig.gpt2(vocab, positional=positional, **options)
    built = {name: param.shape for name, param in DecoderLM(config).named_parameters()}
    assert config.parameter_shapes() == built


def test_decoder_lm_from_pretrained_passes_its_options_to_the_hub(tmp_path):
    mt.manual_seed(0)
    lm = DecoderLM(LMConfig.gpt2(16, d_model=8, n_heads=2, n_layers=1, max_len=8))
    lm.blocks[0].ffn.W_1.weight.data[0, 0] = np.nan
    lm.save_pretrained(tmp_path / "nan")
    with pytest.raises(ValueError, match="allow_non_finite=True"):
        DecoderLM.from_pretrained(tmp_path / "nan")
    loaded = DecoderLM.from_pretrained(tmp_path / "nan", allow_non_finite=True)
    assert np.isnan(loaded.blocks[0].ffn.W_1.weight.data[0, 0])
