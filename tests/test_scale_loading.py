"""Loading reads each weight into its parameter (issue 31, item 3): a float32 tensor goes
from the file straight into the parameter's array (`LazyTensors.read_into`), others are
read and cast, so `from_pretrained` never holds a second copy of the model. Measured
with tracemalloc, which sees every NumPy array."""
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
from microtensor.safetensors_io import (
    LazyTensors,
    read_safetensors_header,
    save_safetensors,
)
from transformer import DecoderLM, LMConfig
from transformer.hub import pretrained


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_read_into_gives_the_tensor_in_the_given_array(tmp_path, dtype):
    rng = np.random.default_rng(0)
    stored = rng.standard_normal((5, 7)).astype(dtype)
    path = tmp_path / "w.safetensors"
    save_safetensors({"w": stored, "empty": np.zeros((0, 3), dtype)}, path)
    tensors = LazyTensors(read_safetensors_header(path))
    out = np.full((5, 7), np.nan, np.float32)
    assert tensors.read_into("w", out) is out
    np.testing.assert_array_equal(out, stored.astype(np.float32))
    assert tensors.read_into("empty", np.empty((0, 3), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match=r"shape \(5, 7\), not the \(7, 5\)"):
        tensors.read_into("w", np.empty((7, 5), np.float32))


def test_read_into_refuses_a_tensor_cut_short(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors({"w": np.ones((64, 64), np.float32)}, path)
    tensors = LazyTensors(read_safetensors_header(path))
    with open(path, "r+b") as file:      # the header was read while the file was whole
        file.truncate(path.stat().st_size - 100)
    with pytest.raises(ValueError, match="cut short"):
        tensors.read_into("w", np.empty((64, 64), np.float32))


@pytest.mark.parametrize("style", ["gpt", "llama"])
def test_from_pretrained_holds_no_second_copy_of_the_weights(tmp_path, style, monkeypatch):
    # config.json is read with a 64 MB cap, as one read of up to 64 MB: a buffer the
    # OS never backs, but tracemalloc counts it. Plain json here, to see the weights.
    monkeypatch.setattr(pretrained, "_read_json",
                        lambda path, where: json.loads(Path(path).read_text("utf-8")))
    mt.manual_seed(0)
    make = LMConfig.gpt2 if style == "gpt" else LMConfig.llama
    model = DecoderLM(make(vocab=100, d_model=64, n_heads=4, n_layers=4, max_len=32,
                           tie_weights=True))
    model.save_pretrained(tmp_path / "model")
    weights = sum(p.data.nbytes for p in model.parameters())

    def peak_of(make):
        make()                                                  # warm imports and caches
        tracemalloc.start()
        try:
            made = make()
            return made, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    _, building = peak_of(lambda: DecoderLM(model.config))      # the model and its draws
    loaded, loading = peak_of(lambda: DecoderLM.from_pretrained(tmp_path / "model"))
    # reading adds at most one small tensor (GPT-2's c_attn, split in three) to building
    assert loading - building < 0.1 * weights, (loading - building) / weights
    for (name, param), (_, original) in zip(loaded.named_parameters(),
                                            model.named_parameters()):
        np.testing.assert_array_equal(param.data, original.data, err_msg=name)
