"""transformers as the oracle for GPT-2 checkpoints: a small random GPT-2 built with
transformers offline loads here with equal logits and equal greedy tokens, a model trained
here loads in transformers with equal logits, and files round-trip exactly. Skipped
without torch and transformers; test_pretrained.py checks the mapping without them."""
import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor import optim
from microtensor.safetensors_io import SafetensorsFileError, load_safetensors
from transformer import DecoderLM, LMConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 97


def build_gpt2(seed=0, **overrides):
    """A random GPT2LMHeadModel: 2 layers, 64 wide, 4 heads, vocab 97, no dropout, and
    LayerNorm scales, biases and every other bias far from their 1/0 initial values.
    Weights are drawn with std 0.2, not GPT-2's 0.02: at 0.02 the logits have std 0.17
    and the exact GELU moves them by 3e-6, so a test at atol 2e-4 cannot tell it from
    GPT-2's tanh form; at 0.2 they have std 1.5 and it moves them by 1.3e-3."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        initializer_range=0.2, **overrides)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(0.3 * torch.randn_like(param))
    return model


def their_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def assert_far_from_uniform(logits: np.ndarray) -> None:
    """Logits large enough that a wrong activation or a missing bias shows beyond atol
    2e-4 (build_gpt2's weights give a std of about 1.5; the default init, 0.17)."""
    assert logits.std() > 1.0, logits.std()


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    model = build_gpt2()
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    model.save_pretrained(path)
    return model, path


IDS = np.random.default_rng(0).integers(0, VOCAB, (3, 20))


def test_logits_equal_transformers(gpt2_dir):
    theirs, path = gpt2_dir
    ours = DecoderLM.from_pretrained(path)
    assert ours.config.tie_weights and ours.norm.eps == 1e-5
    assert_far_from_uniform(their_logits(theirs, IDS))
    np.testing.assert_allclose(ours(IDS).data, their_logits(theirs, IDS), atol=2e-4, rtol=0)
    with mt.no_grad():   # the cached path too, one token at a time
        cache = ours.new_cache(3)
        stepped = np.concatenate([ours(IDS[:, t:t + 1], cache=cache).data
                                  for t in range(IDS.shape[1])], axis=1)
    np.testing.assert_allclose(stepped, their_logits(theirs, IDS), atol=2e-4, rtol=0)


def test_greedy_generate_gives_transformers_tokens(gpt2_dir):
    theirs, path = gpt2_dir
    ours = DecoderLM.from_pretrained(path)
    prompt = IDS[:, :5]
    with torch.no_grad():
        expected = theirs.generate(torch.tensor(prompt), max_new_tokens=12, do_sample=False,
                                   min_new_tokens=12, pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours.generate(prompt, max_new_tokens=12, temperature=0),
                                  expected)


@pytest.mark.parametrize("tie_weights, activation", [(True, "gelu"), (False, "relu")])
def test_model_trained_here_loads_in_transformers(tmp_path, tie_weights, activation):
    mt.manual_seed(1)
    ours = DecoderLM(LMConfig.gpt2(vocab=VOCAB, d_model=64, n_heads=4, n_layers=2, max_len=32,
                                   tie_weights=tie_weights, activation=activation))
    # Embeddings at std 0.2 (ours start at 0.02) and matrices twice ours, as build_gpt2
    # does: at our init the exact GELU moves these logits by 1.2e-4, under atol; here by
    # about 2e-3.
    ours.tok_embed.weight.data *= 10
    for param in ours.parameters():
        if param.ndim == 2 and param is not ours.tok_embed.weight:
            param.data *= 2
    opt = optim.AdamW(ours.parameters(), lr=3e-3)
    batch = np.random.default_rng(1).integers(0, VOCAB, (4, 17))
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(ours(batch[:, :-1]).reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    ours.save_pretrained(tmp_path / "trained")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "trained").eval()
    assert theirs.config.tie_word_embeddings is tie_weights
    assert_far_from_uniform(their_logits(theirs, IDS))
    np.testing.assert_allclose(their_logits(theirs, IDS), ours.eval()(IDS).data, atol=2e-4,
                               rtol=0)


def test_round_trip_is_exact(gpt2_dir, tmp_path):
    theirs, path = gpt2_dir
    ours = DecoderLM.from_pretrained(path)
    ours.save_pretrained(tmp_path / "again")
    written = load_safetensors(tmp_path / "again" / "model.safetensors")
    original = {name: p.detach().numpy() for name, p in theirs.state_dict().items()
                if name != "lm_head.weight"}   # tied: the same tensor as wte
    assert written.keys() == original.keys()
    for name, array in original.items():
        np.testing.assert_array_equal(written[name], array, err_msg=name)
    again = DecoderLM.from_pretrained(tmp_path / "again")
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_damaged_file_is_refused_with_our_error(gpt2_dir, tmp_path):
    _, path = gpt2_dir
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_bytes((path / "config.json").read_bytes())
    data = (path / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(SafetensorsFileError, match="damaged, truncated"):
        DecoderLM.from_pretrained(damaged)


@pytest.mark.parametrize("overrides, words", [
    ({"activation_function": "gelu"}, "activation_function='gelu'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
])
def test_configs_transformers_allows_but_we_cannot_honour(tmp_path, overrides, words):
    build_gpt2(**overrides).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        DecoderLM.from_pretrained(tmp_path / "m")


def test_relu_and_untied_head_from_transformers(tmp_path):
    theirs = build_gpt2(activation_function="relu", tie_word_embeddings=False, n_inner=48)
    theirs.save_pretrained(tmp_path / "m")
    ours = DecoderLM.from_pretrained(tmp_path / "m")
    assert (ours.config.activation, ours.config.d_ff, ours.config.tie_weights) == ("relu", 48,
                                                                                  False)
    assert_far_from_uniform(their_logits(theirs, IDS))
    np.testing.assert_allclose(ours(IDS).data, their_logits(theirs, IDS), atol=2e-4, rtol=0)
