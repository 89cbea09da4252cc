"""Llama checkpoints in Hugging Face's layout: our mapping round-trips exactly (always
run), and where `transformers` is installed, a random LlamaForCausalLM made offline loads
here with equal logits and a model trained here loads there with equal logits."""
import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor import optim
from transformer import DecoderLM, LMConfig
from transformer.hub.llama import llama_from_hf, llama_to_hf
from transformer.hub.pretrained import read_pretrained_dir

IDS = np.random.default_rng(0).integers(0, 100, (3, 21))


def our_llama(tie: bool, train_steps: int = 0) -> DecoderLM:
    mt.manual_seed(11)
    lm = DecoderLM(LMConfig.llama(vocab=100, d_model=64, n_heads=4, n_layers=2, d_ff=96,
                                  max_len=64, n_kv_heads=2, rope_theta=500.0, norm_eps=1e-5,
                                  tie_weights=tie))
    opt = optim.AdamW(lm.parameters(), lr=3e-3)
    for _ in range(train_steps):       # move every weight off its initial value
        loss = F.cross_entropy(lm(IDS[:, :-1]), IDS[:, 1:])
        opt.zero_grad(); loss.backward(); opt.step()
    return lm


def logits(lm, ids=IDS):
    with mt.no_grad():
        return lm(ids).data


# ---------------------------------------------------------------------- no oracle needed
@pytest.mark.parametrize("tie", [False, True])
def test_mapping_round_trips_exactly(tie):
    lm = our_llama(tie, train_steps=2)
    config, tensors = llama_to_hf(lm)
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": 500.0}
    assert config["tie_word_embeddings"] is tie and ("lm_head.weight" in tensors) is not tie
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (64, 64)
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)   # (out, in)
    assert tensors["model.layers.1.mlp.down_proj.weight"].shape == (64, 96)
    np.testing.assert_array_equal(tensors["model.layers.1.mlp.down_proj.weight"],
                                  lm.blocks[1].ffn.W_down.weight.data.T)
    back = llama_from_hf(config, tensors)
    assert back.config == lm.config
    ours, theirs = dict(lm.named_parameters()), dict(back.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, param in ours.items():
        np.testing.assert_array_equal(param.data, theirs[name].data, err_msg=name)
    np.testing.assert_array_equal(logits(back), logits(lm))


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_through_a_safetensors_file(tie, tmp_path):
    lm = our_llama(tie, train_steps=1)
    lm.save_pretrained(tmp_path / "llama")          # config.json + model.safetensors
    back = DecoderLM.from_pretrained(tmp_path / "llama")
    assert back.config.style == "llama" and not back.training
    np.testing.assert_array_equal(logits(back), logits(lm))


def test_older_config_layout_is_read():
    config, tensors = llama_to_hf(our_llama(False))
    del config["rope_parameters"]
    config.update(rope_theta=500.0, rope_scaling=None, torch_dtype="float32",
                  pretraining_tp=1)
    assert llama_from_hf(config, tensors).config.rope_theta == 500.0


@pytest.mark.parametrize("key, value, message", [
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}, "rope_scaling="),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4}, "rope_parameters="),
    ("attention_bias", True, "attention_bias=True is not supported"),
    ("mlp_bias", True, "mlp_bias=True is not supported"),
    ("hidden_act", "gelu", "hidden_act='gelu' is not supported"),
    ("head_dim", 32, "head_dim=32 is not supported"),
    ("attention_dropout", 0.1, "attention_dropout=0.1 is not supported"),
    ("model_type", "mistral", "model_type='mistral' is not supported"),
])
def test_unsupported_config_values_are_refused_by_name(key, value, message):
    config, tensors = llama_to_hf(our_llama(False))
    config[key] = value
    with pytest.raises(ValueError, match="llama_from_hf: config " + message.replace("(", r"\(")
                       .replace("[", r"\[")):
        llama_from_hf(config, tensors)


def test_missing_unexpected_and_misshapen_tensors_are_refused():
    config, tensors = llama_to_hf(our_llama(False))
    missing = dict(tensors)
    del missing["model.norm.weight"]
    with pytest.raises(KeyError, match=r"1 tensors are missing, e.g. \['model.norm.weight'\]"):
        llama_from_hf(config, missing)
    extra = dict(tensors, **{"model.layers.0.self_attn.q_proj.bias": np.zeros(64, "f4")})
    with pytest.raises(KeyError, match="not part of a Llama model.*q_proj.bias"):
        llama_from_hf(config, extra)
    wrong = dict(tensors, **{"model.layers.0.self_attn.k_proj.weight": np.zeros((64, 64),
                                                                                "f4")})
    with pytest.raises(ValueError, match=r"k_proj.weight has shape \(64, 64\), but the config "
                                         r"makes it \(32, 64\)"):
        llama_from_hf(config, wrong)
    with pytest.raises(KeyError, match="config has no 'hidden_size'"):
        llama_from_hf({"model_type": "llama"}, tensors)
    with pytest.raises(TypeError, match=r"llama_to_hf: expected a Llama-style DecoderLM, "
                                        r"got DecoderLM\(style='gpt'\)"):
        llama_to_hf(DecoderLM(LMConfig.gpt2(vocab=10, d_model=8, n_heads=2, n_layers=1)))


def test_a_tied_checkpoint_may_carry_its_head():
    config, tensors = llama_to_hf(our_llama(True))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    np.testing.assert_array_equal(logits(llama_from_hf(config, tensors)),
                                  logits(our_llama(True)))


# ---------------------------------------------------------------------- transformers as oracle
def hf_llama(tie: bool):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=tie,
        initializer_range=0.2)   # larger than the default 0.02: logits far from uniform
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def hf_logits(model, ids=IDS):
    import torch
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("tie", [False, True])
def test_random_transformers_llama_loads_with_equal_logits(tie, tmp_path):
    reference = hf_llama(tie)
    reference.save_pretrained(tmp_path / "hf")
    config, _ = read_pretrained_dir(tmp_path / "hf")
    assert config["tie_word_embeddings"] is tie
    lm = DecoderLM.from_pretrained(tmp_path / "hf")
    expected = hf_logits(reference)
    assert np.abs(expected).max() > 1.0       # not a near-uniform, easy-to-match output
    np.testing.assert_allclose(logits(lm), expected, atol=2e-4, rtol=0)
    # and the next tokens it picks, greedily, with and without our cache
    ids = IDS[:, :8]
    ours = lm.generate(ids, max_new_tokens=6, temperature=0)
    for step in range(6):
        np.testing.assert_array_equal(ours[:, 8 + step],
                                      hf_logits(reference, ours[:, :8 + step])[:, -1]
                                      .argmax(-1))


@pytest.mark.parametrize("tie", [False, True])
def test_model_trained_here_loads_in_transformers_with_equal_logits(tie, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    lm = our_llama(tie, train_steps=5)
    lm.save_pretrained(tmp_path / "ours")
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert theirs.config.num_key_value_heads == 2
    assert theirs.config.tie_word_embeddings is tie
    np.testing.assert_allclose(hf_logits(theirs), logits(lm), atol=2e-4, rtol=0)
