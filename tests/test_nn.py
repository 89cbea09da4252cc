"""Modules: registration, seeded initialisation, state_dict round trips and their errors,
save/load, and the printed tree."""
import os

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor import nn


class Block(nn.Module):
    def __init__(self, dim=4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([nn.Linear(dim, 8), nn.Linear(8, dim, bias=False)])
        self.scale = nn.Parameter(np.ones(1, np.float32))

    def forward(self, x):
        return self.layers[1](self.layers[0](self.norm(x)).relu()) * self.scale


def test_parameters_are_registered_with_dotted_names_in_order():
    block = Block()
    assert [name for name, _ in block.named_parameters()] == [
        "scale", "norm.weight", "norm.bias", "layers.0.weight", "layers.0.bias",
        "layers.1.weight"]
    assert list(block.state_dict()) == [name for name, _ in block.named_parameters()]
    assert block.num_parameters() == 1 + 8 + 40 + 32


def test_shared_parameter_is_listed_once():
    model = nn.Module()
    model.embed = nn.Embedding(10, 4)
    model.head = nn.Linear(10, 4, bias=False)
    model.head.weight = model.embed.weight  # tied: one Parameter in two places
    assert list(model.state_dict()) == ["embed.weight"]


# ---------------------------------------------------------------------- initialisation
def test_same_seed_same_weights_and_another_seed_other_weights():
    mt.manual_seed(7)
    first = Block().state_dict()
    mt.manual_seed(7)
    again = Block().state_dict()
    mt.manual_seed(8)
    other = Block().state_dict()
    for name in first:
        assert np.array_equal(first[name], again[name])
    assert not np.array_equal(first["layers.0.weight"], other["layers.0.weight"])


def test_linear_is_xavier_uniform_with_zero_bias():
    layer = nn.Linear(300, 200)
    limit = np.sqrt(6 / (300 + 200))
    weight = layer.weight.data
    assert weight.shape == (300, 200) and weight.dtype == np.float32
    assert np.abs(weight).max() <= limit and np.abs(weight).max() > 0.99 * limit
    assert weight.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)  # uniform's std
    assert abs(weight.mean()) < 0.01 * limit
    assert np.array_equal(layer.bias.data, np.zeros(200, np.float32))


def test_embedding_is_standard_normal():
    weight = nn.Embedding(1000, 64).weight.data
    assert weight.dtype == np.float32
    assert weight.std() == pytest.approx(1.0, rel=0.02) and abs(weight.mean()) < 0.02
    assert nn.Embedding(1000, 64, std=0.02).weight.data.std() == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(-1, 3), "Linear: in_features must be a positive integer, got -1"),
    (lambda: nn.Linear(2, 0), "Linear: out_features must be a positive integer, got 0"),
    (lambda: nn.Linear(2.5, 3), "Linear: in_features must be a positive integer, got 2.5"),
    (lambda: nn.Embedding(0, 4), "Embedding: num_embeddings must be a positive integer"),
    (lambda: nn.Embedding(4, -8), "Embedding: dim must be a positive integer, got -8"),
    (lambda: nn.LayerNorm(-2), "LayerNorm: dim must be a positive integer, got -2"),
    (lambda: nn.Dropout(1.0), r"Dropout: p must be in \[0, 1\), got 1.0"),
    (lambda: nn.Dropout(-0.1), r"Dropout: p must be in \[0, 1\)"),
])
def test_bad_sizes_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------------- state_dict
def test_state_dict_is_a_copy():
    layer = nn.Linear(2, 3)
    state = layer.state_dict()
    state["weight"][:] = 100
    assert not np.any(layer.weight.data == 100)
    layer.weight.data += 1  # later training does not reach a state_dict already taken
    assert np.all(state["weight"] == 100)


def test_load_state_dict_round_trips_in_place():
    mt.manual_seed(0)
    source = Block()
    mt.manual_seed(1)
    target = Block()
    arrays = [p.data for p in target.parameters()]
    x = mt.randn(5, 4)
    assert not np.allclose(source(x).data, target(x).data)
    assert target.load_state_dict(source.state_dict()) == ([], [])
    np.testing.assert_array_equal(source(x).data, target(x).data)
    # In place: an optimizer holding the arrays keeps working on the loaded values.
    assert all(p.data is a for p, a in zip(target.parameters(), arrays))


def test_load_state_dict_casts_float64_to_the_parameter_dtype():
    layer = nn.Linear(2, 2)
    state = {name: value.astype(np.float64) + 1 for name, value in layer.state_dict().items()}
    layer.load_state_dict(state)
    assert layer.weight.dtype == np.float32
    np.testing.assert_allclose(layer.weight.data, state["weight"], rtol=1e-6)


def test_load_state_dict_lists_every_problem_in_one_error():
    block = Block()
    state = block.state_dict()
    del state["norm.bias"], state["layers.0.bias"]
    state["layers.2.weight"] = np.zeros((4, 4))
    state["layers.0.weight"] = np.zeros((8, 4))
    state["scale"] = np.zeros(3)
    state["norm.weight"] = {"nested": 1}
    before = [p.data.copy() for p in block.parameters()]
    with pytest.raises(ValueError) as error:
        block.load_state_dict(state)
    message = str(error.value)
    for part in ["Block.load_state_dict: 6 problem(s), nothing was loaded",
                 "missing: norm.bias", "missing: layers.0.bias",
                 "unexpected: layers.2.weight",
                 "layers.0.weight: checkpoint has shape (8, 4), model has (4, 8)",
                 "scale: checkpoint has shape (3,), model has (1,)",
                 "norm.weight: expected an array, got dict", "strict=False"]:
        assert part in message
    assert all(np.array_equal(p.data, b) for p, b in zip(block.parameters(), before))


def test_non_strict_load_skips_missing_and_unexpected_but_not_mis_shaped():
    block = Block()
    state = {"norm.weight": np.full(4, 2.0, np.float32), "extra": np.ones(2)}
    result = block.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ["extra"] and "norm.bias" in result.missing_keys
    assert np.all(block.norm.weight.data == 2)
    with pytest.raises(ValueError, match="(?s)1 problem.*norm.weight: checkpoint has shape "
                       r"\(5,\), model has \(4,\)"):
        block.load_state_dict({"norm.weight": np.ones(5)}, strict=False)


def test_load_state_dict_refuses_non_dicts():
    with pytest.raises(TypeError, match="Linear.load_state_dict: expected a dict of name "
                       "-> array, got list"):
        nn.Linear(2, 2).load_state_dict([np.ones((2, 2))])


# ---------------------------------------------------------------------- save / load
def test_save_and_load(tmp_path):
    mt.manual_seed(0)
    model = Block()
    model.save(tmp_path / "block.npz")
    mt.manual_seed(1)
    fresh = Block()
    assert fresh.load(tmp_path / "block.npz") is fresh
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert np.array_equal(a.data, b.data) and b.dtype == np.float32
    assert os.listdir(tmp_path) == ["block.npz"]


def test_load_into_a_model_of_another_shape_names_the_file(tmp_path):
    nn.Linear(3, 2).save(tmp_path / "small.npz")
    with pytest.raises(ValueError, match=r"(?s)Linear.load: '.*small.npz' does not fit "
                       r"this model: 1 problem.*weight: checkpoint has shape \(3, 2\), model has \(4, 2\)"):
        nn.Linear(4, 2).load(tmp_path / "small.npz")
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        nn.Linear(4, 2).load(tmp_path / "absent.npz")
    mt.save({"model": nn.Linear(4, 2).state_dict(), "step": 3}, tmp_path / "run.npz")
    with pytest.raises(ValueError, match=r"(?s)unexpected: step.*a training checkpoint: "
                       r"use model.load_state_dict\(mt.load\(path\)\['model'\]\)"):
        nn.Linear(4, 2).load(tmp_path / "run.npz")


# ---------------------------------------------------------------------- repr
def test_repr_shows_the_tree_with_shapes_and_counts():
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2, bias=False))
    assert repr(model) == (
        "Sequential  [80 params]\n"
        "  (0): Linear(2, 16, bias=True)  weight (2, 16), bias (16,)  [48 params]\n"
        "  (1): ReLU()\n"
        "  (2): Linear(16, 2, bias=False)  weight (16, 2)  [32 params]")
    text = repr(Block())
    assert text.splitlines()[0] == f"Block  scale (1,)  [{Block().num_parameters()} params]"
    assert "    (1): Linear(8, 4, bias=False)  weight (8, 4)  [32 params]" in text
    assert "  (norm): LayerNorm(4)  weight (4,), bias (4,)  [8 params]" in text
    big = nn.Linear(1000, 1000)
    assert repr(big).endswith("[1,001,000 params]")



def test_dropout_drops_while_training_and_is_the_identity_otherwise():
    mt.manual_seed(0)
    x = mt.ones(200, 50, requires_grad=True)
    drop = nn.Dropout(0.5)
    y = drop(x)
    kept = y.data != 0
    assert y.op.name == "dropout" and 0.4 < kept.mean() < 0.6
    np.testing.assert_array_equal(y.data[kept], 2.0)          # survivors scaled by 1/(1-p)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.where(kept, 2.0, 0.0))
    # Nothing to drop: the input itself comes back, so graphs get no identity node.
    assert drop.eval()(x) is x
    assert nn.Dropout(0.0)(x) is x


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7, 0.9])
@pytest.mark.parametrize("drop", [lambda x, p: F.dropout(x, p=p, training=True),
                                  lambda x, p: nn.Dropout(p)(x)], ids=["F.dropout", "Dropout"])
def test_dropout_keeps_the_mean_and_zeros_a_fraction_p(drop, p):
    n = 200_000
    mt.manual_seed(1)
    x = mt.tensor(np.random.default_rng(2).uniform(0.5, 1.5, n))
    y = drop(x, p).data
    dropped = y == 0
    # Each y_i is x_i / (1 - p) with probability 1 - p, else 0: mean x_i, variance
    # x_i^2 p / (1 - p). Six standard errors of the mean (and of the zero fraction, whose
    # variance is p (1 - p) / n) are missed by chance about once in 10^9 runs.
    mean_error = np.sqrt((x.data ** 2).sum() * p / (1 - p)) / n
    assert abs(y.mean() - x.data.mean()) < 6 * mean_error
    assert abs(dropped.mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[~dropped], x.data[~dropped] / (1 - p), rtol=1e-6)


def test_skip_init_builds_zeros_without_drawing_and_only_on_its_thread():
    import threading
    state = mt.generator().bit_generator.state
    with nn.skip_init():
        layer, table = nn.Linear(3, 4), nn.Embedding(5, 2)
        assert mt.generator().bit_generator.state == state      # nothing was drawn
        other = {}
        thread = threading.Thread(target=lambda: other.setdefault("layer", nn.Linear(3, 4)))
        thread.start()
        thread.join()
    assert not layer.weight.data.any() and not table.weight.data.any()
    assert layer.weight.dtype == table.weight.dtype == np.float32
    assert other["layer"].weight.data.any()                     # the other thread drew
    assert nn.Linear(3, 4).weight.data.any()                    # and so does this one after


def test_from_pretrained_draws_no_initial_weights(tmp_path):
    from transformer import DecoderLM, LMConfig
    mt.manual_seed(0)
    model = DecoderLM(LMConfig.gpt2(vocab=16, d_model=8, n_heads=2, n_layers=1, d_ff=16,
                                    max_len=8))
    model.save_pretrained(tmp_path / "lm")
    state = mt.generator().bit_generator.state
    loaded = DecoderLM.from_pretrained(tmp_path / "lm")
    assert mt.generator().bit_generator.state == state
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(loaded(ids).data, model.eval()(ids).data)
