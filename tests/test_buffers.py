"""Module.register_buffer: state that is saved and restored with the model but never
learned (never a parameter, never seen by an optimizer)."""
import numpy as np
import pytest

import microtensor as mt
from microtensor import nn, optim


class RunningMean(nn.Module):
    """A Linear layer that also counts the batches it saw and tracks their mean input."""

    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, 2)
        self.register_buffer("mean", mt.zeros(dim))
        self.register_buffer("batches", mt.zeros((), dtype=np.int64))
        self.register_buffer("scratch", np.ones(dim, np.float32), persistent=False)

    def forward(self, x):
        with mt.no_grad():
            self.mean = self.mean * 0.9 + x.mean(axis=0) * 0.1   # assignment replaces it
            self.batches = self.batches + 1
        return self.linear(x - self.mean)


def test_buffers_are_saved_and_restored_but_never_parameters(tmp_path):
    model = nn.Sequential(RunningMean(3), nn.ReLU())
    assert [name for name, _ in model.named_parameters()] == ["0.linear.weight",
                                                             "0.linear.bias"]
    assert [name for name, _ in model.named_buffers()] == ["0.mean", "0.batches", "0.scratch"]
    opt = optim.SGD(model.parameters(), lr=0.1)
    assert all(not any(p is b for b in model.buffers()) for p in opt.params)
    for _ in range(3):
        opt.zero_grad()
        model(mt.randn(4, 3) + 2).sum().backward()
        opt.step()
    layer = model[0]
    assert int(layer.batches.item()) == 3 and not layer.mean.requires_grad
    state = model.state_dict()
    assert list(state) == ["0.linear.weight", "0.linear.bias", "0.mean", "0.batches"]
    assert "0.scratch" not in state                                   # persistent=False
    model.save(tmp_path / "model.npz")
    fresh = nn.Sequential(RunningMean(3), nn.ReLU()).load(tmp_path / "model.npz")
    np.testing.assert_array_equal(fresh[0].mean.data, layer.mean.data)
    assert fresh[0].batches.item() == 3 and fresh[0].batches.dtype == np.int64
    x = mt.randn(2, 3)
    with mt.no_grad():
        np.testing.assert_array_equal(fresh(x).data, model(x).data)


def test_a_missing_buffer_is_reported_like_a_missing_parameter():
    model = RunningMean(2)
    state = model.state_dict()
    del state["batches"]
    with pytest.raises(ValueError, match=r"(?s)1 problem\(s\), nothing was loaded.*missing: batches"):
        model.load_state_dict(state)
    assert model.load_state_dict(state, strict=False).missing_keys == ["batches"]
    state["mean"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"mean: checkpoint has shape \(5,\), model has \(2,\)"):
        model.load_state_dict(state, strict=False)


def test_register_buffer_refuses_what_is_not_a_buffer():
    module = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"Linear.register_buffer: 'weight' is already a "
                                         r"parameter"):
        module.register_buffer("weight", mt.zeros(2))
    with pytest.raises(TypeError, match=r"'table' is a Parameter; a buffer is state that is "
                                        r"not learned"):
        module.register_buffer("table", nn.Parameter(np.zeros(2)))
    with pytest.raises(TypeError, match=r"buffer 'table' requires grad"):
        module.register_buffer("table", mt.zeros(2, requires_grad=True))
    with pytest.raises(TypeError, match=r"buffer 'table' must be a Tensor, an array or None"):
        module.register_buffer("table", [1, 2])
    module.register_buffer("table", None)          # allowed, and not in the state dict
    assert "table" not in module.state_dict() and module.table is None
    module.table = np.arange(3.0)                  # assignment fills it
    assert isinstance(module.table, mt.Tensor) and "table" in module.state_dict()
    module.table = nn.Parameter(np.zeros(3))       # a Parameter takes the name over
    assert "table" in dict(module.named_parameters()) and not list(module.named_buffers())
